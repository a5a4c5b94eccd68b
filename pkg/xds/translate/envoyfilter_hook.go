package translate

import (
	"fmt"
	"maps"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
)

// applyEnvoyFilters applies the EnvoyFilters selecting the proxy to the
// generated listeners, routes and clusters (the last step of a build, see
// package envoyfilter). Skipped patches, and what applied patches set that
// weft proxy does not execute (pkg/proxy/executable), are reported in
// Output.Warnings.
func (b *builder) applyEnvoyFilters() {
	if b.p.Type == model.Proxyless {
		return
	}
	efs := envoyfilter.Select(b.in.Configs, b.p, slices.Sorted(maps.Keys(b.root)))
	if len(efs) == 0 {
		return
	}
	t := &envoyfilter.Target{Proxy: b.p, RouteInfo: b.routeInfo,
		Listeners: map[string]*listenerv3.Listener{}, Routes: map[string]*routev3.RouteConfiguration{}, Clusters: map[string]*clusterv3.Cluster{}}
	for n, r := range b.listeners {
		t.Listeners[n] = r.(*listenerv3.Listener)
	}
	for n, r := range b.routes {
		t.Routes[n] = r.(*routev3.RouteConfiguration)
	}
	for n, r := range b.clusters {
		t.Clusters[n] = r.(*clusterv3.Cluster)
	}
	res := envoyfilter.Apply(efs, t)
	b.listeners, b.routes, b.clusters = map[string]validator{}, map[string]validator{}, map[string]validator{}
	for n, r := range t.Listeners {
		b.listeners[n] = r
	}
	for n, r := range t.Routes {
		b.routes[n] = r
	}
	for n, r := range t.Clusters {
		b.clusters[n] = r
	}
	for _, n := range res.RemovedClusters {
		delete(b.endpoints, n)
	}
	for _, m := range res.Messages {
		b.warnings = append(b.warnings, m.String())
	}
	var present map[string]map[string]bool
	for _, a := range res.Applied {
		for _, f := range envoyfilter.NotExecuted(a.Patch) {
			if f.Kind != "" {
				if present == nil {
					present = envoyfilter.FilterNames(t.Listeners)
				}
				if !present[f.Kind][f.Name] {
					continue // a later patch removed or replaced it
				}
			}
			b.warnings = append(b.warnings, fmt.Sprintf("EnvoyFilter %s: %s is not executed by weft proxy (configPatches[%d])", a.Filter, f.Text, a.Index))
		}
	}
}
