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

// TestBothReportersOneEdge scrapes two real stats registries labelled the
// way weft sidecars label one hop: the caller (source reporter) does not
// know the destination app or the connection security ("unknown", as in
// Istio), the callee (destination reporter) does. The hop must count once
// and show mutual TLS.
func TestBothReportersOneEdge(t *testing.T) {
	serve := func(reg *stats.Registry) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			if err := reg.WritePrometheus(w); err != nil {
				t.Error(err)
			}
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	hop := func(reporter, dstApp, sec string) stats.Labels {
		return stats.Labels{
			Reporter: reporter, SourceWorkload: "productpage-v1", SourceWorkloadNamespace: "default", SourceApp: "productpage",
			DestinationWorkload: "reviews-v2", DestinationWorkloadNamespace: "default",
			DestinationService: "reviews.default.svc.cluster.local", DestinationServiceName: "reviews",
			DestinationServiceNamespace: "default", DestinationApp: dstApp,
			RequestProtocol: "http", ResponseCode: "200", ResponseFlags: "-", ConnectionSecurityPolicy: sec,
		}
	}
	caller, callee := stats.NewRegistry(), stats.NewRegistry()
	src := &staticSources{proxies: []ProxyInfo{
		{ID: "pp", Namespace: "default", Workload: "productpage-v1", Labels: map[string]string{"app": "productpage"}, MetricsAddress: serve(caller)},
		{ID: "rv", Namespace: "default", Workload: "reviews-v2", Labels: map[string]string{"app": "reviews"}, MetricsAddress: serve(callee)},
	}}
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	d, err := New(Options{Sources: src, Clock: clock.now, Assets: fstest.MapFS{}})
	if err != nil {
		t.Fatal(err)
	}
	observe := func(n int) {
		for range n {
			caller.ObserveHTTP(hop("source", "unknown", "unknown"), 5, 10, 100)
			callee.ObserveHTTP(hop("destination", "reviews", "mutual_tls"), 4, 10, 100)
		}
	}
	observe(1)
	if err := d.scrapeOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	observe(100)
	clock.advance(10 * time.Second)
	if err := d.scrapeOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	var g Graph
	getJSON(t, d.Handler(), "/api/graph", http.StatusOK, &g)
	e := findEdge(g, svcPP, svcReviews)
	if e == nil || !approx(e.RPS, 10) || !e.MTLS || e.MTLSShare != 1 {
		t.Fatalf("edge = %+v, want 10 rps (not both reporters added) with mTLS share 1; graph %+v", e, g)
	}
}
