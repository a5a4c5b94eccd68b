package tracing

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

type seqRand struct {
	mu sync.Mutex
	n  uint64
}

func (s *seqRand) Uint64() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n += 0x9e3779b97f4a7c15
	return s.n
}

func TestExtract(t *testing.T) {
	cases := []struct {
		name    string
		hdr     map[string]string
		ok      bool
		trace   string
		span    string
		sampled bool
		set     bool
	}{
		{"w3c sampled", map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, true, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true, true},
		{"w3c not sampled", map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}, true, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false, true},
		{"w3c zero trace", map[string]string{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, false, "", "", false, false},
		{"w3c bad version length", map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"}, false, "", "", false, false},
		{"b3 multi 64-bit", map[string]string{"x-b3-traceid": "a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7", "x-b3-sampled": "1"}, true, "0000000000000000a3ce929d0e0e4736", "00f067aa0ba902b7", true, true},
		{"b3 multi debug", map[string]string{"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7", "x-b3-flags": "1"}, true, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true, true},
		{"b3 multi no decision", map[string]string{"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "00f067aa0ba902b7"}, true, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false, false},
		{"b3 single", map[string]string{"b3": "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90"}, true, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true, true},
		{"b3 single deny", map[string]string{"b3": "0"}, false, "", "", false, true},
		{"b3 bad span", map[string]string{"x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736", "x-b3-spanid": "xyz"}, false, "", "", false, false},
		{"none", map[string]string{}, false, "", "", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.hdr {
				h.Set(k, v)
			}
			sc, ok := Extract(h)
			if ok != tc.ok || sc.Sampled != tc.sampled || sc.SampledSet != tc.set {
				t.Fatalf("Extract = %+v ok=%v, want ok=%v sampled=%v set=%v", sc, ok, tc.ok, tc.sampled, tc.set)
			}
			if ok && (sc.TraceID.String() != tc.trace || sc.SpanID.String() != tc.span) {
				t.Fatalf("ids %s/%s, want %s/%s", sc.TraceID, sc.SpanID, tc.trace, tc.span)
			}
		})
	}
}

func TestStartPropagates(t *testing.T) {
	cfg := &Config{SamplePerMillion: 0, ForcePerMillion: 1_000_000}
	rnd := &seqRand{}
	// An incoming sampled W3C context is continued even at 0 % sampling.
	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("tracestate", "congo=t61rcWkgMzE")
	h.Set("b3", "x") // present: rewritten in single form too
	sp := Start(cfg, h, Server, rnd, time.Now())
	if sp == nil || sp.Ctx.TraceID.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sp.Parent.String() != "00f067aa0ba902b7" {
		t.Fatalf("span %+v", sp)
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + sp.Ctx.SpanID.String() + "-01"
	if got := h.Get("traceparent"); got != want {
		t.Fatalf("traceparent %q, want %q", got, want)
	}
	if h.Get("tracestate") != "congo=t61rcWkgMzE" || h.Get("x-b3-traceid") != "4bf92f3577b34da6a3ce929d0e0e4736" ||
		h.Get("x-b3-spanid") != sp.Ctx.SpanID.String() || h.Get("x-b3-parentspanid") != "00f067aa0ba902b7" || h.Get("x-b3-sampled") != "1" {
		t.Fatalf("headers %v", h)
	}
	if got := h.Get("b3"); got != "4bf92f3577b34da6a3ce929d0e0e4736-"+sp.Ctx.SpanID.String()+"-1-00f067aa0ba902b7" {
		t.Fatalf("b3 %q", got)
	}
	// An incoming "not sampled" decision is honoured at 100 %, and still propagated.
	cfg100 := &Config{SamplePerMillion: 1_000_000}
	h = http.Header{}
	h.Set("x-b3-traceid", "a3ce929d0e0e4736")
	h.Set("x-b3-spanid", "00f067aa0ba902b7")
	h.Set("x-b3-sampled", "0")
	if sp := Start(cfg100, h, Client, rnd, time.Now()); sp != nil {
		t.Fatal("not-sampled request produced a span")
	}
	if h.Get("x-b3-sampled") != "0" || !strings.HasSuffix(h.Get("traceparent"), "-00") || h.Get("x-b3-traceid") != "0000000000000000a3ce929d0e0e4736" {
		t.Fatalf("headers %v", h)
	}
	// Forced tracing at 0 %.
	h = http.Header{}
	h.Set("x-client-trace-id", "anything")
	if Start(cfg, h, Server, rnd, time.Now()) == nil {
		t.Fatal("x-client-trace-id did not force sampling")
	}
	// Random sampling: about 10 % of 20000 new traces.
	cfg10 := &Config{SamplePerMillion: 100_000}
	n := 0
	for range 20000 {
		if Start(cfg10, http.Header{}, Server, rnd, time.Now()) != nil {
			n++
		}
	}
	if n < 1500 || n > 2500 {
		t.Fatalf("10%% sampling kept %d of 20000", n)
	}
}

func TestZipkinExportAndDrop(t *testing.T) {
	var mu sync.Mutex
	var got []ZipkinSpan
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/spans" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad", 400)
			return
		}
		var b []ZipkinSpan
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		got = append(got, b...)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	tr := NewTracer(Options{FlushInterval: 20 * time.Millisecond})
	t.Cleanup(func() { _ = tr.Close() })
	cfg := &Config{Provider: Zipkin, Addr: strings.TrimPrefix(srv.URL, "http://"), Path: "/api/v2/spans", SamplePerMillion: 1_000_000}
	h := http.Header{}
	sp := Start(cfg, h, Server, &seqRand{}, time.Now())
	sp.Service = "reviews.default"
	sp.Name = "reviews.default.svc.cluster.local:9080/*"
	sp.Tag("http.status_code", "503")
	sp.Error = true
	sp.Local = "127.0.0.1:15006"
	tr.Finish(sp, sp.Start.Add(3*time.Millisecond))
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("span not exported")
		}
		time.Sleep(10 * time.Millisecond)
	}
	z := got[0]
	if z.TraceID != sp.Ctx.TraceID.String() || z.ID != sp.Ctx.SpanID.String() || z.Kind != "SERVER" || z.Duration != 3000 ||
		z.Tags["error"] != "true" || z.Tags["http.status_code"] != "503" || z.LocalEndpoint.ServiceName != "reviews.default" || z.LocalEndpoint.Port != 15006 {
		t.Fatalf("zipkin span %+v", z)
	}
	// A blocked exporter never blocks Finish: the queue fills and drops.
	block := make(chan struct{})
	tr2 := NewTracer(Options{QueueSize: 4, BatchSize: 1, NewExporter: func(context.Context, *Config) (Exporter, error) {
		return blockingExp{block}, nil
	}})
	t.Cleanup(func() { close(block); _ = tr2.Close() })
	start := time.Now()
	for range 100 {
		tr2.Finish(Start(cfg, http.Header{}, Client, &seqRand{}, time.Now()), time.Now())
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Finish blocked for %v", el)
	}
	if d := tr2.Dropped.Load(); d < 90 {
		t.Fatalf("dropped %d, want >= 90", d)
	}
}

