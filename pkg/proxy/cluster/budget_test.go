package cluster

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRetryLimit(t *testing.T) {
	cases := []struct {
		name     string
		th       *clusterv3.CircuitBreakers_Thresholds
		active   int64
		want     int64
		warnings string
	}{
		{"no thresholds: max_retries 3", nil, 100, 3, ""},
		{"max_retries", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(7)}, 100, 7, ""},
		{"budget defaults: 20 % of 100", &clusterv3.CircuitBreakers_Thresholds{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}, 100, 20, ""},
		{"budget defaults: minimum 3", &clusterv3.CircuitBreakers_Thresholds{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}, 2, 3, ""},
		{"budget ignores max_retries", &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(1),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 25}, MinRetryConcurrency: wrapperspb.UInt32(0)}}, 10, 2, ""},
		{"budget rounds down", &clusterv3.CircuitBreakers_Thresholds{
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 50}, MinRetryConcurrency: wrapperspb.UInt32(1)}}, 7, 3, ""},
		{"budget_interval is reported", &clusterv3.CircuitBreakers_Thresholds{
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetInterval: durationpb.New(time.Second)}}, 0, 3, "budget_interval not executed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := newTestManager()
			pc := eds("c")
			if tc.th != nil {
				pc.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{tc.th}}
			}
			set, err := m.Build(map[string]*clusterv3.Cluster{"c": pc}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1"})}, edsName, nil)
			if err != nil {
				t.Fatal(err)
			}
			c := set.Clusters["c"]
			c.Breakers.Requests.Store(tc.active)
			if got := c.RetryLimit(); got != tc.want {
				t.Errorf("RetryLimit with %d active = %d, want %d", tc.active, got, tc.want)
			}
			if w := strings.Join(c.Warnings, "; "); (tc.warnings == "") != (w == "") || !strings.Contains(w, tc.warnings) {
				t.Errorf("warnings %q, want %q", w, tc.warnings)
			}
		})
	}
}

// TestSlowStartOnlyForLaterHosts: the endpoints a cluster starts with
// never warm up (whether they came with the first build or a later first
// EDS response); endpoints added after that do, from the update on.
func TestSlowStartOnlyForLaterHosts(t *testing.T) {
	m, fc := newTestManager()
	pc := eds("c")
	pc.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
		SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(10 * time.Second)}}}
	clusters := map[string]*clusterv3.Cluster{"c": pc}
	set, err := m.Build(clusters, nil, edsName, nil) // CDS first, no endpoints yet
	if err != nil {
		t.Fatal(err)
	}
	fc.Advance(time.Second)
	set, err = m.Build(clusters, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2"})}, edsName, set)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range set.Clusters["c"].Hosts {
		if h.SlowStartAt() != 0 {
			t.Fatalf("first host %s warms up", h.Addr)
		}
	}
	fc.Advance(time.Second)
	set, err = m.Build(clusters, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"})}, edsName, set)
	if err != nil {
		t.Fatal(err)
	}
	c := set.Clusters["c"]
	for _, h := range c.Hosts {
		want := int64(0)
		if h.Addr == "10.0.0.3:80" {
			want = fc.Now().UnixNano()
		}
		if h.SlowStartAt() != want {
			t.Errorf("host %s SlowStartAt = %d, want %d", h.Addr, h.SlowStartAt(), want)
		}
	}
	// Right after joining it gets about 10 % of its weight: ~1/21 of picks.
	picks := 0
	for i := 0; i < 21000; i++ {
		h, err := c.Pick(0)
		if err != nil {
			t.Fatal(err)
		}
		if h.Addr == "10.0.0.3:80" {
			picks++
		}
	}
	if picks < 500 || picks > 1500 {
		t.Errorf("new host got %d of 21000 picks, want about 1000", picks)
	}
	fc.Advance(10 * time.Second)
	picks = 0
	for i := 0; i < 3000; i++ {
		if h, _ := c.Pick(0); h.Addr == "10.0.0.3:80" {
			picks++
		}
	}
	if picks != 1000 { // round robin again
		t.Errorf("after the window the new host got %d of 3000 picks, want 1000", picks)
	}
}
