package registry

import (
	"fmt"
	"testing"
)

// BenchmarkUpdateSourceOneService measures one incremental Kubernetes
// update (one service's endpoints change) in a registry holding n services
// of 10 endpoints each: the registry rebuilds its snapshot per batch.
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
			}
		})
	}
}
