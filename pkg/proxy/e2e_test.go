package proxy_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

const (
	svcHost = "reviews.default.svc.cluster.local"
	svcURL  = "http://reviews:9080"
	cv1     = "outbound|9080|v1|" + svcHost
	cv2     = "outbound|9080|v2|" + svcHost
	cAll    = "outbound|9080||" + svcHost
)

// mesh publishes a listener on 9080, clusters v1/v2/all for reviews and
// the given routes (virtual host domains: reviews, reviews:9080, FQDN).
type mesh struct {
	v1, v2   *backend
	clusters map[string]*clusterv3.Cluster
	eps      map[string][]string
}

func newMesh(t *testing.T, v1, v2 http.HandlerFunc) *mesh {
	m := &mesh{v1: startBackend(t, "v1", v1), v2: startBackend(t, "v2", v2), clusters: map[string]*clusterv3.Cluster{}}
	for _, n := range []string{cv1, cv2, cAll} {
		m.clusters[n] = xdstest.EDSCluster(n)
	}
	m.eps = map[string][]string{cv1: {m.v1.addr}, cv2: {m.v2.addr}, cAll: {m.v1.addr, m.v2.addr}}
	return m
}

func (m *mesh) resources(routes ...*routev3.Route) *xdstest.Resources {
	rc := &routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{{
		Name: "reviews.default.svc.cluster.local:9080", Domains: []string{"reviews", "reviews:9080", svcHost, svcHost + ":9080"},
		Routes: append(routes, xdstest.ToCluster("default", cAll))}}}
	r := &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(9080)}, Routes: []types.Resource{rc}}
	for n, c := range m.clusters {
		r.Clusters = append(r.Clusters, c)
		wl := "reviews-v1"
		if strings.Contains(n, "|v2|") {
			wl = "reviews-v2"
		}
		r.Endpoints = append(r.Endpoints, xdstest.Endpoints(n, wl, m.eps[n]...))
	}
	return r
}

func prefixRoute(name, prefix string, action *routev3.RouteAction) *routev3.Route {
	return &routev3.Route{Name: name, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: action}}
}

func toCluster(c string) *routev3.RouteAction {
	return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: c}}
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

func TestHeaderRouting(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	jason := &routev3.Route{Name: "reviews.default", Match: &routev3.RouteMatch{
		PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
		Headers: []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}}}}}},
		Action: &routev3.Route_Route{Route: toCluster(cv2)}}
	cp.Set(t, nodeID, m.resources(jason, prefixRoute("v1", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	c := client(p)
	for i := 0; i < 10; i++ {
		if r := get(t, c, svcURL+"/reviews/1", "end-user", "jason"); r.body != "v2" {
			t.Fatalf("jason: got %d %q, want v2", r.status, r.body)
		}
		if r := get(t, c, svcURL+"/reviews/1", "end-user", "bob"); r.body != "v1" {
			t.Fatalf("bob: got %d %q, want v1", r.status, r.body)
		}
		if r := get(t, c, svcURL+"/reviews/1"); r.body != "v1" {
			t.Fatalf("anonymous: got %d %q, want v1", r.status, r.body)
		}
	}
	// Plain (origin-form) request with the mesh Host header, no HTTP_PROXY.
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.Addresses().Outbound+"/reviews/1", nil)
	req.Host = "reviews:9080"
	req.Header.Set("end-user", "jason")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Backend") != "v2" {
		t.Fatalf("origin-form request: backend %q, want v2", resp.Header.Get("X-Backend"))
	}
}

func TestWeightedRouting(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	wr := prefixRoute("split", "/", &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
		WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: cv1, Weight: wrapperspb.UInt32(50)}, {Name: cv2, Weight: wrapperspb.UInt32(50)}}}}})
	cp.Set(t, nodeID, m.resources(wr))
	p := startProxy(t, cp)
	c := client(p)
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		counts[get(t, c, svcURL+"/").body]++
	}
	t.Logf("50/50 split over 1000 requests: %v", counts)
	for _, v := range []string{"v1", "v2"} {
		if counts[v] < 430 || counts[v] > 570 {
			t.Errorf("%s got %d of 1000, want 500±70", v, counts[v])
		}
	}
}

