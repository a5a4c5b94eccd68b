package config

import (
	"fmt"
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
	CreationTimestamp time.Time `json:"creationTimestamp,omitempty"`
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
