// Package meshconfig loads Istio's MeshConfig (istio.io/api mesh/v1alpha1),
// the mesh-wide settings `weft control-plane --mesh-config FILE` reads:
// root namespace, trust domain, extension providers (tracing, access
// logging, ext_authz) and default providers.
package meshconfig

import (
	"fmt"
	"os"

	"google.golang.org/protobuf/proto"
	meshv1 "istio.io/api/mesh/v1alpha1"

	"github.com/weftmesh/weft/pkg/config"
)

// DefaultRootNamespace is Weft's mesh root namespace; "istio-system" is
// accepted as a root namespace too wherever one is looked up.
const DefaultRootNamespace = "weft-system"

// Default returns the mesh config used when no file is given: root
// namespace weft-system, trust domain cluster.local, tracing enabled with
// Istio's default 1 % sampling (no provider configured, so nothing is
// exported until a Telemetry resource or defaultProviders names one).
func Default() *meshv1.MeshConfig {
	return &meshv1.MeshConfig{
		RootNamespace: DefaultRootNamespace,
		TrustDomain:   "cluster.local",
		EnableTracing: true,
		DefaultConfig: &meshv1.ProxyConfig{
			Tracing: &meshv1.Tracing{Sampling: 1.0},
		},
	}
}

// Parse decodes a MeshConfig YAML/JSON document (the content of Istio's
// `istio` ConfigMap `mesh` key) over Default(): fields set in the document
// replace the defaults. Errors name file, line and field.
func Parse(file string, data []byte) (*meshv1.MeshConfig, error) {
	m := &meshv1.MeshConfig{}
	if err := config.DecodeMessage(file, "MeshConfig", data, m); err != nil {
		return nil, err
	}
	if err := validateProviders(m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := Default()
	proto.Merge(out, m)
	// proto.Merge appends repeated fields and cannot express "unset"; the
	// defaults have no repeated fields, so only the tracing sampling needs
	// care: an explicit tracing block without sampling keeps 1 %.
	if t := out.GetDefaultConfig().GetTracing(); t != nil && t.Sampling == 0 && m.GetDefaultConfig().GetTracing() == nil {
		t.Sampling = 1.0
	}
	return out, nil
}

// Load reads and parses file; an empty path returns Default().
func Load(file string) (*meshv1.MeshConfig, error) {
	if file == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	return Parse(file, data)
}

// Provider returns the extension provider called name, or nil.
func Provider(m *meshv1.MeshConfig, name string) *meshv1.MeshConfig_ExtensionProvider {
	for _, p := range m.GetExtensionProviders() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// RootNamespace returns m's root namespace, DefaultRootNamespace when unset.
func RootNamespace(m *meshv1.MeshConfig) string {
	if ns := m.GetRootNamespace(); ns != "" {
		return ns
	}
	return DefaultRootNamespace
}
