package translate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// BenchmarkBuild1000Services translates a mesh of 1000 services (3
// endpoints each, a DestinationRule with two subsets and a VirtualService
// for every tenth) for one sidecar.
func BenchmarkBuild1000Services(b *testing.B) {
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
	b.ReportAllocs()
	b.ResetTimer()
	var out *Output
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
