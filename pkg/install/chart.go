// Package install renders Weft's Helm chart (manifests/charts/weft) and
// applies it to a cluster: `weft install`, `weft uninstall` and `weft
// manifest generate`. Rendering follows Helm's template semantics (values
// coalescing, sprig functions, include/tpl/required/toYaml, missing values
// render empty) so the output equals `helm template`'s for the same values,
// which a test checks against the real helm binary.
package install

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"sigs.k8s.io/yaml"
)

// Chart is a loaded chart directory.
type Chart struct {
	Name, Version, AppVersion string
	// Defaults are the chart's values.yaml.
	Defaults map[string]any
	// templates maps "NAME/templates/FILE" to its text.
	templates map[string]string
	// CRDs are the crds/ files, concatenated.
	CRDs []byte
	fsys fs.FS
	dir  string
}

// Load reads the chart in directory dir of fsys.
func Load(fsys fs.FS, dir string) (*Chart, error) {
	meta, err := fs.ReadFile(fsys, path.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	var m struct {
		Name       string `json:"name"`
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(meta, &m); err != nil {
		return nil, fmt.Errorf("chart: Chart.yaml: %w", err)
	}
	c := &Chart{Name: m.Name, Version: m.Version, AppVersion: m.AppVersion, templates: map[string]string{}, fsys: fsys, dir: dir}
	if c.Defaults, err = readValues(fsys, path.Join(dir, "values.yaml")); err != nil {
		return nil, err
	}
	tdir := path.Join(dir, "templates")
	ents, err := fs.ReadDir(fsys, tdir)
	if err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := fs.ReadFile(fsys, path.Join(tdir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		c.templates[c.Name+"/templates/"+e.Name()] = string(b)
	}
	crds, _ := fs.ReadDir(fsys, path.Join(dir, "crds"))
	for _, e := range crds {
		b, err := fs.ReadFile(fsys, path.Join(dir, "crds", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		c.CRDs = append(c.CRDs, b...)
	}
	return c, nil
}

func readValues(fsys fs.FS, file string) (map[string]any, error) {
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	return parseValues(file, b)
}

func parseValues(file string, b []byte) (map[string]any, error) {
	v := map[string]any{}
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("values %s: %w", file, err)
	}
	return v, nil
}

// Profile returns the values of profiles/NAME.yaml; an unknown name is an
// error listing the known ones.
func (c *Chart) Profile(name string) (map[string]any, error) {
	v, err := readValues(c.fsys, path.Join(c.dir, "profiles", name+".yaml"))
	if err == nil {
		return v, nil
	}
	ents, _ := fs.ReadDir(c.fsys, path.Join(c.dir, "profiles"))
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return nil, fmt.Errorf("unknown profile %q (profiles: %s)", name, strings.Join(names, ", "))
}

// Release names an installation.
type Release struct {
	Name, Namespace string
	// Service is .Release.Service ("Helm" under helm; weft uses "weft").
	Service string
}

// Document is one rendered manifest.
type Document struct {
	// Source is the template it came from ("weft/templates/x.yaml").
	Source string
	YAML   string
}

// Render executes every template (files starting with "_" only define
// named templates) with vals (from Values: chart defaults already
// coalesced) and returns the non-empty YAML documents in template name
// order.
func (c *Chart) Render(vals map[string]any, rel Release) ([]Document, error) {
	top := map[string]any{
		"Values":  vals,
		"Release": map[string]any{"Name": rel.Name, "Namespace": rel.Namespace, "Service": rel.Service, "IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Chart":   map[string]any{"Name": c.Name, "Version": c.Version, "AppVersion": c.AppVersion},
	}
	t := template.New(c.Name).Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = func(v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(b), "\n")
	}
	funcs["fromYaml"] = func(s string) map[string]any {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["toJson"] = func(v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		j, err := yaml.YAMLToJSON(b)
		if err != nil {
			return ""
		}
		return string(j)
	}
	funcs["required"] = func(msg string, v any) (any, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["include"] = func(name string, data any) (string, error) {
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, name, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	funcs["tpl"] = func(text string, data any) (string, error) {
		tt, err := t.Clone()
		if err != nil {
			return "", err
		}
		tt, err = tt.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		if err := tt.Execute(&b, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	funcs["lookup"] = func(string, string, string, string) map[string]any { return map[string]any{} }
	t.Funcs(funcs)
	names := make([]string, 0, len(c.templates))
	for n := range c.templates {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, err := t.New(n).Parse(c.templates[n]); err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
	}
	var docs []Document
	for _, n := range names {
		if strings.HasPrefix(path.Base(n), "_") {
			continue
		}
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, n, top); err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		out := strings.ReplaceAll(b.String(), "<no value>", "")
		for _, d := range splitDocs(out) {
			docs = append(docs, Document{Source: n, YAML: d})
		}
	}
	return docs, nil
}

// splitDocs splits a multi-document YAML stream, dropping empty documents.
func splitDocs(s string) []string {
	var out []string
	for _, d := range strings.Split("\n"+s, "\n---") {
		if strings.TrimSpace(stripComments(d)) == "" {
			continue
		}
		out = append(out, strings.TrimLeft(d, "\n")+"\n")
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// Merge coalesces src into dst like Helm: maps merge recursively, other
// values in src replace dst's, and a null in src deletes the key. It
// returns dst.
func Merge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]any)
		dm, dok := dst[k].(map[string]any)
		if sok && dok {
			dst[k] = Merge(dm, sm)
			continue
		}
		dst[k] = deepCopyValue(v)
	}
	return dst
}

func deepCopy(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return deepCopy(x)
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = deepCopyValue(x[i])
		}
		return out
	}
	return v
}