func faultConfig(t *testing.T, f *faultv3.HTTPFault) map[string]*anypb.Any {
	a, err := anypb.New(f)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{"envoy.filters.http.fault": a}
}

func TestFaultDelayWithTimeout(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	act := toCluster(cv1)
	act.Timeout = durationpb.New(500 * time.Millisecond)
	r := prefixRoute("delay", "/", act)
	r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{
		FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(7 * time.Second)},
		Percentage:         &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}})
	cp.Set(t, nodeID, m.resources(r))
	p := startProxy(t, cp)
	start := time.Now()
	res := get(t, client(p), svcURL+"/")
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %v, want about 0.5s", el)
	}
	if res.status != http.StatusGatewayTimeout || !strings.Contains(res.flags, "UT") || !strings.Contains(res.flags, "DI") {
		t.Fatalf("got %d flags %q, want 504 with DI,UT", res.status, res.flags)
	}
}

func TestFaultAbort(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	r := prefixRoute("abort", "/ratings", toCluster(cv1))
	r.TypedPerFilterConfig = faultConfig(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: 500},
		Percentage: &typev3.FractionalPercent{Numerator: 100}}})
	cp.Set(t, nodeID, m.resources(r))
	p := startProxy(t, cp)
	c := client(p)
	for i := 0; i < 20; i++ {
		res := get(t, c, svcURL+"/ratings/1")
		if res.status != 500 || res.flags != "FI" {
			t.Fatalf("got %d %q, want 500 FI", res.status, res.flags)
		}
	}
	if m.v1.hits.Load() != 0 {
		t.Fatalf("aborted requests reached the backend %d times", m.v1.hits.Load())
	}
	if res := get(t, c, svcURL+"/other"); res.status != 200 {
		t.Fatalf("non-faulted path: %d", res.status)
	}
}

func TestCircuitBreaking(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(2 * time.Millisecond)
		fmt.Fprint(w, "v1")
	}, nil)
	c := m.clusters[cv1]
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(1)}}}
	c.MaxRequestsPerConnection = wrapperspb.UInt32(1) //nolint:staticcheck // Istio's http1MaxRequestsPerConnection
	cp.Set(t, nodeID, m.resources(prefixRoute("cb", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	cl := client(p)
	for _, conc := range []int{2, 3} {
		var ok, uo, other atomic.Int64
		// Overflow is timing dependent (as with Envoy): run batches until
		// some 503 UO appear, at most three.
		for batch := 0; batch < 3 && uo.Load() == 0; batch++ {
			var wg sync.WaitGroup
			for g := 0; g < conc; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 40; i++ {
						res := get(t, cl, svcURL+"/get")
						switch {
						case res.status == 200:
							ok.Add(1)
						case res.status == 503 && res.flags == "UO":
							uo.Add(1)
						default:
							other.Add(1)
						}
					}
				}()
			}
			wg.Wait()
		}
		total := ok.Load() + uo.Load() + other.Load()
		share := float64(uo.Load()) / float64(total)
		t.Logf("concurrency %d: %d ok, %d 503 UO (%.0f%%), %d other", conc, ok.Load(), uo.Load(), share*100, other.Load())
		if other.Load() != 0 || uo.Load() == 0 || ok.Load() == 0 {
			t.Errorf("concurrency %d: want both successes and 503 UO only", conc)
		}
	}
	// As in Istio's task: the overflow shows in the cluster stats.
	_, stats := httpGet(t, "http://"+p.Addresses().Admin+"/stats")
	if !strings.Contains(stats, "cluster."+cv1+".upstream_rq_pending_overflow: ") ||
		strings.Contains(stats, "cluster."+cv1+".upstream_rq_pending_overflow: 0\n") {
		t.Errorf("stats lack a non-zero pending overflow:\n%s", stats)
	}
}

