package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/weftmesh/weft/pkg/config"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// bookinfo is a dashboard scraping fake productpage and reviews proxies.
type bookinfo struct {
	d           *Dashboard
	clock       *fakeClock
	src         *staticSources
	productpage *fakeProxy
	reviews     *fakeProxy
}

func newBookinfo(t *testing.T) *bookinfo {
	t.Helper()
	b := &bookinfo{
		clock:       &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		productpage: newFakeProxy(t),
		reviews:     newFakeProxy(t),
	}
	b.src = &staticSources{proxies: []ProxyInfo{proxyInfo("productpage", b.productpage), proxyInfo("reviews", b.reviews)}}
	d, err := New(Options{Sources: b.src, Clock: b.clock.now, ScrapeInterval: 5 * time.Second,
		Assets: fstest.MapFS{"index.html": {Data: []byte("<html>spa</html>")}, "assets/app.js": {Data: []byte("js")}}})
	if err != nil {
		t.Fatal(err)
	}
	b.d = d
	return b
}

func (b *bookinfo) scrape(t *testing.T) {
	t.Helper()
	if err := b.d.scrapeOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (b *bookinfo) graph(t *testing.T) Graph {
	t.Helper()
	var g Graph
	getJSON(t, b.d.Handler(), "/api/graph", http.StatusOK, &g)
	return g
}

func getJSON(t *testing.T, h http.Handler, path string, wantCode int, into any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != wantCode {
		t.Fatalf("GET %s = %d, want %d: %s", path, rec.Code, wantCode, rec.Body.String())
	}
	if into != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
			t.Fatalf("GET %s: decode: %v\n%s", path, err, rec.Body.String())
		}
	}
}

func findEdge(g Graph, src, dst string) *Edge {
	for i := range g.Edges {
		if g.Edges[i].Source == src && g.Edges[i].Target == dst {
			return &g.Edges[i]
		}
	}
	return nil
}

func findNode(g Graph, id string) *Node {
	for i := range g.Nodes {
		if g.Nodes[i].ID == id {
			return &g.Nodes[i]
		}
	}
	return nil
}

func approx(a, b float64) bool { return math.Abs(a-b) < 0.01 }

var (
	ppReviewsOK  = call{reporter: "source", srcApp: "productpage", dstApp: "reviews", code: 200, mtls: true}
	ppReviews503 = call{reporter: "source", srcApp: "productpage", dstApp: "reviews", code: 503, flags: "UF", mtls: true}
	// The same requests as the reviews proxy reports them: must not be double counted.
	ppReviewsOKDst = call{reporter: "destination", srcApp: "productpage", dstApp: "reviews", code: 200, mtls: true}
	ppDetailsOK    = call{reporter: "source", srcApp: "productpage", dstApp: "details", code: 200, mtls: true}
	reviewsRatings = call{reporter: "source", srcApp: "reviews", dstApp: "ratings", code: 200}
	ingressPP      = call{reporter: "destination", dstApp: "productpage", code: 200}
)

const (
	svcPP      = "svc:default/productpage"
	svcReviews = "svc:default/reviews"
	svcDetails = "svc:default/details"
	svcRatings = "svc:default/ratings"
)

