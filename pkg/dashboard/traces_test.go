package dashboard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/pkg/proxy/tracing"
	"github.com/weftmesh/weft/pkg/tracecollector"
)

// sampleTraces is a collector holding one productpage → reviews → ratings
// trace.
func sampleTraces() *tracecollector.Collector {
	c := tracecollector.New(100)
	ep := func(s string) *tracing.ZipkinEndpoint { return &tracing.ZipkinEndpoint{ServiceName: s} }
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	c.Add([]tracecollector.Span{
		{TraceID: tid, ID: "0000000000000001", Name: "productpage.default.svc.cluster.local:9080/*", Kind: "SERVER", Timestamp: 1_000_000, Duration: 9000, LocalEndpoint: ep("productpage.default"), Tags: map[string]string{"http.status_code": "200"}},
		{TraceID: tid, ID: "0000000000000002", ParentID: "0000000000000001", Name: "reviews.default.svc.cluster.local:9080/*", Kind: "CLIENT", Timestamp: 1_001_000, Duration: 6000, LocalEndpoint: ep("productpage.default"), Tags: map[string]string{"http.status_code": "200"}},
		{TraceID: tid, ID: "0000000000000003", ParentID: "0000000000000002", Name: "ratings.default.svc.cluster.local:9080/*", Kind: "SERVER", Timestamp: 1_002_000, Duration: 2000, LocalEndpoint: ep("ratings.default"), Tags: map[string]string{"http.status_code": "503", "error": "true"}},
	})
	return c
}

func TestTracesAPI(t *testing.T) {
	traces := httptest.NewServer(sampleTraces().Handler())
	t.Cleanup(traces.Close)
	noCollector := httptest.NewServer(http.NotFoundHandler()) // a control plane without --zipkin-address
	t.Cleanup(noCollector.Close)
	for _, tc := range []struct {
		name, tracesURL, path string
		code, n               int
	}{
		{"list by service", traces.URL, "/api/traces?service=ratings&limit=5", 200, 1},
		{"list other service", traces.URL, "/api/traces?service=details", 200, 0},
		{"one trace", traces.URL, "/api/traces/4bf92f3577b34da6a3ce929d0e0e4736", 200, 3},
		{"unknown trace", traces.URL, "/api/traces/00000000000000000000000000000abc", 404, 0},
		{"no collector configured", "", "/api/traces", 404, 0},
		{"control plane without collector", noCollector.Listener.Addr().String(), "/api/traces", 404, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := New(Options{Sources: &staticSources{}, TracesURL: tc.tracesURL})
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			d.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.code, rec.Body)
			}
			if tc.code != 200 {
				return
			}
			var v []json.RawMessage
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || len(v) != tc.n {
				t.Fatalf("got %d items (%v): %s", len(v), err, rec.Body)
			}
		})
	}
}
