package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	matchv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/matcher/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// outlierCluster builds one cluster "c" ejecting after one 5xx, up to 100 %
// of its hosts; panic is the healthy_panic_threshold (nil: Envoy's default).
func outlierCluster(t *testing.T, m *Manager, panic *float64, prios ...[]string) *Cluster {
	t.Helper()
	c := eds("c")
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(100)}
	if panic != nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: *panic}}
	}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", prios...)}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	return set.Clusters["c"]
}

func pickCounts(t *testing.T, cl *Cluster, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		h, err := cl.Pick(uint64(i))
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		counts[h.Addr]++
	}
	return counts
}

func pct(v float64) *float64 { return &v }

func TestHealthyPanicThreshold(t *testing.T) {
	hosts := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	tests := []struct {
		name      string
		threshold *float64
		eject     int
		wantAll   bool // panic: every host gets traffic
		wantErr   bool
	}{
		{"default 50%, 1 of 4 healthy: panic", nil, 3, true, false},
		{"default 50%, 2 of 4 healthy: no panic", nil, 2, false, false},
		{"threshold 20%, 1 of 4 healthy: no panic", pct(20), 3, false, false},
		{"threshold 0 disables panic", pct(0), 3, false, false},
		{"threshold 80%, 2 of 4 healthy: panic", pct(80), 2, true, false},
		// 75 % × 1.4 overprovisioning carries all traffic: never panic.
		{"threshold 80%, 3 of 4 healthy: no panic", pct(80), 1, false, false},
		{"all ejected, default: panic over all", nil, 4, true, false},
		{"all ejected, threshold 0: no host", pct(0), 4, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, _ := newTestManager()
			cl := outlierCluster(t, m, tc.threshold, hosts)
			for _, h := range cl.Hosts[:tc.eject] {
				cl.Report(h, 500)
			}
			if got := cl.EjectedCount(); got != tc.eject {
				t.Fatalf("%d hosts ejected, want %d", got, tc.eject)
			}
			if tc.wantErr {
				if _, err := cl.Pick(0); !errors.Is(err, ErrNoHealthyHost) {
					t.Fatalf("pick: %v, want ErrNoHealthyHost", err)
				}
				return
			}
			counts := pickCounts(t, cl, 400)
			if tc.wantAll {
				for _, a := range hosts {
					if counts[a+":80"] < 50 {
						t.Fatalf("panic mode should spread over all hosts: %v", counts)
					}
				}
				if cl.Breakers.HealthyPanic.Load() == 0 {
					t.Fatal("lb_healthy_panic not counted")
				}
				return
			}
			for _, h := range cl.Hosts[:tc.eject] {
				if counts[h.Addr] > 0 {
					t.Fatalf("ejected host %s picked outside panic mode: %v", h.Addr, counts)
				}
			}
			if cl.Breakers.HealthyPanic.Load() != 0 {
				t.Fatal("lb_healthy_panic counted outside panic mode")
			}
		})
	}
}

func TestPriorityLoadSpill(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager()
	cl := outlierCluster(t, m, pct(0), []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}, []string{"10.0.1.1"})
	// Half of priority 0 ejected: its health is 50 % × 1.4 = 70, so 30 %
	// of the traffic spills to priority 1.
	cl.Report(cl.Hosts[0], 500)
	cl.Report(cl.Hosts[1], 500)
	counts := pickCounts(t, cl, 10000)
	if p1 := counts["10.0.1.1:80"]; p1 < 2700 || p1 > 3300 {
		t.Fatalf("priority 1 got %d of 10000, want ~3000: %v", p1, counts)
	}
	if counts["10.0.0.1:80"]+counts["10.0.0.2:80"] != 0 {
		t.Fatalf("ejected hosts picked: %v", counts)
	}
}

func TestPriorityPanicPerLevel(t *testing.T) {
	t.Parallel()
	m, _ := newTestManager()
	// Each level 1 of 4 healthy: health 35 + 35 = 70 < 100, both levels
	// below the 50 % threshold, so each is in panic and takes half.
	cl := outlierCluster(t, m, nil, []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}, []string{"10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"})
	for _, h := range cl.Hosts {
		if h.Addr != "10.0.0.4:80" && h.Addr != "10.0.1.4:80" {
			cl.Report(h, 500)
		}
	}
	counts := pickCounts(t, cl, 8000)
	p0 := 0
	for a, n := range counts {
		if a[:7] == "10.0.0." {
			p0 += n
		}
	}
	if p0 < 3600 || p0 > 4400 {
		t.Fatalf("priority 0 got %d of 8000, want ~4000: %v", p0, counts)
	}
	if len(counts) != 8 {
		t.Fatalf("panic levels should use every host: %v", counts)
	}
}