func TestScrapeRatesErrorsP99AndMTLS(t *testing.T) {
	b := newBookinfo(t)
	// Counters exist before the dashboard starts: the first scrape is a baseline.
	b.productpage.add(ppReviewsOK, 1000, 3)
	b.src.proxies = append(b.src.proxies,
		ProxyInfo{ID: "a", Namespace: "default", Workload: "details-v1", Labels: map[string]string{"app": "details"}},
		ProxyInfo{ID: "b", Namespace: "default", Workload: "reviews-v3", Labels: map[string]string{"app": "reviews"}},
		ProxyInfo{ID: "c", Namespace: "istio-system", Workload: "ingressgateway"})
	b.scrape(t)
	g := b.graph(t)
	if len(g.Edges) != 1 || g.Edges[0].Requests != 0 {
		t.Fatalf("after baseline scrape: edges %+v, want one idle edge", g.Edges)
	}
	// Proxies without traffic are idle nodes: details by its app label, the
	// gateway as a workload; reviews-v3 joins the existing reviews service.
	for _, id := range []string{svcDetails, "wl:istio-system/ingressgateway"} {
		if n := findNode(g, id); n == nil || n.Health != HealthIdle {
			t.Errorf("idle node %s = %+v", id, n)
		}
	}
	if n := findNode(g, svcReviews); n == nil || strings.Join(n.Workloads, ",") != "reviews-v1,reviews-v3" {
		t.Errorf("reviews node = %+v, want workloads reviews-v1,reviews-v3", n)
	}
	b.src.proxies = b.src.proxies[:2]

	b.clock.advance(10 * time.Second)
	b.productpage.add(ppReviewsOK, 100, 20)
	b.productpage.add(ppReviews503, 10, 600)
	b.reviews.add(ppReviewsOKDst, 100, 18)
	b.productpage.add(ppDetailsOK, 50, 4)
	b.reviews.add(reviewsRatings, 30, 7)
	b.reviews.add(ingressPP, 20, 40) // reported by reviews only to keep the test small
	b.scrape(t)

	g = b.graph(t)
	tests := []struct {
		src, dst    string
		rps, errs   float64
		p99         float64
		mtls        bool
		wantPresent bool
	}{
		// 110 requests in 10 s; 10 are 503; p99 rank 108.9 falls in (500,1000]
		// holding 10 requests above 100: 500 + 500*8.9/10 = 945.
		{svcPP, svcReviews, 11, 10.0 / 110, 945, true, true},
		// 50 requests at 4 ms: rank 49.5 in (1,5] holding all 50: 1 + 4*49.5/50.
		{svcPP, svcDetails, 5, 0, 4.96, true, true},
		{svcReviews, svcRatings, 3, 0, 9.95, false, true},
		{"unknown", svcPP, 2, 0, 49.75, false, true},
		{svcReviews, svcPP, 0, 0, 0, false, false},
	}
	for _, tc := range tests {
		e := findEdge(g, tc.src, tc.dst)
		if !tc.wantPresent {
			if e != nil {
				t.Errorf("edge %s -> %s present, want absent", tc.src, tc.dst)
			}
			continue
		}
		if e == nil {
			t.Fatalf("edge %s -> %s missing; edges: %+v", tc.src, tc.dst, g.Edges)
		}
		if !approx(e.RPS, tc.rps) || !approx(e.ErrorRate, tc.errs) || !approx(e.P99Ms, tc.p99) || e.MTLS != tc.mtls {
			t.Errorf("edge %s -> %s = rps %v err %v p99 %v mtls %v; want %v %v %v %v",
				tc.src, tc.dst, e.RPS, e.ErrorRate, e.P99Ms, e.MTLS, tc.rps, tc.errs, tc.p99, tc.mtls)
		}
	}
	if len(g.Nodes) != 5 { // productpage, reviews, details, ratings, unknown
		t.Errorf("nodes = %+v, want 5", g.Nodes)
	}
	if n := findNode(g, svcReviews); n == nil || n.Health != HealthDegraded || !approx(n.Inbound.RPS, 11) {
		t.Errorf("reviews node = %+v, want degraded (9%% errors) with 11 rps inbound", n)
	}
	if n := findNode(g, svcDetails); n == nil || n.Health != HealthHealthy {
		t.Errorf("details node = %+v, want healthy", n)
	}

	// Another 10 s without traffic: the 1m window now covers 20 s.
	b.clock.advance(10 * time.Second)
	b.scrape(t)
	g = b.graph(t)
	if e := findEdge(g, svcPP, svcReviews); e == nil || !approx(e.RPS, 5.5) {
		t.Errorf("after idle scrape pp->reviews = %+v, want 5.5 rps", e)
	}
	// A 5s window sees only the idle round.
	getJSON(t, b.d.Handler(), "/api/graph?window=5s", http.StatusOK, &g)
	if e := findEdge(g, svcPP, svcReviews); e == nil || e.RPS != 0 || e.Requests != 0 {
		t.Errorf("5s window pp->reviews = %+v, want idle", e)
	}
}

func TestCounterResetAndNewSeries(t *testing.T) {
	b := newBookinfo(t)
	b.productpage.add(ppDetailsOK, 500, 4)
	b.scrape(t)
	b.clock.advance(5 * time.Second)
	b.productpage.reset() // proxy restarted: counters start over
	b.productpage.add(ppDetailsOK, 25, 4)
	b.scrape(t)
	g := b.graph(t)
	if e := findEdge(g, svcPP, svcDetails); e == nil || e.Requests != 25 || !approx(e.RPS, 5) {
		t.Fatalf("after reset pp->details = %+v, want 25 requests at 5 rps", e)
	}
	// A series that appears after the baseline (first 503) counts in full.
	b.clock.advance(5 * time.Second)
	b.productpage.add(ppReviews503, 4, 2)
	b.scrape(t)
	g = b.graph(t)
	if e := findEdge(g, svcPP, svcReviews); e == nil || e.Requests != 4 || e.ErrorRate != 1 {
		t.Fatalf("new series pp->reviews = %+v, want 4 requests all failing", e)
	}
}

