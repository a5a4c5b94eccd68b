package config

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"
)

// walker checks a YAML tree against a protobuf message descriptor and turns
// it into protojson-ready values, recording the line of every field path.
type walker struct {
	file    string
	docLine int
	kind    string
	name    string // namespace/name once known
	lines   map[string]int
	errs    ErrorList
	// visits counts nodes walked; aliases can make a small document expand
	// exponentially ("billion laughs"), so the walk stops at maxVisits.
	visits int
}

// maxVisits bounds the nodes walked per document, aliases expanded.
const maxVisits = 1 << 17

// spent counts one node and reports whether the budget is exhausted (once).
func (w *walker) spent(n *yaml.Node, path string) bool {
	w.visits++
	if w.visits == maxVisits+1 {
		w.errorf(n.Line, path, "document too large: more than %d values after expanding aliases", maxVisits)
	}
	return w.visits > maxVisits
}

func (w *walker) errorf(line int, path, format string, args ...any) {
	if line == 0 {
		line = w.docLine
	}
	w.errs = append(w.errs, &FieldError{
		Source: Source{File: w.file, Line: line},
		Kind:   w.kind, Name: w.name, Path: path,
		Msg: fmt.Sprintf(format, args...),
	})
}

// unknown reports an unknown field, suggesting the nearest known one.
func (w *walker) unknown(path string, key *yaml.Node, known []string, typeName string) {
	msg := fmt.Sprintf("unknown field %q", key.Value)
	if typeName != "" {
		msg += " in " + typeName
	}
	if s := suggest(key.Value, known); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	w.errorf(key.Line, path, "%s", msg)
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!int", "!!float":
			return "number " + n.Value
		case "!!bool":
			return "boolean " + n.Value
		}
		return fmt.Sprintf("string %q", n.Value)
	}
	return "unsupported YAML"
}

// str decodes a string scalar (null is "").
func (w *walker) str(path string, n *yaml.Node) string {
	if isNull(n) {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		w.errorf(n.Line, path, "expected a string, got %s", describe(n))
		return ""
	}
	return n.Value
}

func (w *walker) strMap(path string, n *yaml.Node) map[string]string {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		w.errorf(n.Line, path, "expected an object of strings, got %s", describe(n))
		return nil
	}
	m := make(map[string]string, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		p := path + "[" + k.Value + "]"
		w.lines[p] = k.Line
		if v.Kind == yaml.ScalarNode && v.Tag != "!!null" && v.Tag != "!!str" {
			w.errorf(v.Line, p, "expected a string, got %s (quote it: \"%s\")", describe(v), v.Value)
			continue
		}
		m[k.Value] = w.str(p, v)
	}
	return m
}

// message converts a mapping node for message md.
func (w *walker) message(path string, n *yaml.Node, md protoreflect.MessageDescriptor) any {
	n = deref(n)
	if isNull(n) || w.spent(n, path) {
		return nil
	}
	if v, ok := w.wellKnown(path, n, md); ok {
		return v
	}
	if n.Kind != yaml.MappingNode {
		w.errorf(n.Line, path, "expected an object (%s), got %s", md.Name(), describe(n))
		return nil
	}
	out := make(map[string]any, len(n.Content)/2)
	oneofs := map[protoreflect.FullName]string{}
	fields := md.Fields()
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		fd := fields.ByJSONName(k.Value)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k.Value))
		}
		if fd == nil {
			known := make([]string, 0, fields.Len())
			for j := 0; j < fields.Len(); j++ {
				known = append(known, fields.Get(j).JSONName())
			}
			w.unknown(joinPath(path, k.Value), k, known, string(md.Name()))
			continue
		}
		p := joinPath(path, fd.JSONName())
		w.lines[p] = k.Line
		if _, dup := out[fd.JSONName()]; dup {
			w.errorf(k.Line, p, "field set twice")
			continue
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() && !isNull(v) {
			if prev, ok := oneofs[od.FullName()]; ok {
				w.errorf(k.Line, p, "only one of %q and %q may be set", prev, fd.JSONName())
				continue
			}
			oneofs[od.FullName()] = fd.JSONName()
		}
		if isNull(v) {
			continue
		}
		if js := w.field(p, v, fd); js != nil {
			out[fd.JSONName()] = js
		}
	}
	return out
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (w *walker) field(path string, n *yaml.Node, fd protoreflect.FieldDescriptor) any {
	switch {
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			w.errorf(n.Line, path, "expected an object, got %s", describe(n))
			return nil
		}
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], deref(n.Content[i+1])
			p := path + "[" + k.Value + "]"
			w.lines[p] = k.Line
			if js := w.value(p, v, fd.MapValue()); js != nil {
				out[k.Value] = js
			}
		}
		return out
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			w.errorf(n.Line, path, "expected a list, got %s", describe(n))
			return nil
		}
		out := make([]any, 0, len(n.Content))
		for i, it := range n.Content {
			it = deref(it)
			p := fmt.Sprintf("%s[%d]", path, i)
			w.lines[p] = it.Line
			js := w.value(p, it, fd)
			if js == nil {
				if fd.Kind() == protoreflect.MessageKind {
					js = map[string]any{}
				} else {
					w.errorf(it.Line, p, "list entries may not be null")
					continue
				}
			}
			out = append(out, js)
		}
		return out
	}
	return w.value(path, n, fd)
}