func TestLocalOriginSplit(t *testing.T) {
	t.Parallel()
	build := func(split bool) *Cluster {
		m, _ := newTestManager()
		c := eds("c")
		c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(2), MaxEjectionPercent: wrapperspb.UInt32(100),
			SplitExternalLocalOriginErrors: split, ConsecutiveLocalOriginFailure: wrapperspb.UInt32(3), EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100)}
		set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2"})}, edsName, nil)
		if err != nil {
			t.Fatal(err)
		}
		return set.Clusters["c"]
	}
	// Split: local-origin failures count on their own (3), and do not
	// interrupt a run of upstream 5xx.
	cl := build(true)
	a, b := cl.Hosts[0], cl.Hosts[1]
	cl.Report(a, 0)
	cl.Report(a, LocalTimeout)
	if cl.Ejected(a) {
		t.Fatal("split: ejected after 2 local-origin failures, threshold 3")
	}
	cl.Report(a, 0)
	if !cl.Ejected(a) || cl.Breakers.LocalOriginEjections.Load() != 1 {
		t.Fatalf("split: not ejected after 3 local-origin failures (local ejections %d)", cl.Breakers.LocalOriginEjections.Load())
	}
	cl.Report(b, 500)
	cl.Report(b, 0)
	if cl.Ejected(b) {
		t.Fatal("split: a local-origin failure counted as a 5xx")
	}
	cl.Report(b, 500)
	if !cl.Ejected(b) {
		t.Fatal("split: two upstream 5xx around a local failure should eject")
	}
	// Not split: local-origin failures are 5xx (503/504).
	cl = build(false)
	a = cl.Hosts[0]
	cl.Report(a, 0)
	cl.Report(a, LocalTimeout)
	if !cl.Ejected(a) || cl.Breakers.LocalOriginEjections.Load() != 0 {
		t.Fatal("not split: two local-origin failures should be two consecutive 5xx")
	}
}

func TestEjectionInterval(t *testing.T) {
	t.Parallel()
	m, clock := newTestManager()
	c := eds("c")
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(100),
		Interval: durationpb.New(10 * time.Second), BaseEjectionTime: durationpb.New(30 * time.Second)}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := set.Clusters["c"]
	h := cl.Hosts[0]
	clock.Advance(5 * time.Second)
	cl.Report(h, 500) // ejected at 5 s for 30 s: back on the sweep at 40 s
	clock.Advance(31 * time.Second)
	if !cl.Ejected(h) {
		t.Fatal("back before the next interval sweep")
	}
	clock.Advance(4 * time.Second)
	if cl.Ejected(h) {
		t.Fatal("still ejected after the sweep at 40 s")
	}
	// Ejected again right away: second ejection, 60 s.
	cl.Report(h, 500)
	clock.Advance(50 * time.Second)
	if !cl.Ejected(h) {
		t.Fatal("second ejection should last 60 s")
	}
	clock.Advance(10 * time.Second)
	if cl.Ejected(h) {
		t.Fatal("second ejection lasted past 60 s")
	}
	// Healthy for 3 sweeps: the multiplier drops from 2 to 0, so the next
	// ejection is 30 s again.
	clock.Advance(30 * time.Second)
	cl.Report(h, 500)
	clock.Advance(30 * time.Second)
	if cl.Ejected(h) {
		t.Fatal("multiplier did not decay while the host was healthy")
	}
}

// sweepCluster has six hosts and an outlier_detection od (interval 10 s).
func sweepCluster(t *testing.T, od *clusterv3.OutlierDetection) (*Cluster, *fakeClock) {
	t.Helper()
	m, clock := newTestManager()
	c := eds("c")
	od.Interval = durationpb.New(10 * time.Second)
	od.MaxEjectionPercent = wrapperspb.UInt32(100)
	od.Consecutive_5Xx = wrapperspb.UInt32(0)
	c.OutlierDetection = od
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c",
		[]string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	return set.Clusters["c"], clock
}

// traffic reports n requests to each of the first hosts of cl, the given
// number of them failing (500) per host, then lets the interval pass and
// reports one more success so that the sweep runs.
func traffic(cl *Cluster, clock *fakeClock, n int, fails ...int) {
	for i, h := range cl.Hosts {
		f := 0
		if i < len(fails) {
			f = fails[i]
		}
		for k := 0; k < n; k++ {
			if k < f {
				cl.Report(h, 500)
			} else {
				cl.Report(h, 200)
			}
		}
	}
	clock.Advance(10 * time.Second)
	cl.Report(cl.Hosts[len(cl.Hosts)-1], 200)
}

