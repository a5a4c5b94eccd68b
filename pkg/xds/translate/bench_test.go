package translate

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// BenchmarkBuild1000Services translates a mesh of 1000 services (3
// endpoints each, a DestinationRule with two subsets and a VirtualService
// for every tenth) for one sidecar.
func BenchmarkBuild1000Services(b *testing.B) {
	in, p := bench1000(b)
	b.ReportAllocs()
	b.ResetTimer()
	var out *Output
	var err error
	for b.Loop() {
		out, err = Build(in, p)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(out.Clusters) < 1200 {
		b.Fatalf("got %d clusters", len(out.Clusters))
	}
}

// BenchmarkBuildEnvoyFilters measures what EnvoyFilter patches cost a
// build of the 1000-service mesh: builds without and with four patches
// that touch every outbound cluster (CLUSTER MERGE), route (HTTP_ROUTE
// MERGE), virtual host (VIRTUAL_HOST MERGE) and HCM (HTTP_FILTER
// INSERT_BEFORE), alternating, and reports both and their ratio.
func BenchmarkBuildEnvoyFilters(b *testing.B) {
	in, p := bench1000(b)
	efs, err := config.Decode("ef.yaml", []byte(`apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: bench, namespace: istio-system}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {connect_timeout: 2s}}
  - applyTo: HTTP_ROUTE
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {route: {timeout: 3s}}}
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {request_headers_to_add: [{header: {key: x-bench, value: "1"}}]}}
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND, listener: {filterChain: {filter: {subFilter: {name: envoy.filters.http.router}}}}}
    patch: {operation: INSERT_BEFORE, value: {name: envoy.filters.http.fault, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault}}}
`))
	if err != nil {
		b.Fatal(err)
	}
	withEF := *in
	withEF.Configs = append(slices.Clone(in.Configs), efs...)
	var none, patched time.Duration
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if _, err := Build(in, p); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		out, err := Build(&withEF, p)
		if err != nil {
			b.Fatal(err)
		}
		patched += time.Since(t1)
		none += t1.Sub(t0)
		n++
		if len(out.Warnings) != 0 {
			b.Fatalf("warnings: %v", out.Warnings)
		}
	}
	b.ReportMetric(float64(none.Milliseconds())/float64(n), "ms/build-none")
	b.ReportMetric(float64(patched.Milliseconds())/float64(n), "ms/build-patched")
	b.ReportMetric(float64(patched)/float64(none), "patched/none")
}

// BenchmarkCacheDeployments translates the 1000-service mesh for the
// sidecars of 50 deployments of one namespace (different labels, app
// ports, workloads), first with Build for each (the baseline), then
// through one Cache, as a push does, and reports both and their ratio.
func BenchmarkCacheDeployments(b *testing.B) {
	in, p := bench1000(b)
	var proxies []*model.Proxy
	for d := range 50 {
		q := *p
		q.ID = fmt.Sprintf("sidecar~10.9.0.%d~app%d-1.%s~%s.svc.cluster.local", d, d, p.Namespace, p.Namespace)
		q.Workload = fmt.Sprintf("app%d", d)
		q.Labels = map[string]string{"app": q.Workload, "version": "v1"}
		q.AppPorts = []uint32{uint32(9000 + d)}
		proxies = append(proxies, &q)
	}
	var build, cached time.Duration
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		for _, q := range proxies {
			if _, err := Build(in, q); err != nil {
				b.Fatal(err)
			}
		}
		t1 := time.Now()
		c := NewCache(in)
		for _, q := range proxies {
			if _, err := c.Build(q); err != nil {
				b.Fatal(err)
			}
		}
		cached += time.Since(t1)
		build += t1.Sub(t0)
		n++
	}
	b.ReportMetric(float64(build.Milliseconds())/float64(n), "ms/50-Build")
	b.ReportMetric(float64(cached.Milliseconds())/float64(n), "ms/50-Cache.Build")
	b.ReportMetric(float64(build)/float64(cached), "Build/Cache")
}

// bench1000 is the 1000-service mesh of BenchmarkBuild1000Services and
// the sidecar translated.
func bench1000(b *testing.B) (*Input, *model.Proxy) {
	b.Helper()
	var y strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&y, `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc%d, namespace: ns%d}
spec:
  hosts: [svc%d.ns%d.svc.cluster.local]
  resolution: STATIC
  ports: [{number: %d, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.%d.%d.1, labels: {version: v1}, locality: r1/z1}
  - {address: 10.%d.%d.2, labels: {version: v2}, locality: r1/z2}
  - {address: 10.%d.%d.3, labels: {version: v2}}
`, i, i%20, i, i%20, 8000+i%50, i/250, i%250, i/250, i%250, i/250, i%250)
		if i%10 == 0 {
			fmt.Fprintf(&y, `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc%d, namespace: ns%d}
spec:
  host: svc%d
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc%d, namespace: ns%d}
spec:
  hosts: [svc%d]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: svc%d, subset: v2}}]
  - route:
    - {destination: {host: svc%d, subset: v1}, weight: 90}
    - {destination: {host: svc%d, subset: v2}, weight: 10}
`, i, i%20, i, i, i%20, i, i, i, i)
		}
	}
	rs, err := config.Decode("bench.yaml", []byte(y.String()))
	if err != nil {
		b.Fatal(err)
	}
	reg := registry.New(nil)
	reg.SetConfigs(rs)
	in := &Input{Configs: rs, Registry: reg.Snapshot()}
	p, _ := model.ParseNodeID("sidecar~10.9.9.9~client.ns0~ns0.svc.cluster.local")
	return in, p
}
