package sds_test

import (
	"context"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/pkg/proxy/sds"
)

// BenchmarkRotationPush: one op is a Cache.Set (a rotation) until every
// one of 100 SotW streams on the Unix socket received default+ROOTCA. The
// baseline, measured first in the same run, is the same with one stream;
// x_vs_1stream is the ratio, ns/stream the cost per connected client.
func BenchmarkRotationPush(b *testing.B) {
	m := startMesh(b, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bundles [2]*caclient.Bundle
	for i := range bundles {
		bn, err := caclient.Fetch(ctx, m.cfg)
		if err != nil {
			b.Fatal(err)
		}
		bundles[i] = bn
	}
	if err := m.cache.Set(bundles[0]); err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, 1024)
	open := func(n int) {
		for range n {
			stream, err := m.client.StreamSecrets(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{sds.WorkloadCertSecret, sds.RootCASecret}}); err != nil {
				b.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil { // the current secrets
				b.Fatal(err)
			}
			go func() {
				for {
					if _, err := stream.Recv(); err != nil {
						return
					}
					got <- struct{}{}
				}
			}()
		}
	}
	next := 1
	push := func(streams int) {
		if err := m.cache.Set(bundles[next%2]); err != nil {
			b.Fatal(err)
		}
		next++
		for range streams {
			<-got
		}
	}
	open(1)
	const baseOps = 200
	start := time.Now()
	for range baseOps {
		push(1)
	}
	base := time.Since(start) / baseOps
	open(99)
	b.ResetTimer()
	for b.Loop() {
		push(100)
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(base.Nanoseconds()), "ns/op_1stream")
	b.ReportMetric(float64(per.Nanoseconds())/100, "ns/stream")
	b.ReportMetric(float64(per)/float64(base), "x_vs_1stream")
}
