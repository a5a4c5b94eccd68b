package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func edsName(c *clusterv3.Cluster) string { return c.GetName() }

func ep(addr string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
		Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}}}
}

func cla(name string, prios ...[]string) *endpointv3.ClusterLoadAssignment {
	c := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for p, addrs := range prios {
		le := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}, Priority: uint32(p)}
		for _, a := range addrs {
			le.LbEndpoints = append(le.LbEndpoints, ep(a, 80))
		}
		c.Endpoints = append(c.Endpoints, le)
	}
	return c
}

func eds(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
}

func newTestManager() (*Manager, *fakeClock) {
	fc := &fakeClock{t: time.Unix(1000, 0)}
	return NewManager(nil, fc.Now, rand.New(rand.NewPCG(1, 1))), fc
}

func TestPriorityFailoverAndOutlier(t *testing.T) {
	m, clock := newTestManager()
	c := eds("c")
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(2), BaseEjectionTime: durationpb.New(30 * time.Second),
		MaxEjectionPercent: wrapperspb.UInt32(100)}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1"}, []string{"10.0.0.2"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Clusters["c"]
	h, err := cl.Pick(0)
	if err != nil || h.Addr != "10.0.0.1:80" {
		t.Fatalf("priority 0 first: %v %v", h, err)
	}
	cl.Report(h, 500)
	if cl.Ejected(h) {
		t.Fatal("ejected after one 5xx, threshold is 2")
	}
	cl.Report(h, 503)
	if !cl.Ejected(h) {
		t.Fatal("not ejected after two consecutive 5xx")
	}
	if h2, _ := cl.Pick(0); h2.Addr != "10.0.0.2:80" {
		t.Fatalf("failover to priority 1: got %s", h2.Addr)
	}
	// State survives a config update.
	set2, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1"}, []string{"10.0.0.2"})}, edsName, set)
	if err != nil {
		t.Fatal(err)
	}
	if h3, _ := set2.Clusters["c"].Pick(0); h3.Addr != "10.0.0.2:80" {
		t.Fatalf("ejection lost across update: picked %s", h3.Addr)
	}
	clock.Advance(31 * time.Second)
	if h4, _ := set2.Clusters["c"].Pick(0); h4.Addr != "10.0.0.1:80" {
		t.Fatalf("not restored after base ejection time: %s", h4.Addr)
	}
	// Second ejection lasts twice as long.
	h5, _ := set2.Clusters["c"].Pick(0)
	set2.Clusters["c"].Report(h5, 500)
	set2.Clusters["c"].Report(h5, 500)
	clock.Advance(31 * time.Second)
	if !set2.Clusters["c"].Ejected(h5) {
		t.Fatal("second ejection should last 60s")
	}
}

