package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/stats"
)

// TestScrapesWeftProxyStats scrapes the exposition of the real sidecar's
// stats registry (pkg/proxy/stats), not a hand-written imitation, so a
// change in the proxy's metric names or labels breaks this test.
func TestScrapesWeftProxyStats(t *testing.T) {
	reg := stats.NewRegistry()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if err := reg.WritePrometheus(w); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()
	labels := func(code, flags, sec string) stats.Labels {
		return stats.Labels{
			Reporter: "source", SourceWorkload: "productpage-v1", SourceWorkloadNamespace: "default", SourceApp: "productpage",
			DestinationWorkload: "reviews-v2", DestinationWorkloadNamespace: "default",
			DestinationService: "reviews.default.svc.cluster.local", DestinationServiceName: "reviews",
			DestinationServiceNamespace: "default", DestinationApp: "reviews",
			RequestProtocol: "http", ResponseCode: code, ResponseFlags: flags, ConnectionSecurityPolicy: sec,
		}
	}
	reg.ObserveHTTP(labels("200", "-", "mutual_tls"), 3, 10, 100) // before the baseline
	t.Cleanup(reg.OpenTCP(0, stats.Labels{Reporter: "source", SourceWorkload: "productpage-v1"}).Close)

	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	src := &staticSources{proxies: []ProxyInfo{{ID: "pp", Namespace: "default", Workload: "productpage-v1",
		MetricsAddress: strings.TrimPrefix(srv.URL, "http://")}}}
	d, err := New(Options{Sources: src, Clock: clock.now, Assets: fstest.MapFS{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.scrapeOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	for range 90 {
		reg.ObserveHTTP(labels("200", "-", "mutual_tls"), 12, 10, 100)
	}
	for range 10 {
		reg.ObserveHTTP(labels("503", "UO", "mutual_tls"), 0.4, 10, 0)
	}
	clock.advance(10 * time.Second)
	if err := d.scrapeOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	var g Graph
	getJSON(t, d.Handler(), "/api/graph", http.StatusOK, &g)
	e := findEdge(g, svcPP, svcReviews)
	if e == nil || !approx(e.RPS, 10) || !approx(e.ErrorRate, 0.1) || !e.MTLS || e.P99Ms <= 10 || e.P99Ms > 25 {
		t.Fatalf("edge from the proxy's own metrics = %+v; graph %+v", e, g)
	}
	var evs []ErrorEvent
	getJSON(t, d.Handler(), "/api/errors", http.StatusOK, &evs)
	if len(evs) != 1 || evs[0].Flags != "UO" || evs[0].Count != 10 || evs[0].DestWorkload != "reviews-v2" {
		t.Errorf("errors = %+v", evs)
	}
}