func TestFailurePercentage(t *testing.T) {
	t.Parallel()
	od := func() *clusterv3.OutlierDetection {
		return &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0), EnforcingFailurePercentage: wrapperspb.UInt32(100),
			FailurePercentageThreshold: wrapperspb.UInt32(50), FailurePercentageRequestVolume: wrapperspb.UInt32(10)}
	}
	// Host 0 fails 12 of 20 (60 % >= 50 %), host 1 8 of 20: only host 0
	// is ejected, though neither failed consecutively enough to matter.
	cl, clock := sweepCluster(t, od())
	traffic(cl, clock, 20, 12, 8)
	if !cl.Ejected(cl.Hosts[0]) || cl.Ejected(cl.Hosts[1]) || cl.Breakers.FailurePercentageEjections.Load() != 1 {
		t.Fatalf("ejected: host0 %v host1 %v (failure-percentage ejections %d)", cl.Ejected(cl.Hosts[0]), cl.Ejected(cl.Hosts[1]),
			cl.Breakers.FailurePercentageEjections.Load())
	}
	// Below the request volume: no verdict.
	cl, clock = sweepCluster(t, od())
	traffic(cl, clock, 9, 9)
	if cl.EjectedCount() != 0 {
		t.Fatal("ejected a host below failure_percentage_request_volume")
	}
	// Fewer than failure_percentage_minimum_hosts (5) hosts with volume.
	o := od()
	o.FailurePercentageMinimumHosts = wrapperspb.UInt32(7)
	cl, clock = sweepCluster(t, o)
	traffic(cl, clock, 20, 20)
	if cl.EjectedCount() != 0 {
		t.Fatal("ejected with fewer hosts than failure_percentage_minimum_hosts")
	}
	// enforcing_failure_percentage unset is 0 (Envoy's default): off.
	o = od()
	o.EnforcingFailurePercentage = nil
	cl, clock = sweepCluster(t, o)
	traffic(cl, clock, 20, 20)
	if cl.EjectedCount() != 0 {
		t.Fatal("failure-percentage detection ran without enforcing_failure_percentage")
	}
}

func TestSuccessRate(t *testing.T) {
	t.Parallel()
	od := func() *clusterv3.OutlierDetection {
		return &clusterv3.OutlierDetection{SuccessRateRequestVolume: wrapperspb.UInt32(20)} // enforcing_success_rate defaults to 100
	}
	// Success rates 50, 100 ×5: mean 91.7, stdev 18.6, limit 91.7 − 1.9 ×
	// 18.6 = 56.3; host 0 is below it.
	cl, clock := sweepCluster(t, od())
	traffic(cl, clock, 20, 10)
	if !cl.Ejected(cl.Hosts[0]) || cl.EjectedCount() != 1 || cl.Breakers.SuccessRateEjections.Load() != 1 {
		t.Fatalf("success rate: host0 ejected %v, %d ejected", cl.Ejected(cl.Hosts[0]), cl.EjectedCount())
	}
	// Istio's translation sends enforcing_success_rate 0.
	o := od()
	o.EnforcingSuccessRate = wrapperspb.UInt32(0)
	cl, clock = sweepCluster(t, o)
	traffic(cl, clock, 20, 10)
	if cl.EjectedCount() != 0 {
		t.Fatal("success-rate detection ran with enforcing_success_rate 0")
	}
	// A larger stdev factor (3.0) tolerates host 0.
	o = od()
	o.SuccessRateStdevFactor = wrapperspb.UInt32(3000)
	cl, clock = sweepCluster(t, o)
	traffic(cl, clock, 20, 10)
	if cl.EjectedCount() != 0 {
		t.Fatal("ejected within success_rate_stdev_factor")
	}
	// Counts restart every interval: a second clean interval ejects nothing
	// more and host 0's earlier failures are forgotten.
	cl, clock = sweepCluster(t, od())
	traffic(cl, clock, 20, 0, 0)
	traffic(cl, clock, 20)
	if cl.EjectedCount() != 0 {
		t.Fatal("ejected on clean intervals")
	}
}

// BenchmarkClusterPickOutlier is Pick with outlier detection on (the path
// that computes priority health and panic) over two priority levels, one
// host of the first ejected, next to BenchmarkClusterPick's plain path.
func BenchmarkClusterPickOutlier(b *testing.B) {
	m, _ := newTestManager()
	c := eds("c")
	c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(1), MaxEjectionPercent: wrapperspb.UInt32(100)}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c",
		[]string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, []string{"10.0.1.1", "10.0.1.2"})}, edsName, nil)
	if err != nil {
		b.Fatal(err)
	}
	cl := set.Clusters["c"]
	cl.Report(cl.Hosts[0], 500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cl.Pick(0); err != nil {
			b.Fatal(err)
		}
	}
}

