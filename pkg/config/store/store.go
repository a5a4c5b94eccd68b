// Package store defines how Weft keeps Istio configuration: the Store
// interface, its errors and watch events. Implementations live in
// subpackages: bolt (embedded, default), file (read-only watched folder) and,
// later, kube (CRDs).
package store

import (
	"context"
	"errors"

	"github.com/weftmesh/weft/pkg/config"
)

// Sentinel errors; wrap them with context and test with errors.Is.
var (
	// ErrNotFound: no resource with that kind/namespace/name.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a resourceVersion precondition did not hold (HTTP 409).
	ErrConflict = errors.New("conflict")
	// ErrAlreadyExists: Create of a resource that exists (HTTP 409).
	ErrAlreadyExists = errors.New("already exists")
	// ErrReadOnly: the store does not accept writes (file store).
	ErrReadOnly = errors.New("store is read-only")
	// ErrCompacted: Watch from a revision older than the store still keeps.
	ErrCompacted = errors.New("revision compacted")
)

// EventType says what happened to a resource.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
)

// Event is one change, delivered by Watch in revision order.
type Event struct {
	Type EventType
	// Resource is the new state (for Deleted: the last state, with the
	// deleting revision as its ResourceVersion).
	Resource *config.Resource
	Revision int64
}

// ApplyMode chooses apply semantics.
type ApplyMode int

const (
	// Upsert creates or replaces (kubectl apply). A non-empty
	// Meta.ResourceVersion must match the stored one.
	Upsert ApplyMode = iota
	// CreateOnly fails with ErrAlreadyExists when the resource exists.
	CreateOnly
	// UpdateOnly fails with ErrNotFound when the resource does not exist.
	UpdateOnly
)

// Store keeps Istio resources. All methods must be safe for concurrent use.
// Resources returned are copies the caller owns.
type Store interface {
	// Get returns one resource or an error wrapping ErrNotFound.
	Get(ctx context.Context, key config.Key) (*config.Resource, error)
	// List returns the resources of a kind (all kinds when kind is ""),
	// in one namespace or all when namespace is "", sorted by namespace
	// and name, and the store revision they were read at.
	List(ctx context.Context, kind, namespace string) ([]*config.Resource, int64, error)
	// Apply writes all resources in one transaction: either every one is
	// stored or none is. It returns the stored resources (with their new
	// ResourceVersion, Generation, CreationTimestamp).
	Apply(ctx context.Context, mode ApplyMode, rs []*config.Resource) ([]*config.Resource, error)
	// Delete removes a resource. A non-empty resourceVersion is a
	// precondition (ErrConflict if it does not match).
	Delete(ctx context.Context, key config.Key, resourceVersion string) (*config.Resource, error)
	// Watch streams every change with revision > fromRevision, in order,
	// until ctx ends (then the channel is closed). fromRevision 0 means
	// "from now". A slow reader is never skipped: events queue up for it.
	Watch(ctx context.Context, fromRevision int64) (<-chan Event, error)
	// Revision is the store's latest revision.
	Revision() int64
	// Close releases the store. It is idempotent.
	Close() error
}
