package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// FieldError is one problem with one document, located precisely enough to
// fix it: "routes.yaml:14: VirtualService default/reviews: spec.http[0]: msg".
type FieldError struct {
	Source Source // file and line of the offending field (or document)
	Kind   string
	Name   string // namespace/name, when known
	Path   string // field path, e.g. spec.http[0].route[1].weight
	Msg    string
	// Warning marks a problem that does not stop the resource from being stored.
	Warning bool
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if s := e.Source.String(); s != "" {
		b.WriteString(s)
		b.WriteString(": ")
	}
	if e.Kind != "" {
		b.WriteString(e.Kind)
		if e.Name != "" {
			b.WriteString(" " + e.Name)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in an input; it is an error when non-empty.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Errors returns only the entries that are not warnings.
func (l ErrorList) Errors() ErrorList {
	var out ErrorList
	for _, e := range l {
		if !e.Warning {
			out = append(out, e)
		}
	}
	return out
}

// AsErrorList extracts an ErrorList from err, if it holds one.
func AsErrorList(err error) (ErrorList, bool) {
	var l ErrorList
	ok := errors.As(err, &l)
	return l, ok
}

// Decode parses a multi-document YAML or JSON stream (also `kind: List`) into
// resources. It returns every problem found as an ErrorList; on any error no
// resources are returned, so callers never half-apply a file.
func Decode(file string, data []byte) ([]*Resource, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*Resource
	var errs ErrorList
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &FieldError{Source: Source{File: file}, Msg: "invalid YAML: " + err.Error()})
			break
		}
		if len(doc.Content) == 0 {
			continue
		}
		rs, derrs := decodeNode(file, doc.Content[0])
		out = append(out, rs...)
		errs = append(errs, derrs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

func decodeNode(file string, n *yaml.Node) ([]*Resource, ErrorList) {
	src := Source{File: file, Line: n.Line}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, ErrorList{{Source: src, Msg: "document is not a mapping"}}
	}
	var obj map[string]any
	if err := n.Decode(&obj); err != nil {
		return nil, ErrorList{{Source: src, Msg: err.Error()}}
	}
	kind, _ := obj["kind"].(string)
	if kind == "List" {
		items := mapValue(n, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return nil, ErrorList{{Source: src, Kind: "List", Path: "items", Msg: "a List needs an items sequence"}}
		}
		var out []*Resource
		var errs ErrorList
		for _, it := range items.Content {
			rs, e := decodeNode(file, it)
			out = append(out, rs...)
			errs = append(errs, e...)
		}
		return out, errs
	}
	r, err := decodeObject(src, obj)
	if err != nil {
		return nil, ErrorList{err}
	}
	return []*Resource{r}, nil
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func decodeObject(src Source, obj map[string]any) (*Resource, *FieldError) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	if kind == "" {
		return nil, &FieldError{Source: src, Path: "kind", Msg: "missing kind"}
	}
	s, ok := SchemaForKind(kind)
	if !ok {
		return nil, &FieldError{Source: src, Path: "kind", Msg: fmt.Sprintf("unknown kind %q", kind)}
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	if group != s.Group || !s.ServesVersion(version) {
		return nil, &FieldError{Source: src, Kind: kind, Path: "apiVersion",
			Msg: fmt.Sprintf("%s is not served at %q; use one of %s", kind, apiVersion, strings.Join(s.APIVersions(), ", "))}
	}
	r := &Resource{APIVersion: apiVersion, Kind: kind, Source: src}
	if md, ok := obj["metadata"]; ok {
		b, _ := json.Marshal(md)
		if err := json.Unmarshal(b, &r.Meta); err != nil {
			return nil, &FieldError{Source: src, Kind: kind, Path: "metadata", Msg: err.Error()}
		}
	}
	if r.Meta.Name == "" {
		return nil, &FieldError{Source: src, Kind: kind, Path: "metadata.name", Msg: "name is required"}
	}
	if r.Meta.Namespace == "" {
		r.Meta.Namespace = DefaultNamespace
	}
	r.Spec = s.NewSpec()
	if spec, ok := obj["spec"]; ok {
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, &FieldError{Source: src, Kind: kind, Path: "spec", Msg: err.Error()}
		}
		if err := protojson.Unmarshal(b, r.Spec); err != nil {
			return nil, &FieldError{Source: src, Kind: kind, Name: r.Meta.Namespace + "/" + r.Meta.Name, Path: "spec", Msg: err.Error()}
		}
	}
	return r, nil
}

// object is the Kubernetes wire shape of a resource.
type object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Meta            `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// MarshalJSON renders the resource in Kubernetes shape
// ({apiVersion, kind, metadata, spec}) with the spec in protojson form.
func (r *Resource) MarshalJSON() ([]byte, error) {
	spec := []byte("{}")
	if r.Spec != nil {
		var err error
		spec, err = protojson.Marshal(r.Spec)
		if err != nil {
			return nil, fmt.Errorf("marshal %s spec: %w", r.Kind, err)
		}
	}
	return json.Marshal(object{APIVersion: r.APIVersion, Kind: r.Kind, Metadata: r.Meta, Spec: spec})
}

// UnmarshalJSON parses the Kubernetes shape written by MarshalJSON.
func (r *Resource) UnmarshalJSON(b []byte) error {
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return err
	}
	res, ferr := decodeObject(Source{}, obj)
	if ferr != nil {
		return ferr
	}
	*r = *res
	return nil
}

// EncodeYAML renders resources as a multi-document YAML stream.
func EncodeYAML(rs []*Resource) ([]byte, error) {
	var buf bytes.Buffer
	for i, r := range rs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		j, err := r.MarshalJSON()
		if err != nil {
			return nil, err
		}
		var v yaml.Node
		if err := yaml.Unmarshal(j, &v); err != nil {
			return nil, err
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(&v); err != nil {
			return nil, err
		}
		enc.Close()
	}
	return buf.Bytes(), nil
}
