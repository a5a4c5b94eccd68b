// Package translate turns Istio configuration plus a registry snapshot into
// the Envoy v3 resources one proxy needs. It is pure: no I/O, no clocks, and
// its output order is deterministic (docs/xds-conventions.md describes the
// names and the subset the Weft proxy executes).
package translate

import (
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// Input is everything translation reads. It must not be modified while
// Build runs; Build never modifies it and may be called concurrently.
type Input struct {
	// Configs is every Istio resource in the store.
	Configs []*config.Resource
	// Registry is the service registry snapshot (nil: no services).
	Registry *registry.Snapshot
	// DomainSuffix is the cluster DNS suffix (default "cluster.local").
	DomainSuffix string
	// RootNamespace holds mesh-wide Sidecar defaults (default
	// "weft-system"; "istio-system" is accepted as a root too).
	RootNamespace string
	// Credentials looks up a gateway TLS credentialName; nil means none.
	Credentials func(name string) (certPEM, keyPEM []byte, ok bool)
}

// Output is the resources for one proxy, each list sorted by name.
type Output struct {
	Listeners, Routes, Clusters, Endpoints, Secrets []types.Resource
}

// Build translates in for proxy p.
func Build(in *Input, p *model.Proxy) (*Output, error) {
	return &Output{}, nil
}
