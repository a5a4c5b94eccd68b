package registry

import (
	"fmt"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// BenchmarkUpdateSourceOneService measures one incremental Kubernetes
// update (one service's endpoints change) in a registry holding n services
// of 10 endpoints each, and the snapshot rebuild that follows it.
func BenchmarkUpdateSourceOneService(b *testing.B) {
	for _, n := range []int{100, 1000, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			r := New(nil)
			mk := func(i, gen int) SourceService {
				host := fmt.Sprintf("svc-%d.ns.svc.cluster.local", i)
				s := SourceService{Service: &Service{Hostname: host, Namespace: "ns", Resolution: ResolutionStatic,
					Ports: []Port{{Name: "http", Number: 80, Protocol: "HTTP"}}}}
				for e := 0; e < 10; e++ {
					s.Endpoints = append(s.Endpoints, &Endpoint{Hostname: host, Address: fmt.Sprintf("10.%d.%d.%d", i/256%256, i%256, e+gen),
						Namespace: "ns", ServiceAccount: "sa", Labels: map[string]string{"app": "x"}})
				}
				return s
			}
			all := make([]SourceService, n)
			for i := range all {
				all[i] = mk(i, 0)
			}
			r.ReplaceSource("kubernetes", all)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.UpdateSource("kubernetes", []SourceService{mk(i%n, i%2)}, nil)
				_ = r.Snapshot() // the rebuild happens when the snapshot is read
			}
		})
	}
}

// BenchmarkProxiesConnect: sidecars (deployments of 25 pods, each
// deployment selected by one of 1000 ServiceEntries' workloadSelectors)
// register and the snapshot is read every 100 registrations, as a debounced
// push does; the baseline, in the same run, reads it after every
// registration (one rebuild per connecting proxy, as before rebuilds were
// lazy). Both for the first 1000 proxies (the baseline at 5000 takes
// minutes), then the batched way for all 5000.
func BenchmarkProxiesConnect(b *testing.B) {
	var rs []*config.Resource
	for i := range 1000 {
		se := &networking.ServiceEntry{Hosts: []string{fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)}, Resolution: networking.ServiceEntry_STATIC,
			Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}}}
		if i < 200 {
			se.WorkloadSelector = &networking.WorkloadSelector{Labels: map[string]string{"app": fmt.Sprintf("svc-%d", i)}}
		} else {
			se.Endpoints = []*networking.WorkloadEntry{{Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250)}}
		}
		rs = append(rs, &config.Resource{Kind: config.KindServiceEntry, Meta: config.Meta{Name: fmt.Sprintf("svc-%d", i), Namespace: "bench"}, Spec: se})
	}
	proxies := make([]*model.Proxy, 5000)
	for i := range proxies {
		p, err := model.ParseNodeID(fmt.Sprintf("sidecar~10.9.%d.%d~svc-%d-%d.bench~bench.svc.cluster.local", i/250, i%250, i%200, i))
		if err != nil {
			b.Fatal(err)
		}
		p.Labels = map[string]string{"app": fmt.Sprintf("svc-%d", i%200), "version": "v1"}
		proxies[i] = p
	}
	connect := func(n, every int) time.Duration {
		r := New(nil)
		r.SetConfigs(rs)
		start := time.Now()
		for i, p := range proxies[:n] {
			r.UpsertProxy(p)
			if (i+1)%every == 0 {
				_ = r.Snapshot()
			}
		}
		if got, want := len(r.Snapshot().EndpointsOf("svc-0.bench.svc.cluster.local")), n/200; got != want {
			b.Fatalf("svc-0 has %d endpoints, want %d", got, want)
		}
		return time.Since(start)
	}
	for range b.N {
		perProxy, batched := connect(1000, 1), connect(1000, 100)
		all := connect(5000, 100)
		b.ReportMetric(perProxy.Seconds()*1000, "per-proxy-1000-ms")
		b.ReportMetric(batched.Seconds()*1000, "batched-1000-ms")
		b.ReportMetric(perProxy.Seconds()/batched.Seconds(), "per-proxy/batched")
		b.ReportMetric(all.Seconds()*1000, "batched-5000-ms")
	}
}