func TestMaxEjectionPercent(t *testing.T) {
	m, _ := newTestManager()
	c := eds("c")
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(50)}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Clusters["c"]
	for _, h := range cl.Hosts {
		cl.Report(h, 502)
	}
	n := 0
	for _, h := range cl.Hosts {
		if cl.Ejected(h) {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d of 4 hosts ejected, want 2 (50%%)", n)
	}
	for i := 0; i < 10; i++ {
		if _, err := cl.Pick(uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNoHealthyHost(t *testing.T) {
	m, _ := newTestManager()
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": eds("c")}, nil, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.Clusters["c"].Pick(0); !errors.Is(err, ErrNoHealthyHost) {
		t.Fatalf("empty cluster: %v", err)
	}
}

func TestThresholdsAndOptions(t *testing.T) {
	m, _ := newTestManager()
	po, _ := anypb.New(&httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(1)}})
	c := &clusterv3.Cluster{Name: "s", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
		LbPolicy:       clusterv3.Cluster_LEAST_REQUEST,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "s", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{ep("localhost", 8080)}}}},
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(7),
			MaxPendingRequests: wrapperspb.UInt32(8), MaxRequests: wrapperspb.UInt32(9), MaxRetries: wrapperspb.UInt32(10)}}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": po}}
	set, err := m.Build(map[string]*clusterv3.Cluster{"s": c}, nil, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Clusters["s"]
	if cl.Thresholds != (Thresholds{MaxConnections: 7, MaxPending: 8, MaxRequests: 9, MaxRetries: 10}) || cl.MaxRequestsPerConnection != 1 || !cl.Transport.DisableKeepAlives || cl.Transport.MaxConnsPerHost != 7 {
		t.Fatalf("thresholds %+v mrpc %d", cl.Thresholds, cl.MaxRequestsPerConnection)
	}
	if h, err := cl.Pick(0); err != nil || h.Addr != "localhost:8080" {
		t.Fatalf("STRICT_DNS host %v %v", h, err)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name string
		c    *clusterv3.Cluster
	}{
		{"unsupported lb policy", &clusterv3.Cluster{Name: "x", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, LbPolicy: clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG}},
		{"custom cluster type", &clusterv3.Cluster{Name: "x", ClusterDiscoveryType: &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "aggregate"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestManager()
			if _, err := m.Build(map[string]*clusterv3.Cluster{"x": tc.c}, nil, edsName, nil); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("err %v, want ErrUnsupported", err)
			}
		})
	}
}

func BenchmarkClusterPick(b *testing.B) {
	m, _ := newTestManager()
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": eds("c")}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"})}, edsName, nil)
	if err != nil {
		b.Fatal(err)
	}
	cl := set.Clusters["c"]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cl.Pick(0); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLocalityWeights(t *testing.T) {
	m, _ := newTestManager()
	c := eds("c")
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
		LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
	a := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Zone: "a"}, LoadBalancingWeight: wrapperspb.UInt32(1), LbEndpoints: []*endpointv3.LbEndpoint{ep("10.0.0.1", 80), ep("10.0.0.2", 80)}},
		{Locality: &corev3.Locality{Zone: "b"}, LoadBalancingWeight: wrapperspb.UInt32(3), LbEndpoints: []*endpointv3.LbEndpoint{ep("10.0.1.1", 80)}},
	}}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": a}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i := 0; i < 4000; i++ {
		h, err := set.Clusters["c"].Pick(0)
		if err != nil {
			t.Fatal(err)
		}
		counts[h.Addr]++
	}
	if b := counts["10.0.1.1:80"]; b < 2800 || b > 3200 {
		t.Fatalf("zone b (weight 3 of 4) got %d of 4000: %v", b, counts)
	}
	if counts["10.0.0.1:80"] < 350 || counts["10.0.0.2:80"] < 350 {
		t.Fatalf("zone a hosts should share a quarter: %v", counts)
	}
}

func TestMaxConnectionsPerCluster(t *testing.T) {
	l := &connLimiter{d: &net.Dialer{}, slots: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	c1, err := l.dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	freed := false
	l.onFull = func() { freed = true }
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.dial(ctx, "tcp", ln.Addr().String()); err == nil {
		t.Fatal("second connection dialled past max_connections 1")
	}
	if !freed {
		t.Fatal("onFull not called")
	}
	c1.Close()
	c2, err := l.dial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("slot not released on close: %v", err)
	}
	c2.Close()
}

func TestOther(t *testing.T) {
	m, _ := newTestManager()
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": eds("c")}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Clusters["c"]
	a, b := cl.Hosts[0], cl.Hosts[1]
	for n := uint64(0); n < 4; n++ {
		if got := cl.Other(a, n); got != b {
			t.Fatalf("Other(a, %d) = %s, want the other host", n, got.Addr)
		}
	}
	one, _ := m.Build(map[string]*clusterv3.Cluster{"c": eds("c")}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1"})}, edsName, nil)
	h := one.Clusters["c"].Hosts[0]
	if got := one.Clusters["c"].Other(h, 0); got != h {
		t.Fatal("single host: Other must return the same host")
	}
}