func TestServiceAndWorkloadDetail(t *testing.T) {
	b := newBookinfo(t)
	b.scrape(t)
	for i := 1; i <= 3; i++ {
		b.clock.advance(5 * time.Second)
		b.productpage.add(ppReviewsOK, 10*i, 20)
		b.reviews.add(reviewsRatings, 5, 7)
		b.scrape(t)
	}
	var d Detail
	getJSON(t, b.d.Handler(), "/api/services/default/reviews", http.StatusOK, &d)
	if len(d.Series) != 4 {
		t.Fatalf("series = %+v, want 4 points", d.Series)
	}
	wantRPS := []float64{0, 2, 4, 6}
	for i, p := range d.Series {
		if !approx(p.RPS, wantRPS[i]) {
			t.Errorf("series[%d].rps = %v, want %v", i, p.RPS, wantRPS[i])
		}
	}
	// The baseline round covers no time: 60 and 15 requests in 15 s.
	if !approx(d.Inbound.RPS, 4) || !approx(d.Outbound.RPS, 1) {
		t.Errorf("reviews inbound %+v outbound %+v, want 4 and 1 rps", d.Inbound, d.Outbound)
	}
	if len(d.Workloads) != 1 || d.Workloads[0] != "reviews-v1" {
		t.Errorf("workloads = %v", d.Workloads)
	}
	if len(d.InEdges) != 1 || d.InEdges[0].Source != svcPP || len(d.OutEdges) != 1 || d.OutEdges[0].Target != svcRatings {
		t.Errorf("edges in %+v out %+v", d.InEdges, d.OutEdges)
	}

	var wl Detail
	getJSON(t, b.d.Handler(), "/api/workloads/default/reviews-v1", http.StatusOK, &wl)
	if wl.Kind != NodeWorkload || len(wl.Services) != 1 || wl.Services[0] != "reviews" || !approx(wl.Outbound.RPS, 1) {
		t.Errorf("workload detail = %+v", wl)
	}
	var pp Detail
	getJSON(t, b.d.Handler(), "/api/workloads/default/productpage-v1", http.StatusOK, &pp)
	if !approx(pp.Outbound.RPS, 4) || pp.Inbound.Requests != 0 || len(pp.Services) != 0 || len(pp.OutEdges) != 1 {
		t.Errorf("productpage-v1 detail = %+v", pp)
	}

	getJSON(t, b.d.Handler(), "/api/services/default/nope", http.StatusNotFound, nil)
	getJSON(t, b.d.Handler(), "/api/services/default/reviews?window=banana", http.StatusBadRequest, nil)
	getJSON(t, b.d.Handler(), "/api/graph?window=-5s", http.StatusBadRequest, nil)
}

func TestErrorsAPI(t *testing.T) {
	b := newBookinfo(t)
	b.scrape(t)
	b.clock.advance(5 * time.Second)
	b.productpage.add(ppReviews503, 7, 2)
	b.productpage.add(call{reporter: "source", srcApp: "productpage", dstApp: "details", code: 404}, 2, 1)
	b.productpage.add(ppDetailsOK, 9, 1)
	b.scrape(t)
	var evs []ErrorEvent
	getJSON(t, b.d.Handler(), "/api/errors", http.StatusOK, &evs)
	if len(evs) != 2 {
		t.Fatalf("errors = %+v, want 2 events", evs)
	}
	got := map[string]ErrorEvent{}
	for _, e := range evs {
		got[e.Destination+" "+e.Code] = e
	}
	if e := got[svcReviews+" 503"]; e.Count != 7 || e.Flags != "UF" || e.Source != svcPP || e.SourceWorkload != "productpage-v1" {
		t.Errorf("503 event = %+v", e)
	}
	if e := got[svcDetails+" 404"]; e.Count != 2 || e.Flags != "-" {
		t.Errorf("404 event = %+v", e)
	}
	// No new errors: nothing is added.
	b.clock.advance(5 * time.Second)
	b.productpage.add(ppDetailsOK, 9, 1)
	b.scrape(t)
	getJSON(t, b.d.Handler(), "/api/errors", http.StatusOK, &evs)
	if len(evs) != 2 {
		t.Errorf("errors after clean round = %d, want 2", len(evs))
	}
}

