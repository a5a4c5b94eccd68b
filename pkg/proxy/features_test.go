package proxy_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

func TestConsistentHashByHeader(t *testing.T) {
	skipShort(t)
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String(), func(t *testing.T) {
			cp := xdstest.Start(t)
			m := newMesh(t, nil, nil)
			m.clusters[cAll].LbPolicy = policy
			act := toCluster(cAll)
			act.HashPolicy = []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "x-user"}}}}
			cp.Set(t, nodeID, m.resources(prefixRoute("hash", "/", act)))
			p := startProxy(t, cp)
			c := client(p)
			seen := map[string]bool{}
			for u := 0; u < 20; u++ {
				user := "user-" + strconv.Itoa(u)
				first := get(t, c, svcURL+"/", "x-user", user).body
				seen[first] = true
				for i := 0; i < 5; i++ {
					if b := get(t, c, svcURL+"/", "x-user", user).body; b != first {
						t.Fatalf("%s went to %s then %s", user, first, b)
					}
				}
			}
			if len(seen) != 2 {
				t.Fatalf("20 users all hashed to %v, want both hosts used", seen)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	cors, err := anypb.New(&corsv3.CorsPolicy{AllowOriginStringMatch: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "https://ok.example"}}},
		AllowMethods: "GET,POST", AllowHeaders: "x-custom", MaxAge: "600", ExposeHeaders: "x-backend"})
	if err != nil {
		t.Fatal(err)
	}
	r := prefixRoute("cors", "/", toCluster(cv1))
	r.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.cors": cors}
	cp.Set(t, nodeID, m.resources(r))
	p := startProxy(t, cp)
	c := client(p)
	do := func(method, origin string) *http.Response {
		req, _ := http.NewRequest(method, svcURL+"/", nil)
		req.Header.Set("Origin", origin)
		if method == http.MethodOptions {
			req.Header.Set("Access-Control-Request-Method", "POST")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	pre := do(http.MethodOptions, "https://ok.example")
	if pre.StatusCode != 200 || pre.Header.Get("Access-Control-Allow-Methods") != "GET,POST" || pre.Header.Get("Access-Control-Max-Age") != "600" {
		t.Fatalf("preflight: %d %v", pre.StatusCode, pre.Header)
	}
	if m.v1.hits.Load() != 0 {
		t.Fatal("preflight reached the backend")
	}
	got := do(http.MethodGet, "https://ok.example")
	if got.Header.Get("Access-Control-Allow-Origin") != "https://ok.example" || got.Header.Get("Access-Control-Expose-Headers") != "x-backend" {
		t.Fatalf("simple request headers %v", got.Header)
	}
	if bad := do(http.MethodGet, "https://evil.example"); bad.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("disallowed origin got CORS headers %v", bad.Header)
	}
}

func TestFaultAbortPercentage(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	r := prefixRoute("abort", "/", toCluster(cv1))
	r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: 503},
		Percentage: &typev3.FractionalPercent{Numerator: 300_000, Denominator: typev3.FractionalPercent_MILLION}}})
	cp.Set(t, nodeID, m.resources(r))
	p := startProxy(t, cp)
	c := client(p)
	aborted := 0
	for i := 0; i < 500; i++ {
		if res := get(t, c, svcURL+"/"); res.status == 503 && res.flags == "FI" {
			aborted++
		}
	}
	t.Logf("30%% abort: %d of 500 aborted", aborted)
	if aborted < 110 || aborted > 190 {
		t.Fatalf("%d of 500 aborted, want about 150", aborted)
	}
}

func TestMaxRequestsPerConnection(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	var mu sync.Mutex
	conns := map[string]int{}
	m := newMesh(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr]++
		mu.Unlock()
	}, nil)
	po, err := anypb.New(&httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(3)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{}}})
	if err != nil {
		t.Fatal(err)
	}
	m.clusters[cv1].TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": po}
	cp.Set(t, nodeID, m.resources(prefixRoute("v1", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	c := client(p)
	for i := 0; i < 9; i++ {
		if res := get(t, c, svcURL+"/"); res.status != 200 {
			t.Fatalf("request %d: %d %s", i, res.status, res.flags)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 3 {
		t.Fatalf("9 requests used %d upstream connections %v, want 3 (3 requests each)", len(conns), conns)
	}
	for addr, n := range conns {
		if n != 3 {
			t.Fatalf("connection %s carried %d requests, want 3", addr, n)
		}
	}
}

func TestRetryPrefersAnotherHost(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 503) }, nil)
	m.clusters[cAll].LbPolicy = clusterv3.Cluster_RANDOM
	act := toCluster(cAll)
	act.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}
	cp.Set(t, nodeID, m.resources(prefixRoute("retry", "/", act)))
	p := startProxy(t, cp)
	c := client(p)
	for i := 0; i < 60; i++ {
		if res := get(t, c, svcURL+"/"); res.status != 200 || res.body != "v2" {
			t.Fatalf("request %d: %d %q: the retry went back to the failing host", i, res.status, res.body)
		}
	}
	if m.v1.hits.Load() == 0 {
		t.Fatal("the failing host was never tried: test proves nothing")
	}
}
