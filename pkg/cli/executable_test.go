package cli

import (
	"log/slog"
	"maps"
	"slices"
	"testing"

	"github.com/weftmesh/weft/pkg/proxy/executable"
	"github.com/weftmesh/weft/pkg/proxy/filter/extauthz"
	"github.com/weftmesh/weft/pkg/proxy/filter/jwt"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/proxy/filter/wasm"
)

// The control plane reports EnvoyFilter filters weft proxy does not execute
// from executable.ExtensionHTTPFilters and ExtensionNetworkFilters: they
// must name exactly the factories `weft proxy` registers.
func TestExecutableExtensionFiltersMatchProxyFactories(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	names := slices.Collect(maps.Keys(rbac.Filters(log)))
	names = slices.AppendSeq(names, maps.Keys(jwt.Filters(log)))
	names = slices.AppendSeq(names, maps.Keys(extauthz.Filters(log)))
	names = append(names, wasm.FilterName)
	slices.Sort(names)
	want := slices.Sorted(slices.Values(executable.ExtensionHTTPFilters))
	if !slices.Equal(names, want) {
		t.Errorf("weft proxy registers %v; executable.ExtensionHTTPFilters lists %v", names, want)
	}
	net := slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(rbac.NetworkFilters(log))), slices.Collect(maps.Keys(extauthz.NetworkFilters(log)))...)))
	if want := slices.Sorted(slices.Values(executable.ExtensionNetworkFilters)); !slices.Equal(net, want) {
		t.Errorf("weft proxy registers network filters %v; executable.ExtensionNetworkFilters lists %v", net, want)
	}
}
