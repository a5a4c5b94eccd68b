package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// TestRetryRemoteLocalities is VirtualService retries.retryRemoteLocalities
// (previous_priorities, update_frequency 2) end to end: both hosts of the
// local priority fail, the remote priority's host works. With two retries
// the third attempt leaves the tried priority and succeeds; without the
// retry priority every attempt stays local (previous_hosts alternates
// between the two failing hosts) and the request fails. The route's
// stat_prefix (Istio's statPrefix) counts its requests in /stats.
func TestRetryRemoteLocalities(t *testing.T) {
	skipShort(t)
	t.Parallel()
	down := func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }
	local1, local2 := startBackend(t, "local1", down), startBackend(t, "local2", down)
	remote := startBackend(t, "remote", nil)
	cp := xdstest.Start(t)
	c := xdstest.EDSCluster(cAll)
	c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	eps := func(wl string, addrs ...string) []*endpointv3.LbEndpoint {
		return xdstest.Endpoints(cAll, wl, addrs...).Endpoints[0].LbEndpoints
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cAll, Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Region: "local"}, LbEndpoints: eps("reviews-v1", local1.addr, local2.addr)},
		{Locality: &corev3.Locality{Region: "remote"}, Priority: 1, LbEndpoints: eps("reviews-v2", remote.addr)},
	}}
	prio, err := anypb.New(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})
	if err != nil {
		t.Fatal(err)
	}
	route := func(name, prefix string, remote bool) *routev3.Route {
		act := toCluster(cAll)
		act.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)}
		if remote {
			act.RetryPolicy.RetryPriority = &routev3.RetryPolicy_RetryPriority{Name: "envoy.retry_priorities.previous_priorities",
				ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: prio}}
		}
		r := prefixRoute(name, prefix, act)
		r.StatPrefix = name
		return r
	}
	rc := &routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{{
		Name: "reviews:9080", Domains: []string{"reviews", "reviews:9080"},
		Routes: []*routev3.Route{route("remote-ok", "/remote", true), route("local-only", "/", false)}}}}
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(9080)}, Routes: []types.Resource{rc},
		Clusters: []types.Resource{c}, Endpoints: []types.Resource{cla}})
	p := startProxy(t, cp)
	hc := client(p)
	for i := 0; i < 10; i++ {
		if res := get(t, hc, svcURL+"/remote"); res.status != 200 || res.body != "remote" {
			t.Fatalf("request %d with retryRemoteLocalities: %d %q, want the remote host's answer", i, res.status, res.body)
		}
		if res := get(t, hc, svcURL+"/local"); res.status != 503 {
			t.Fatalf("request %d without it: %d %q, want 503 (retries stay in the local priority)", i, res.status, res.body)
		}
	}
	if n := remote.hits.Load(); n != 10 {
		t.Fatalf("remote host got %d requests, want 10 (only the third attempts of /remote)", n)
	}
	if n := local1.hits.Load() + local2.hits.Load(); n != 10*2+10*3 {
		t.Fatalf("local hosts got %d requests, want %d", n, 10*2+10*3)
	}
	_, stats := httpGet(t, "http://"+p.Addresses().Admin+"/stats")
	for _, want := range []string{
		"vhost.reviews:9080.route.remote-ok.upstream_rq_total: 10\n",
		"vhost.reviews:9080.route.remote-ok.upstream_rq_200: 10\n",
		"vhost.reviews:9080.route.remote-ok.upstream_rq_2xx: 10\n",
		"vhost.reviews:9080.route.remote-ok.upstream_rq_retry: 20\n",
		"vhost.reviews:9080.route.local-only.upstream_rq_503: 10\n",
		"vhost.reviews:9080.route.local-only.upstream_rq_5xx: 10\n",
	} {
		if !strings.Contains(stats, want) {
			t.Errorf("/stats lacks %q", strings.TrimSpace(want))
		}
	}
}