func TestMirroring(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	release := make(chan struct{})
	m := newMesh(t, nil, func(w http.ResponseWriter, _ *http.Request) {
		select { // slow mirror target
		case <-release:
		case <-time.After(3 * time.Second):
		}
		fmt.Fprint(w, "v2")
	})
	defer close(release)
	act := toCluster(cv1)
	act.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: cv2}}
	cp.Set(t, nodeID, m.resources(prefixRoute("mirror", "/", act)))
	p := startProxy(t, cp)
	c := client(p)
	start := time.Now()
	for i := 0; i < 10; i++ {
		if res := get(t, c, svcURL+"/m"); res.body != "v1" {
			t.Fatalf("client saw %q, want only the primary's answer", res.body)
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("10 mirrored requests took %v: a slow mirror delays the main request", el)
	}
	eventually(t, "mirror to see 10 requests", func() bool { return m.v2.hits.Load() == 10 })
	for _, h := range m.v2.seenHosts() {
		if h != "reviews-shadow:9080" {
			t.Fatalf("mirror saw Host %q, want reviews-shadow:9080", h)
		}
	}
}

func TestOutlierDetection(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) })
	m.clusters[cAll].OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(3),
		Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionPercent: wrapperspb.UInt32(100)}
	// As Istio sends it (minHealthPercent 0): no panic mode, so with every
	// host ejected the proxy answers UH instead of using them all.
	m.clusters[cAll].CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{}}
	cp.Set(t, nodeID, m.resources())
	p := startProxy(t, cp)
	c := client(p)
	fails := 0
	for i := 0; i < 40; i++ {
		if get(t, c, svcURL+"/").status == 500 {
			fails++
		}
	}
	if fails != 3 {
		t.Fatalf("got %d 500s, want exactly 3 before the host is ejected", fails)
	}
	// Eject the remaining host too: no healthy upstream → 503 UH.
	m2 := m.v1
	m2.srv.Close()
	var res result
	for i := 0; i < 5; i++ {
		res = get(t, c, svcURL+"/")
	}
	if res.status != 503 || res.flags != "UH" {
		t.Fatalf("with every host ejected got %d %q, want 503 UH", res.status, res.flags)
	}
}

func TestRetries(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	var n atomic.Int64
	m := newMesh(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/always" || n.Add(1)%3 != 0 {
			http.Error(w, "unavailable", 503)
			return
		}
		fmt.Fprint(w, "v1")
	}, nil)
	act := toCluster(cv1)
	act.RetryPolicy = &routev3.RetryPolicy{RetryOn: "gateway-error,connect-failure,refused-stream", NumRetries: wrapperspb.UInt32(2),
		PerTryTimeout: durationpb.New(time.Second)}
	cp.Set(t, nodeID, m.resources(prefixRoute("retry", "/", act)))
	p := startProxy(t, cp)
	c := client(p)
	for i := 0; i < 5; i++ {
		if res := get(t, c, svcURL+"/x"); res.status != 200 {
			t.Fatalf("request %d: %d %q, want 200 after retries", i, res.status, res.flags)
		}
	}
	if got := m.v1.hits.Load(); got != 15 {
		t.Fatalf("backend saw %d attempts, want 15", got)
	}
	res := get(t, c, svcURL+"/always")
	if res.status != 503 || res.flags != "URX" {
		t.Fatalf("exhausted: got %d %q, want 503 URX", res.status, res.flags)
	}
}

