package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	statsv1 "istio.io/api/envoy/extensions/stats"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/tracing"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
	"github.com/weftmesh/weft/pkg/tracecollector"
)

// withTracing sets the HCM tracing of listener l: Zipkin to collector at
// sampling percent (collector "" = no provider: propagation only).
func withTracing(t testing.TB, l *listenerv3.Listener, collector string, sampling float64) *listenerv3.Listener {
	t.Helper()
	f := l.FilterChains[0].Filters[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	h.Tracing = &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: sampling}}
	if collector != "" {
		zc, _ := anypb.New(&tracev3.ZipkinConfig{CollectorCluster: "outbound|" + strings.Split(collector, ":")[1] + "||" + strings.Split(collector, ":")[0],
			CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, CollectorHostname: collector})
		h.Tracing.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: zc}}
	}
	a, _ := anypb.New(h)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	return l
}

// TestOutboundTracing: the outbound listener continues an incoming W3C
// context, sends the backend its own span's context (B3 and W3C, x-request-id
// kept) and exports a CLIENT span to a Zipkin collector; the access log line
// carries the trace and span ids.
func TestOutboundTracing(t *testing.T) {
	col := tracecollector.New(100)
	cs := httptest.NewServer(col.Handler())
	t.Cleanup(cs.Close)
	collector := strings.TrimPrefix(cs.URL, "http://")
	var mu sync.Mutex
	var seen http.Header
	be := startBackend(t, "v1", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	cp := xdstest.Start(t)
	res := &xdstest.Resources{}
	res.Listeners = append(res.Listeners, withTracing(t, xdstest.HTTPListener(9080), collector, 0))
	res.Routes = append(res.Routes, xdstest.RouteConfig(9080, "reviews", xdstest.ToCluster("r", cAll)))
	res.Clusters = append(res.Clusters, xdstest.EDSCluster(cAll))
	res.Endpoints = append(res.Endpoints, xdstest.Endpoints(cAll, "reviews-v1", be.addr))
	cp.Set(t, nodeID, res)
	var logBuf syncBuffer
	p := startProxy(t, cp, func(o *proxy.Options) { o.AccessLog = &logBuf })
	c := client(p)
	const trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := get(t, c, svcURL+"/reviews/1", "traceparent", "00-"+trace+"-"+parent+"-01", "x-request-id", "req-1")
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d", r.status)
	}
	mu.Lock()
	h := seen
	mu.Unlock()
	sc, ok := tracing.Extract(h)
	if !ok || sc.TraceID.String() != trace || sc.SpanID.String() == parent || !sc.Sampled {
		t.Fatalf("backend got trace context %+v (headers %v)", sc, h)
	}
	if h.Get("X-B3-Parentspanid") != parent || h.Get("X-B3-Traceid") != trace || h.Get("X-Request-Id") != "req-1" {
		t.Fatalf("backend headers %v", h)
	}
	var spans []tracecollector.Span
	eventually(t, "span exported", func() bool {
		spans = col.Trace(trace)
		return len(spans) == 1
	})
	s := spans[0]
	if s.ID != sc.SpanID.String() || s.ParentID != parent || s.Kind != "CLIENT" || s.Tags["error"] != "true" ||
		s.Tags["http.status_code"] != "503" || s.Tags["upstream_cluster"] != cAll || s.Tags["guid:x-request-id"] != "req-1" ||
		s.LocalEndpoint.ServiceName != "productpage.default" {
		t.Fatalf("span %+v", s)
	}
	eventually(t, "access log line", func() bool {
		return strings.Contains(logBuf.String(), `"trace_id":"`+trace+`","span_id":"`+sc.SpanID.String()+`"`)
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// BenchmarkProxyRequestTracing measures the outbound request path with
// tracing off (no HCM tracing), on with 0 % sampling (headers only) and on
// at 100 % exporting to a Zipkin collector.
func BenchmarkProxyRequestTracing(b *testing.B) {
	col := tracecollector.New(1000)
	cs := httptest.NewServer(col.Handler())
	b.Cleanup(cs.Close)
	for _, bc := range []struct {
		name      string
		collector string
		sampling  float64
		on        bool
	}{{"off", "", 0, false}, {"sampled-0pct", "", 0, true}, {"sampled-100pct", strings.TrimPrefix(cs.URL, "http://"), 100, true}} {
		b.Run(bc.name, func(b *testing.B) {
			cp := xdstest.Start(b)
			be := startBackend(b, "v1", nil)
			l := xdstest.HTTPListener(9080)
			if bc.on {
				l = withTracing(b, l, bc.collector, bc.sampling)
			}
			cp.Set(b, nodeID, oneRoute(l, be.addr))
			benchGets(b, client(startProxy(b, cp)))
		})
	}
}

// TestMetricsOverrides: an istio.stats filter (Telemetry metrics overrides)
// drops istio_request_bytes and removes labels (old and new standard
// ones) from the outbound metrics; other metrics keep their labels.
func TestMetricsOverrides(t *testing.T) {
	be := startBackend(t, "v1", nil)
	cp := xdstest.Start(t)
	l := xdstest.HTTPListener(9080)
	f := l.FilterChains[0].Filters[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	pc, _ := anypb.New(&statsv1.PluginConfig{Metrics: []*statsv1.MetricConfig{
		{Name: "request_bytes", Drop: true},
		{Name: "requests_total", TagsToRemove: []string{"request_protocol", "source_principal", "destination_canonical_revision", "grpc_response_status"}},
	}})
	h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "istio.stats", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: pc}}}, h.HttpFilters...)
	a, _ := anypb.New(h)
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	res := &xdstest.Resources{}
	res.Listeners = append(res.Listeners, l)
	res.Routes = append(res.Routes, xdstest.RouteConfig(9080, "reviews", xdstest.ToCluster("r", cAll)))
	res.Clusters = append(res.Clusters, xdstest.EDSCluster(cAll))
	res.Endpoints = append(res.Endpoints, xdstest.Endpoints(cAll, "reviews-v1", be.addr))
	cp.Set(t, nodeID, res)
	p := startProxy(t, cp)
	if r := get(t, client(p), svcURL+"/x"); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	resp, err := http.Get("http://" + p.Addresses().Metrics + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := string(b)
	var reqLine string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "istio_requests_total{") {
			reqLine = line
		}
		if strings.HasPrefix(line, "istio_request_bytes_") {
			t.Errorf("dropped metric rendered: %s", line)
		}
	}
	if reqLine == "" || strings.Contains(reqLine, "request_protocol=") || !strings.Contains(reqLine, `response_code="200"`) ||
		strings.Contains(reqLine, "source_principal=") || strings.Contains(reqLine, "destination_canonical_revision=") ||
		strings.Contains(reqLine, "grpc_response_status=") || !strings.Contains(reqLine, `destination_principal="unknown"`) {
		t.Errorf("istio_requests_total line %q", reqLine)
	}
	if !strings.Contains(out, "istio_request_duration_milliseconds_count{") {
		t.Errorf("duration histogram missing:\n%s", out)
	}
}
