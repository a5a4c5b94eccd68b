package proxy_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// TestRetryBudget is DestinationRule retryBudget (circuit breaker
// retry_budget) end to end: four requests fail on the priority-0 host
// at once (the host answers 503 only when all four are there), each wants
// one retry, and the retries go to the priority-1 host, which holds them.
// The number of retries admitted at once is max(minRetryConcurrency,
// percent × 4 requests in flight), max_retries is ignored when a budget
// is set, and the rest overflow (503, upstream_rq_retry_overflow) as with
// max_retries.
func TestRetryBudget(t *testing.T) {
	skipShort(t)
	const n = 4
	cases := []struct {
		name    string
		budget  *clusterv3.CircuitBreakers_Thresholds_RetryBudget
		maxRetr uint32
		want    int // retries admitted
	}{
		{"no budget: max_retries 3", nil, 3, 3},
		{"budget 0 %, minimum 1", &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 0}, MinRetryConcurrency: wrapperspb.UInt32(1)}, 3, 1},
		{"budget 50 % of 4, minimum 1, max_retries 1 ignored", &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 50}, MinRetryConcurrency: wrapperspb.UInt32(1)}, 1, 2},
		{"budget 25 % of 4, minimum 3", &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 25}, MinRetryConcurrency: wrapperspb.UInt32(3)}, 3, 3},
		{"Envoy defaults: 20 %, minimum 3", &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}, 0, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var firstArrived atomic.Int32
			allFirst := make(chan struct{})
			var once sync.Once
			failing := startBackend(t, "failing", func(w http.ResponseWriter, _ *http.Request) {
				if firstArrived.Add(1) == n {
					once.Do(func() { close(allFirst) })
				}
				select { // every request is in flight before any fails
				case <-allFirst:
				case <-time.After(10 * time.Second):
				}
				http.Error(w, "down", http.StatusServiceUnavailable)
			})
			release := make(chan struct{})
			holding := startBackend(t, "holding", func(w http.ResponseWriter, _ *http.Request) {
				select {
				case <-release:
				case <-time.After(10 * time.Second):
				}
				w.Write([]byte("retried"))
			})
			cp := xdstest.Start(t)
			c := xdstest.EDSCluster(cAll)
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
			th := &clusterv3.CircuitBreakers_Thresholds{MaxRetries: wrapperspb.UInt32(tc.maxRetr), RetryBudget: tc.budget}
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
			cla := &endpointv3.ClusterLoadAssignment{ClusterName: cAll, Endpoints: []*endpointv3.LocalityLbEndpoints{
				{Locality: &corev3.Locality{}, LbEndpoints: xdstest.Endpoints(cAll, "reviews-v1", failing.addr).Endpoints[0].LbEndpoints},
				{Locality: &corev3.Locality{}, Priority: 1, LbEndpoints: xdstest.Endpoints(cAll, "reviews-v2", holding.addr).Endpoints[0].LbEndpoints},
			}}
			act := toCluster(cAll)
			act.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}
			rc := &routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{{
				Name: "reviews", Domains: []string{"reviews", "reviews:9080"}, Routes: []*routev3.Route{prefixRoute("retry", "/", act)}}}}
			cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(9080)}, Routes: []types.Resource{rc},
				Clusters: []types.Resource{c}, Endpoints: []types.Resource{cla}})
			p := startProxy(t, cp)
			hc := client(p)

			var wg sync.WaitGroup
			var done, ok, failed atomic.Int32
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res := get(t, hc, svcURL+"/")
					switch {
					case res.status == 200 && res.body == "retried":
						ok.Add(1)
					case res.status == 503:
						failed.Add(1)
					default:
						t.Errorf("unexpected answer %d %q", res.status, res.body)
					}
					done.Add(1)
				}()
			}
			// Every request is decided once it is either held by the
			// retry host or answered (its retry overflowed).
			eventually(t, "every retry admitted or refused", func() bool {
				return holding.hits.Load()+int64(done.Load()) == n
			})
			// While the admitted retries are held the budget is used up.
			_, held := httpGet(t, "http://"+p.Addresses().Admin+"/stats")
			if want := "cluster." + cAll + ".circuit_breakers.default.rq_retry_open: 1\n"; !strings.Contains(held, want) {
				t.Errorf("stats while retries are held lack %q", want)
			}
			close(release)
			wg.Wait()
			if got := int(ok.Load()); got != tc.want || int(failed.Load()) != n-tc.want {
				t.Fatalf("%d requests retried successfully, %d failed; want %d retried", got, failed.Load(), tc.want)
			}
			_, stats := httpGet(t, "http://"+p.Addresses().Admin+"/stats")
			want := "cluster." + cAll + ".upstream_rq_retry_overflow: " + strconv.Itoa(n-tc.want) + "\n"
			if !strings.Contains(stats, want) {
				t.Errorf("stats lack %q", want)
			}
		})
	}
}