// TestErrorMatcher: Istio's outlierDetectionHttpErrorCodes [429, 503] as
// HttpProtocolOptions.outlier_detection.error_matcher: 429 counts as an
// error, 500 does not; 503 is still a gateway error.
func TestErrorMatcher(t *testing.T) {
	t.Parallel()
	status := func(code string) *matchv3.MatchPredicate {
		return &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_HttpResponseHeadersMatch{HttpResponseHeadersMatch: &matchv3.HttpHeadersMatch{
			Headers: []*routev3.HeaderMatcher{{Name: ":status", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: code}}}}}}}}
	}
	build := func(t *testing.T, m *matchv3.MatchPredicate, gateway bool) *Cluster {
		t.Helper()
		mgr, _ := newTestManager()
		c := eds("c")
		c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(2), MaxEjectionPercent: wrapperspb.UInt32(100)}
		if gateway {
			c.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(0), EnforcingConsecutive_5Xx: wrapperspb.UInt32(0),
				ConsecutiveGatewayFailure: wrapperspb.UInt32(2), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100), MaxEjectionPercent: wrapperspb.UInt32(100)}
		}
		po, err := anypb.New(&httpv3.HttpProtocolOptions{OutlierDetection: &httpv3.HttpProtocolOptions_OutlierDetection{ErrorMatcher: m}})
		if err != nil {
			t.Fatal(err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": po}
		set, err := mgr.Build(map[string]*clusterv3.Cluster{"c": c}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2"})}, edsName, nil)
		if err != nil {
			t.Fatal(err)
		}
		return set.Clusters["c"]
	}
	or := &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_OrMatch{OrMatch: &matchv3.MatchPredicate_MatchSet{Rules: []*matchv3.MatchPredicate{status("429"), status("503")}}}}
	cl := build(t, or, false)
	a, b := cl.Hosts[0], cl.Hosts[1]
	cl.Report(a, 500)
	cl.Report(a, 500)
	if cl.Ejected(a) {
		t.Fatal("500 is not in the error codes but ejected")
	}
	cl.Report(b, 429)
	cl.Report(b, 429)
	if !cl.Ejected(b) {
		t.Fatal("two 429s (error codes) did not eject")
	}
	cl = build(t, or, true)
	a = cl.Hosts[0]
	cl.Report(a, 503)
	cl.Report(a, 503)
	if !cl.Ejected(a) {
		t.Fatal("503 in the error codes lost its gateway-error kind")
	}
	// Unsupported matchers are accepted with a warning; 5xx stay errors.
	cl = build(t, &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_HttpRequestHeadersMatch{HttpRequestHeadersMatch: &matchv3.HttpHeadersMatch{}}}, false)
	if len(cl.Warnings) != 1 || !strings.Contains(cl.Warnings[0], "unsupported") {
		t.Fatalf("warnings %v", cl.Warnings)
	}
	cl.Report(cl.Hosts[0], 500)
	cl.Report(cl.Hosts[0], 500)
	if !cl.Ejected(cl.Hosts[0]) {
		t.Fatal("unsupported matcher: 5xx no longer errors")
	}
}

func TestCompileErrorMatcher(t *testing.T) {
	t.Parallel()
	hm := func(h *routev3.HeaderMatcher) *matchv3.MatchPredicate {
		return &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_HttpResponseHeadersMatch{HttpResponseHeadersMatch: &matchv3.HttpHeadersMatch{Headers: []*routev3.HeaderMatcher{h}}}}
	}
	tests := []struct {
		name    string
		m       *matchv3.MatchPredicate
		errors  []int
		success []int
	}{
		{"range 400-500", hm(&routev3.HeaderMatcher{Name: ":status", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 400, End: 500}}}), []int{400, 404, 499}, []int{399, 500, 200}},
		{"prefix 5, inverted", hm(&routev3.HeaderMatcher{Name: ":status", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "5"}}}}), []int{200, 404}, []int{500, 503}},
		{"not 200", &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_NotMatch{NotMatch: hm(&routev3.HeaderMatcher{Name: ":status", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "200"}}}})}}, []int{201, 500}, []int{200}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			codes, err := compileErrorMatcher(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.errors {
				if !codes[c] {
					t.Errorf("%d not an error", c)
				}
			}
			for _, c := range tc.success {
				if codes[c] {
					t.Errorf("%d is an error", c)
				}
			}
		})
	}
	if _, err := compileErrorMatcher(hm(&routev3.HeaderMatcher{Name: "x-error", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("non-:status header: %v, want ErrUnsupported", err)
	}
}
