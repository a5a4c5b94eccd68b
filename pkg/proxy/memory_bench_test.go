package proxy_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// BenchmarkConfigHeapPerService reports what a proxy's heap holds per
// configured service (an EDS cluster with one endpoint and a virtual host
// on the port-80 route table): the live heap with N services minus with
// one, each measured as the heap with the proxy running minus after it
// stopped (the in-process control plane's snapshot stays in both), and the
// xDS wire size per service for comparison.
func BenchmarkConfigHeapPerService(b *testing.B) {
	const n = 100
	cp := xdstest.Start(b)
	be := startBackend(b, "v1", nil)
	resources := func(services int) (*xdstest.Resources, int) {
		res := &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(80)}}
		rc := xdstest.RouteConfig(80, "svc0")
		rc.VirtualHosts = nil
		wire := 0
		for i := range services {
			name := fmt.Sprintf("outbound|80||svc%d.bench.svc.cluster.local", i)
			c, e := xdstest.EDSCluster(name), xdstest.Endpoints(name, fmt.Sprintf("svc%d-v1", i), be.addr)
			vh := xdstest.RouteConfig(80, fmt.Sprintf("svc%d.bench.svc.cluster.local", i), xdstest.ToCluster("default", name)).VirtualHosts[0]
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
			res.Clusters = append(res.Clusters, c)
			res.Endpoints = append(res.Endpoints, e)
			wire += proto.Size(c) + proto.Size(e) + proto.Size(vh)
		}
		res.Routes = []types.Resource{rc}
		return res, wire
	}
	liveHeap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	footprint := func(services int) int64 {
		res, _ := resources(services)
		cp.Set(b, nodeID, res)
		ctx, cancel := context.WithCancel(context.Background())
		p, err := proxy.New(proxy.Options{ControlPlane: cp.Addr, Namespace: ns, Workload: workload,
			OutboundAddress: "127.0.0.1:0", InboundAddress: "127.0.0.1:0", DrainTimeout: time.Second,
			BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if rt := p.Runtime(); rt != nil && len(rt.Clusters.Clusters) >= services {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("proxy has not applied %d services", services)
			}
			time.Sleep(10 * time.Millisecond)
		}
		with := liveHeap()
		cancel()
		<-done
		without := liveHeap()
		return int64(with) - int64(without)
	}
	var one, many int64
	for b.Loop() {
		one = footprint(1)
		many = footprint(n)
	}
	_, wire := resources(n)
	b.ReportMetric(float64(one), "heap-bytes/proxy-1-service")
	b.ReportMetric(float64(many-one)/(n-1), "heap-bytes/service")
	b.ReportMetric(float64(wire)/n, "xds-wire-bytes/service")
}