func TestRouteActions(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	rewrite := toCluster(cv1)
	rewrite.PrefixRewrite = "/v2/api/"
	rewrite.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"}
	hdrs := prefixRoute("headers", "/hdr", toCluster(cv1))
	hdrs.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-added", Value: "yes"}}}
	routes := []*routev3.Route{
		{Name: "redirect", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}},
			Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "new.example",
				PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}}},
		{Name: "direct", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/health/[0-9]+"}}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 418,
				Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "teapot"}}}}},
		prefixRoute("rewrite", "/api/", rewrite),
		hdrs,
	}
	cp.Set(t, nodeID, m.resources(routes...))
	p := startProxy(t, cp)
	c := client(p)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	tests := []struct {
		name, path string
		status     int
		check      func(result) error
	}{
		{"redirect", "/old?q=1", 301, func(r result) error {
			if loc := r.header.Get("Location"); loc != "http://new.example/new?q=1" {
				return fmt.Errorf("Location %q", loc)
			}
			return nil
		}},
		{"direct response", "/health/42", 418, func(r result) error {
			if r.body != "teapot" {
				return fmt.Errorf("body %q", r.body)
			}
			return nil
		}},
		{"direct response regex must match whole path", "/health/42x", 200, nil},
		{"prefix and host rewrite", "/api/items?x=1", 200, func(result) error {
			paths, hosts := m.v1.seenPaths(), m.v1.seenHosts()
			if p, h := paths[len(paths)-1], hosts[len(hosts)-1]; p != "/v2/api/items?x=1" || h != "internal.example" {
				return fmt.Errorf("backend saw %q host %q", p, h)
			}
			return nil
		}},
		{"response header added", "/hdr", 200, func(r result) error {
			if r.header.Get("x-added") != "yes" {
				return fmt.Errorf("headers %v", r.header)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := get(t, c, svcURL+tc.path)
			if res.status != tc.status {
				t.Fatalf("status %d, want %d", res.status, tc.status)
			}
			if tc.check != nil {
				if err := tc.check(res); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestNoRouteAndUpstreamFailure(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	m.eps[cv1] = []string{"127.0.0.1:1"} // nothing listens there
	cp.Set(t, nodeID, m.resources(prefixRoute("dead", "/dead", toCluster(cv1))))
	p := startProxy(t, cp)
	c := client(p)
	if res := get(t, c, "http://unknown:9080/"); res.status != 404 || res.flags != "NR" {
		t.Errorf("unknown host: %d %q, want 404 NR", res.status, res.flags)
	}
	if res := get(t, c, "http://reviews:7777/"); res.status != 404 || res.flags != "NR" {
		t.Errorf("unknown port: %d %q, want 404 NR", res.status, res.flags)
	}
	if res := get(t, c, svcURL+"/dead"); res.status != 503 || res.flags != "UF" {
		t.Errorf("dead endpoint: %d %q, want 503 UF", res.status, res.flags)
	}
	if res := get(t, c, svcURL+"/alive"); res.status != 200 {
		t.Errorf("live route: %d", res.status)
	}
}

func TestNACKKeepsServing(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	cp.Set(t, nodeID, m.resources(prefixRoute("v1", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	c := client(p)
	if res := get(t, c, svcURL+"/"); res.body != "v1" {
		t.Fatalf("before: %q", res.body)
	}
	bad := &routev3.Route{Name: "bad", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
		SafeRegex: &matcherv3.RegexMatcher{Regex: "(unclosed"}}}, Action: &routev3.Route_Route{Route: toCluster(cv2)}}
	cp.Set(t, nodeID, m.resources(bad, prefixRoute("v2", "/", toCluster(cv2))))
	select {
	case nack := <-cp.NACKs:
		if !strings.Contains(nack.GetErrorDetail().GetMessage(), "unclosed") {
			t.Errorf("NACK detail %q does not name the bad regex", nack.GetErrorDetail().GetMessage())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NACK for an invalid regex")
	}
	for i := 0; i < 10; i++ {
		if res := get(t, c, svcURL+"/"); res.body != "v1" {
			t.Fatalf("after NACK: %d %q, want the last good config (v1)", res.status, res.body)
		}
	}
	if st := p.XDS().Stats(); st.NACKs == 0 {
		t.Fatalf("xds stats: %+v", st)
	}
	// A later good update is applied.
	cp.Set(t, nodeID, m.resources(prefixRoute("v2", "/", toCluster(cv2))))
	eventually(t, "good update after NACK", func() bool { return get(t, c, svcURL+"/").body == "v2" })
}

func TestControlPlaneRestart(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, nil, nil)
	cp.Set(t, nodeID, m.resources(prefixRoute("v1", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	c := client(p)
	stop := make(chan struct{})
	var fails, total atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			total.Add(1)
			if res := get(t, c, svcURL+"/"); res.status != 200 {
				fails.Add(1)
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	cp.Stop()
	time.Sleep(700 * time.Millisecond)
	if err := cp.Restart(); err != nil {
		t.Fatal(err)
	}
	connects := p.XDS().Stats().Connects
	eventually(t, "reconnect", func() bool { return p.XDS().Stats().Connects > connects || p.XDS().Stats().Connects >= 2 })
	cp.Set(t, nodeID, m.resources(prefixRoute("v2", "/", toCluster(cv2))))
	eventually(t, "update after restart", func() bool { return get(t, c, svcURL+"/").body == "v2" })
	close(stop)
	<-done
	if fails.Load() != 0 {
		t.Fatalf("%d of %d requests failed while the control plane was down", fails.Load(), total.Load())
	}
	t.Logf("%d requests, all succeeded across the control plane restart", total.Load())
}
