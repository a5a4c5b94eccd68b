package install

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSet applies one --set argument to vals, Helm style: "a.b=v" pairs
// separated by commas, list values as "{x,y}", list elements as
// "a[0]=v"; "true"/"false" become booleans, integers int64, "null"
// removes the key from the chart defaults (see Merge), everything else is
// a string.
func ParseSet(vals map[string]any, arg string) error {
	for _, pair := range splitPairs(arg) {
		key, val, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return fmt.Errorf("--set %q: want key=value", pair)
		}
		var v any
		if strings.HasPrefix(val, "{") && strings.HasSuffix(val, "}") {
			var list []any
			for _, e := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(val, "{"), "}"), ",") {
				if e != "" {
					list = append(list, typed(e))
				}
			}
			v = list
		} else {
			v = typed(val)
		}
		if err := setPath(vals, strings.Split(key, "."), v); err != nil {
			return fmt.Errorf("--set %s: %w", key, err)
		}
	}
	return nil
}

// splitPairs splits on commas outside {...}.
func splitPairs(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '{':
			depth++
		case '}':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func typed(s string) any {
	switch s {
	case "true":
		return true
	case "false":
		return false
	case "null":
		return nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && (s == "0" || !strings.HasPrefix(s, "0")) {
		return n
	}
	return s
}

func setPath(m map[string]any, keys []string, v any) error {
	k := keys[0]
	idx := -1
	if i := strings.IndexByte(k, '['); i > 0 && strings.HasSuffix(k, "]") {
		n, err := strconv.Atoi(k[i+1 : len(k)-1])
		if err != nil || n < 0 || n > 1000 {
			return fmt.Errorf("bad list index in %q", k)
		}
		k, idx = k[:i], n
	}
	last := len(keys) == 1
	if idx < 0 {
		if last {
			m[k] = v // nil: Merge deletes the default
			return nil
		}
		sub, ok := m[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[k] = sub
		}
		return setPath(sub, keys[1:], v)
	}
	list, _ := m[k].([]any)
	for len(list) <= idx {
		list = append(list, nil)
	}
	if last {
		list[idx] = v
	} else {
		sub, ok := list[idx].(map[string]any)
		if !ok {
			sub = map[string]any{}
			list[idx] = sub
		}
		if err := setPath(sub, keys[1:], v); err != nil {
			return err
		}
	}
	m[k] = list
	return nil
}

// Options select the values of an installation.
type Options struct {
	// Files are -f values files (name and content), applied in order.
	Files []NamedValues
	// Sets are --set arguments, applied last; "profile=NAME" picks the
	// chart's profiles/NAME.yaml (default "default") as the base layer.
	Sets []string
}

// NamedValues is a values file's name (for errors) and content.
type NamedValues struct {
	Name string
	Data []byte
}

// Values layers the chart defaults, the profile, the files and the --set
// values, in that order, into the values to render the chart with.
func (c *Chart) Values(o Options) (map[string]any, error) {
	sets := map[string]any{}
	for _, s := range o.Sets {
		if err := ParseSet(sets, s); err != nil {
			return nil, err
		}
	}
	files := make([]map[string]any, len(o.Files))
	profile := "default"
	for i, f := range o.Files {
		v, err := parseValues(f.Name, f.Data)
		if err != nil {
			return nil, err
		}
		files[i] = v
		if p, ok := v["profile"].(string); ok && p != "" {
			profile = p
		}
	}
	if p, ok := sets["profile"].(string); ok && p != "" {
		profile = p
	}
	prof, err := c.Profile(profile)
	if err != nil {
		return nil, err
	}
	vals := Merge(deepCopy(c.Defaults), prof)
	for _, f := range files {
		vals = Merge(vals, f)
	}
	return Merge(vals, sets), nil
}
