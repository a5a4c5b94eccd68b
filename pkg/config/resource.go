package config

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
)

// DefaultNamespace is used when a resource's metadata names no namespace.
const DefaultNamespace = "default"

// Meta is the Kubernetes-style object metadata Weft keeps for every resource.
type Meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// ResourceVersion is assigned by the store on every write (a decimal
	// store revision). On apply, a non-empty value is a precondition: the
	// write fails with a conflict unless it equals the stored one.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation counts spec changes, starting at 1.
	Generation        int64     `json:"generation,omitempty"`
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
}

// Resource is one Istio configuration object.
type Resource struct {
	// APIVersion is "group/version" as the user wrote it (any served version).
	APIVersion string
	Kind       string
	Meta       Meta
	// Spec is the istio.io/api message for Kind (see Schema.NewSpec).
	Spec proto.Message
	// Source says where the resource came from, for error messages
	// ("routes.yaml:14"); empty once stored.
	Source Source
}

// Source locates a document in its input.
type Source struct {
	File string // file name as given, "-" for stdin
	Line int    // 1-based line of the document's first line
	// Lines maps field paths of the document to their lines; nil when the
	// resource was not decoded from text. It is shared, read-only data.
	Lines *LineIndex `json:"-"`
}

// LineIndex maps field paths ("spec.http[0].route[1].weight",
// "metadata.labels[app]") to the 1-based line where the field is written.
// It is immutable after Decode builds it and safe for concurrent reads.
type LineIndex struct {
	lines map[string]int
}

// Line returns the line of path, or of its nearest written ancestor, or 0.
func (ix *LineIndex) Line(path string) int {
	if ix == nil {
		return 0
	}
	for path != "" {
		if l, ok := ix.lines[path]; ok {
			return l
		}
		path = ParentPath(path)
	}
	return 0
}

// ParentPath strips the last element of a field path: "a.b[2]" -> "a.b",
// "a.b" -> "a", "a" -> "".
func ParentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndex(path, "["); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i]
	}
	return ""
}

// LineOf returns the line of the field at path (or its nearest ancestor), or
// the document's line when the index does not know it.
func (s Source) LineOf(path string) int {
	if l := s.Lines.Line(path); l > 0 {
		return l
	}
	return s.Line
}

func (s Source) String() string {
	switch {
	case s.File == "" && s.Line == 0:
		return ""
	case s.Line == 0:
		return s.File
	default:
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	}
}

// Key identifies a resource within a store: kind, namespace and name.
type Key struct {
	Kind      string
	Namespace string
	Name      string
}

// FieldError returns a problem with the field at path, located at that
// field's line when the resource was decoded from text.
func (r *Resource) FieldError(path string, warning bool, format string, args ...any) *FieldError {
	src := Source{File: r.Source.File, Line: r.Source.LineOf(path)}
	name := ""
	if r.Meta.Name != "" {
		name = r.Meta.Namespace + "/" + r.Meta.Name
	}
	kind := r.Kind
	if s, ok := SchemaForKind(r.Kind); ok {
		kind = s.DisplayKind()
	}
	return &FieldError{Source: src, Kind: kind, Name: name, Path: path, Msg: fmt.Sprintf(format, args...), Warning: warning}
}

func (k Key) String() string { return k.Kind + " " + k.Namespace + "/" + k.Name }

// Key returns the resource's identity.
func (r *Resource) Key() Key {
	return Key{Kind: r.Kind, Namespace: r.Meta.Namespace, Name: r.Meta.Name}
}

// DeepCopy returns a copy that shares nothing mutable with r.
func (r *Resource) DeepCopy() *Resource {
	c := *r
	c.Meta.Labels = copyMap(r.Meta.Labels)
	c.Meta.Annotations = copyMap(r.Meta.Annotations)
	if r.Spec != nil {
		c.Spec = proto.Clone(r.Spec)
	}
	return &c
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
