package validation

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/weftmesh/weft/pkg/config"
)

// ParseFile decodes every document of one file and validates each resource.
// The list holds errors and warnings, each located at its field's line. If
// any entry is an error, no resources are returned.
// It has the signature of the file store's ParseFunc.
func ParseFile(file string, data []byte) ([]*config.Resource, config.ErrorList) {
	rs, errs := config.DecodeAll(file, data)
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	for _, r := range rs {
		errs = append(errs, Validate(r)...)
	}
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	return rs, errs
}

// ReadSources reads, decodes and validates every input named in paths: a
// file, a directory (searched recursively for *.yaml, *.yml and *.json, in
// lexical order) or "-" for stdin. The same resource (kind, namespace, name)
// defined twice draws a warning; both are returned, in input order, so
// applying them in order leaves the later one (as kubectl apply does). If any entry of the returned list is an error,
// no resources are returned; otherwise the list holds only warnings.
func ReadSources(paths []string, stdin io.Reader) ([]*config.Resource, config.ErrorList) {
	var out []*config.Resource
	var errs config.ErrorList
	seen := map[config.Key]config.Source{}
	parse := func(file string, data []byte) {
		rs, e := ParseFile(file, data)
		errs = append(errs, e...)
		for _, r := range rs {
			k := r.Key()
			if prev, dup := seen[k]; dup {
				errs = append(errs, r.FieldError("metadata.name", true, "also defined at %s; the later definition wins", prev))
			}
			seen[k] = r.Source
			out = append(out, r)
		}
	}
	if len(paths) == 0 {
		errs = append(errs, &config.FieldError{Msg: "no input: give -f FILE, -f DIR or -f -"})
	}
	for _, p := range paths {
		if p == "-" {
			if stdin == nil {
				errs = append(errs, &config.FieldError{Source: config.Source{File: "-"}, Msg: "no standard input"})
				continue
			}
			data, err := io.ReadAll(stdin)
			if err != nil {
				errs = append(errs, &config.FieldError{Source: config.Source{File: "-"}, Msg: fmt.Sprintf("read: %v", err)})
				continue
			}
			parse("-", data)
			continue
		}
		files, err := expand(p)
		if err != nil {
			errs = append(errs, &config.FieldError{Source: config.Source{File: p}, Msg: err.Error()})
			continue
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, &config.FieldError{Source: config.Source{File: f}, Msg: fmt.Sprintf("read: %v", err)})
				continue
			}
			parse(f, data)
		}
	}
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	return out, errs
}

// expand lists the config files a path names.
func expand(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("read input: %w", err)
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != p && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", p, err)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("directory %s holds no *.yaml, *.yml or *.json files", p)
	}
	return files, nil
}