func TestProxiesAPIAndScrapeFailures(t *testing.T) {
	b := newBookinfo(t)
	b.src.proxies = append(b.src.proxies, ProxyInfo{ID: "router~10.0.0.9~gw.istio-system~x", Sync: map[string]SyncStatus{
		"LDS": {Status: SyncNacked, Error: "unknown filter"}}},
		ProxyInfo{ID: "sidecar~10.0.0.8~old.default~x", Workload: "old", MetricsAddress: b.reviews.addr(), Disconnected: true})
	b.reviews.setFail(true)
	b.scrape(t)
	var ps []ProxyView
	getJSON(t, b.d.Handler(), "/api/proxies", http.StatusOK, &ps)
	if len(ps) != 4 {
		t.Fatalf("proxies = %+v", ps)
	}
	byWorkload := map[string]ProxyView{}
	for _, p := range ps {
		byWorkload[p.Workload] = p
	}
	if p := byWorkload["reviews-v1"]; p.Scrape == nil || !strings.Contains(p.Scrape.Error, "500") {
		t.Errorf("reviews scrape status = %+v, want the 500 error", p.Scrape)
	}
	if p := byWorkload["productpage-v1"]; p.Scrape == nil || p.Scrape.Error != "" || p.Sync["CDS"].Status != SyncSynced {
		t.Errorf("productpage = %+v", p)
	}
	if p := byWorkload[""]; p.Sync["LDS"].Status != SyncNacked || p.Scrape == nil || !strings.Contains(p.Scrape.Error, "METRICS_ADDRESS") {
		t.Errorf("gateway = %+v %+v", p, p.Scrape)
	}

	if p := byWorkload["old"]; p.Scrape == nil || !strings.Contains(p.Scrape.Error, "not connected") {
		t.Errorf("disconnected proxy scrape = %+v, want skipped", p.Scrape)
	}

	b.src.err = errors.New("control plane down")
	getJSON(t, b.d.Handler(), "/api/proxies", http.StatusBadGateway, nil)
	getJSON(t, b.d.Handler(), "/api/config", http.StatusBadGateway, nil)
	if err := b.d.scrapeOnce(context.Background()); err == nil {
		t.Error("scrapeOnce with failing sources: want error")
	}
}

func TestConfigAPIAndSPA(t *testing.T) {
	b := newBookinfo(t)
	rs, err := config.Decode("vs.yaml", []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
`))
	if err != nil {
		t.Fatal(err)
	}
	b.src.resources = rs
	b.src.warnings = []string{"VirtualService default/reviews: subset v1 has no DestinationRule"}
	var cv struct {
		Resources []map[string]any `json:"resources"`
		Warnings  []string         `json:"warnings"`
	}
	getJSON(t, b.d.Handler(), "/api/config", http.StatusOK, &cv)
	if len(cv.Resources) != 1 || cv.Resources[0]["kind"] != "VirtualService" || len(cv.Warnings) != 1 {
		t.Fatalf("config = %+v", cv)
	}

	h := b.d.Handler()
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/", "<html>spa</html>", 200},
		{"/graph/services/reviews", "<html>spa</html>", 200}, // client-side route
		{"/assets/app.js", "js", 200},
		{"/api/nope", `"error"`, 404},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.path, rec.Code, body, tc.code, tc.want)
		}
	}
}

func TestEmbeddedAssets(t *testing.T) {
	d, err := New(Options{Sources: &staticSources{}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	d.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<html") && !strings.Contains(rec.Body.String(), "<!doctype") {
		t.Fatalf("embedded index = %d %q", rec.Code, rec.Body.String())
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without Sources: want error")
	}
}

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
	}{
		{"empty", 0.99, nil, 0},
		{"no observations", 0.99, map[float64]float64{10: 0, inf: 0}, 0},
		{"one bucket interpolates from zero", 0.5, map[float64]float64{10: 100, inf: 100}, 5},
		{"second bucket", 0.99, map[float64]float64{10: 50, 20: 100, inf: 100}, 19.8},
		{"rank in +Inf returns largest bound", 0.99, map[float64]float64{10: 10, 20: 10, inf: 100}, 20},
		{"only +Inf", 0.99, map[float64]float64{inf: 5}, 0},
		// rank 50 is reached in the first bucket already: 10*50/60.
		{"non-monotonic sums are clamped", 0.5, map[float64]float64{10: 60, 20: 50, inf: 100}, 10 * 50.0 / 60},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := quantile(tc.q, tc.buckets)
			if !approx(got, tc.want) {
				t.Errorf("quantile = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseIstioMetrics(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    int
		wantErr bool
	}{
		{"counter and histogram", "# TYPE istio_requests_total counter\n" +
			`istio_requests_total{reporter="source",response_code="200"} 3` + "\n" +
			"# TYPE istio_request_duration_milliseconds histogram\n" +
			`istio_request_duration_milliseconds_bucket{reporter="source",le="10"} 1` + "\n" +
			`istio_request_duration_milliseconds_bucket{reporter="source",le="+Inf"} 3` + "\n" +
			`istio_request_duration_milliseconds_sum{reporter="source"} 3` + "\n" +
			`istio_request_duration_milliseconds_count{reporter="source"} 3` + "\n", 3, false},
		{"untyped counter", `istio_requests_total{response_code="503"} 1` + "\n", 1, false},
		{"other metrics ignored", "# TYPE up gauge\nup 1\n", 0, false},
		{"garbage", "istio_requests_total{oops 1\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseIstioMetrics(strings.NewReader(tc.text))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(got) != tc.want {
				t.Errorf("samples = %d (%v), want %d", len(got), got, tc.want)
			}
		})
	}
}