// value converts a singular value (or one list/map entry) of field fd.
func (w *walker) value(path string, n *yaml.Node, fd protoreflect.FieldDescriptor) any {
	n = deref(n)
	if isNull(n) || w.spent(n, path) {
		return nil
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return w.message(path, n, fd.Message())
	case protoreflect.EnumKind:
		return w.enum(path, n, fd.Enum())
	}
	return w.scalar(path, n, fd.Kind())
}

func (w *walker) enum(path string, n *yaml.Node, ed protoreflect.EnumDescriptor) any {
	if n.Kind != yaml.ScalarNode {
		w.errorf(n.Line, path, "expected one of %s, got %s", enumNames(ed), describe(n))
		return nil
	}
	if n.Tag == "!!int" {
		if i, err := strconv.ParseInt(n.Value, 10, 32); err == nil && ed.Values().ByNumber(protoreflect.EnumNumber(i)) != nil {
			return json.Number(strconv.FormatInt(i, 10))
		}
	}
	if ed.Values().ByName(protoreflect.Name(n.Value)) != nil {
		return n.Value
	}
	names := make([]string, 0, ed.Values().Len())
	for i := 0; i < ed.Values().Len(); i++ {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	msg := fmt.Sprintf("unknown value %q (valid: %s)", n.Value, strings.Join(names, ", "))
	if s := suggest(n.Value, names); s != "" {
		msg = fmt.Sprintf("unknown value %q; did you mean %q? (valid: %s)", n.Value, s, strings.Join(names, ", "))
	}
	w.errorf(n.Line, path, "%s", msg)
	return nil
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	names := make([]string, 0, ed.Values().Len())
	for i := 0; i < ed.Values().Len(); i++ {
		names = append(names, string(ed.Values().Get(i).Name()))
	}
	return strings.Join(names, ", ")
}

func (w *walker) scalar(path string, n *yaml.Node, k protoreflect.Kind) any {
	if n.Kind != yaml.ScalarNode {
		w.errorf(n.Line, path, "expected a %s, got %s", kindName(k), describe(n))
		return nil
	}
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind:
		if n.Tag != "!!str" {
			w.errorf(n.Line, path, "expected a string, got %s (quote it: \"%s\")", describe(n), n.Value)
			return nil
		}
		return n.Value
	case protoreflect.BoolKind:
		if n.Tag != "!!bool" {
			w.errorf(n.Line, path, "expected true or false, got %s", describe(n))
			return nil
		}
		return n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if (n.Tag != "!!float" && n.Tag != "!!int" && n.Tag != "!!str") || err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			w.errorf(n.Line, path, "expected a number, got %s", describe(n))
			return nil
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	default: // integers
		bits, signed := 64, true
		switch k {
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			bits = 32
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			bits, signed = 32, false
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			signed = false
		}
		if n.Tag != "!!int" && n.Tag != "!!str" {
			w.errorf(n.Line, path, "expected an integer, got %s", describe(n))
			return nil
		}
		v := strings.ReplaceAll(n.Value, "_", "")
		if signed {
			i, err := strconv.ParseInt(v, 0, bits)
			if err != nil {
				w.errorf(n.Line, path, "expected a %d-bit integer, got %s", bits, describe(n))
				return nil
			}
			return json.Number(strconv.FormatInt(i, 10))
		}
		u, err := strconv.ParseUint(v, 0, bits)
		if err != nil {
			w.errorf(n.Line, path, "expected a non-negative %d-bit integer, got %s", bits, describe(n))
			return nil
		}
		return json.Number(strconv.FormatUint(u, 10))
	}
}

