package proxy_test

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// TestSlowStartNewEndpoint is DestinationRule warmup (slow_start_config)
// end to end: a host added to a LEAST_REQUEST cluster by an EDS update
// gets a small share at first (weight × max(10 %, age/window)) and its
// full half after the window.
func TestSlowStartNewEndpoint(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const window = 2500 * time.Millisecond
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	c := m.clusters[cAll]
	c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
		SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(window), MinWeightPercent: &typev3.Percent{Value: 10}},
	}}
	m.eps[cAll] = []string{m.v1.addr}
	cp.Set(t, nodeID, m.resources())
	p := startProxy(t, cp)
	hc := client(p)
	for i := 0; i < 20; i++ {
		if res := get(t, hc, svcURL+"/"); res.status != 200 || res.body != "v1" {
			t.Fatalf("before the update: %d %q", res.status, res.body)
		}
	}

	// v2 joins: it is in slow start from the update on.
	m.eps[cAll] = []string{m.v1.addr, m.v2.addr}
	updated := time.Now()
	cp.Set(t, nodeID, m.resources())
	eventually(t, "the new endpoint to get a request", func() bool { return get(t, hc, svcURL+"/").body == "v2" })
	var early, earlyV2 int
	for start := time.Now(); early < 300 && time.Since(start) < 700*time.Millisecond; early++ {
		if get(t, hc, svcURL+"/").body == "v2" {
			earlyV2++
		}
	}
	earlyAge := time.Since(updated)
	share := float64(earlyV2) / float64(early)
	t.Logf("first %v after the update: new endpoint %d of %d requests (%.0f %%)", earlyAge.Round(time.Millisecond), earlyV2, early, 100*share)
	if early < 30 {
		t.Fatalf("only %d requests in the early phase: too few to measure", early)
	}
	// At most age/window = ~0.3-0.5 of its weight by now (half the share
	// without slow start, 50 %); an unramped host would get 50 %.
	if share > 0.3 {
		t.Fatalf("new endpoint got %.0f %% of requests right after joining, want a slow-start share (< 30 %%)", 100*share)
	}

	// After the window it takes its full share.
	time.Sleep(time.Until(updated.Add(window + 100*time.Millisecond))) // the window is wall-clock time by definition
	var late, lateV2 int
	for ; late < 400; late++ {
		if get(t, hc, svcURL+"/").body == "v2" {
			lateV2++
		}
	}
	lateShare := float64(lateV2) / float64(late)
	t.Logf("after the window: new endpoint %d of %d requests (%.0f %%)", lateV2, late, 100*lateShare)
	if lateShare < 0.35 || lateShare > 0.65 {
		t.Fatalf("new endpoint got %.0f %% of requests after the window, want about 50 %%", 100*lateShare)
	}
}