type blockingExp struct{ ch chan struct{} }

func (b blockingExp) Export(ctx context.Context, _ []*Span) error {
	select {
	case <-b.ch:
	case <-ctx.Done():
	}
	return nil
}
func (b blockingExp) Shutdown(context.Context) error { return nil }

// otlpReceiver is a real OTLP/gRPC trace collector endpoint.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu  sync.Mutex
	req []*coltracepb.ExportTraceServiceRequest
}

func (o *otlpReceiver) Export(_ context.Context, r *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	o.mu.Lock()
	o.req = append(o.req, r)
	o.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func TestOTLPExport(t *testing.T) {
	// gRPC receiver.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, rcv)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	// HTTP receiver (OTLP/HTTP protobuf).
	var httpBodies [][]byte
	var mu sync.Mutex
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad "+r.URL.Path, 400)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		httpBodies = append(httpBodies, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	t.Cleanup(hs.Close)

	tr := NewTracer(Options{FlushInterval: 20 * time.Millisecond})
	rnd := &seqRand{}
	for _, cfg := range []*Config{
		{Provider: OTLPGRPC, Addr: lis.Addr().String(), SamplePerMillion: 1_000_000},
		{Provider: OTLPHTTP, Addr: strings.TrimPrefix(hs.URL, "http://"), Path: "/v1/traces", SamplePerMillion: 1_000_000},
	} {
		h := http.Header{}
		h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		sp := Start(cfg, h, Client, rnd, time.Now())
		sp.Service, sp.Name = "productpage.default", "reviews:9080/*"
		sp.Tag("http.method", "GET")
		tr.Finish(sp, time.Now())
	}
	if err := tr.Close(); err != nil { // flushes
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.req) != 1 {
		t.Fatalf("gRPC receiver got %d requests", len(rcv.req))
	}
	rs := rcv.req[0].GetResourceSpans()
	span := rs[0].GetScopeSpans()[0].GetSpans()[0]
	if string(hexs(span.GetTraceId())) != "4bf92f3577b34da6a3ce929d0e0e4736" || string(hexs(span.GetParentSpanId())) != "00f067aa0ba902b7" ||
		span.GetName() != "reviews:9080/*" || span.GetKind().String() != "SPAN_KIND_CLIENT" {
		t.Fatalf("otlp span %v", span)
	}
	if v := rs[0].GetResource().GetAttributes()[0]; v.GetKey() != "service.name" || v.GetValue().GetStringValue() != "productpage.default" {
		t.Fatalf("resource %v", rs[0].GetResource())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(httpBodies) != 1 || !strings.Contains(string(httpBodies[0]), "reviews:9080/*") {
		t.Fatalf("OTLP/HTTP receiver got %d bodies", len(httpBodies))
	}
}

func hexs(b []byte) []byte {
	const d = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, d[c>>4], d[c&15])
	}
	return out
}

func BenchmarkStartSampledOut(b *testing.B) {
	cfg := &Config{SamplePerMillion: 0}
	rnd := &seqRand{}
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		clear(h)
		Start(cfg, h, Server, rnd, time.Time{})
	}
}