func kindName(k protoreflect.Kind) string {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind:
		return "string"
	case protoreflect.BoolKind:
		return "boolean"
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return "number"
	}
	return "integer"
}

// wellKnown converts google.protobuf types that have a special JSON form.
func (w *walker) wellKnown(path string, n *yaml.Node, md protoreflect.MessageDescriptor) (any, bool) {
	switch md.FullName() {
	case "google.protobuf.Duration":
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			w.errorf(n.Line, path, "expected a duration such as \"5s\" or \"100ms\", got %s", describe(n))
			return nil, true
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			w.errorf(n.Line, path, "invalid duration %q: use a number with a unit (h, m, s, ms, us, ns), e.g. \"1.5s\"", n.Value)
			return nil, true
		}
		return formatDuration(d), true
	case "google.protobuf.Timestamp", "google.protobuf.FieldMask":
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			w.errorf(n.Line, path, "expected a string, got %s", describe(n))
			return nil, true
		}
		return n.Value, true
	case "google.protobuf.Struct":
		if n.Kind != yaml.MappingNode {
			w.errorf(n.Line, path, "expected an object, got %s", describe(n))
			return nil, true
		}
		return w.generic(path, n), true
	case "google.protobuf.ListValue":
		if n.Kind != yaml.SequenceNode {
			w.errorf(n.Line, path, "expected a list, got %s", describe(n))
			return nil, true
		}
		return w.generic(path, n), true
	case "google.protobuf.Value", "google.protobuf.Any":
		return w.generic(path, n), true
	case "google.protobuf.Empty":
		if n.Kind != yaml.MappingNode || len(n.Content) > 0 {
			w.errorf(n.Line, path, "expected {}, got %s", describe(n))
			return nil, true
		}
		return map[string]any{}, true
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
		"google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		return w.scalar(path, n, md.Fields().ByName("value").Kind()), true
	}
	return nil, false
}

// formatDuration renders d in protojson's "<seconds>.<fraction>s" form.
func formatDuration(d time.Duration) string {
	sign := ""
	u := uint64(d)
	if d < 0 {
		sign, u = "-", uint64(-(d+1))+1
	}
	secs, nanos := u/1e9, u%1e9
	if nanos == 0 {
		return fmt.Sprintf("%s%ds", sign, secs)
	}
	frac := strings.TrimRight(fmt.Sprintf("%09d", nanos), "0")
	return fmt.Sprintf("%s%d.%ss", sign, secs, frac)
}

// generic converts any YAML to JSON values (for Struct/Value/Any).
func (w *walker) generic(path string, n *yaml.Node) any {
	n = deref(n)
	if n == nil || w.spent(n, path) {
		return nil
	}
	w.lines[path] = lineOr(w.lines[path], n.Line)
	switch n.Kind {
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := joinPath(path, k.Value)
			w.lines[p] = k.Line
			out[k.Value] = w.generic(p, n.Content[i+1])
		}
		return out
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			out = append(out, w.generic(fmt.Sprintf("%s[%d]", path, i), c))
		}
		return out
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool":
			return strings.EqualFold(n.Value, "true")
		case "!!int", "!!float":
			v := strings.ReplaceAll(n.Value, "_", "")
			if i, err := strconv.ParseInt(v, 0, 64); err == nil {
				return float64(i)
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				return n.Value
			}
			return f
		}
		return n.Value
	}
	return nil
}

func lineOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// suggest returns the candidate closest to s by edit distance (case
// insensitive), if it is close enough to be a plausible typo.
func suggest(s string, candidates []string) string {
	best, bestD := "", math.MaxInt
	ls := strings.ToLower(s)
	sorted := append([]string(nil), candidates...)
	sort.Strings(sorted)
	for _, c := range sorted {
		d := editDistance(ls, strings.ToLower(c))
		if strings.HasPrefix(strings.ToLower(c), ls) || strings.HasPrefix(ls, strings.ToLower(c)) {
			d = min(d, 2)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	limit := max(2, len(s)/3)
	if bestD <= limit && best != "" {
		return best
	}
	return ""
}

// Suggest returns the candidate closest to s, or "" if none is close.
func Suggest(s string, candidates []string) string { return suggest(s, candidates) }

func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
