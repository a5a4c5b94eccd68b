package otelals

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otellogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

func sampleRecord() *Record {
	return &Record{
		Start: time.Date(2026, 11, 27, 10, 0, 1, 234e6, time.UTC), Duration: 15 * time.Millisecond,
		Method: "GET", Path: "/reviews/1?x=1", Protocol: "HTTP/1.1", Authority: "reviews:9080", Scheme: "http",
		Request:  http.Header{"User-Agent": {"curl/8"}, "X-Request-Id": {"abc"}, "X-Envoy-Original-Path": {"/orig"}},
		Response: http.Header{"X-Envoy-Upstream-Service-Time": {"12"}, http.TrailerPrefix + "Grpc-Status": {"0"}},
		Code:     503, Flags: "UF", Details: "upstream_reset_before_response_started",
		BytesReceived: 10, BytesSent: 91, UpstreamHost: "10.0.0.3:9080", UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local",
		DownstreamRemote: "10.0.0.1:51000", RouteName: "default",
		UpstreamPeer: &Peer{Workload: "reviews-v1", Namespace: "default", App: "reviews", Version: "unknown"},
	}
}

// collector is a real OTLP/gRPC LogsService on 127.0.0.1; block, when
// set, holds every Export until it is closed.
type collector struct {
	collogspb.UnimplementedLogsServiceServer
	mu    sync.Mutex
	reqs  []*collogspb.ExportLogsServiceRequest
	block chan struct{}
	// entered, when set, is signalled (without blocking) when an Export
	// call starts.
	entered chan struct{}
}

func (c *collector) Export(ctx context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	if c.entered != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
	}
	if c.block != nil {
		select {
		case <-c.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	c.mu.Unlock()
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func (c *collector) records() (n int, reqs []*collogspb.ExportLogsServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.reqs {
		for _, rl := range r.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				n += len(sl.GetLogRecords())
			}
		}
	}
	return n, append([]*collogspb.ExportLogsServiceRequest(nil), c.reqs...)
}

func startCollector(t *testing.T, c *collector) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(s, c)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func config(t *testing.T, addr string, flush time.Duration) *Config {
	t.Helper()
	c, err := FromXDS(&otellogv3.OpenTelemetryAccessLogConfig{
		CommonConfig: &grpclogv3.CommonGrpcAccessLogConfig{LogName: "weft-test",
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: "outbound|4317||otel.example", Authority: "otel.example"}}},
			FilterStateObjectsToLog: []string{"upstream_peer", "downstream_peer"}},
		Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "%REQ(:METHOD)% %RESPONSE_CODE%"}},
		Attributes: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{
			{Key: "code", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "%RESPONSE_CODE%"}}},
			{Key: "cluster", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "%UPSTREAM_CLUSTER%"}}}}},
		BufferFlushInterval: durationpb.New(flush),
	}, func(cl string) string {
		if cl == "outbound|4317||otel.example" {
			return addr
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExportRecords(t *testing.T) {
	t.Parallel()
	col := &collector{}
	addr := startCollector(t, col)
	e := NewExporter(Options{Node: Node{Name: "sidecar~10.0.0.1~a.default~default.svc.cluster.local", Cluster: "a.default"}})
	defer e.Close()
	c := config(t, addr, 50*time.Millisecond)
	r := sampleRecord()
	r.TraceID, r.SpanID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	for range 3 {
		e.Log(c, r)
	}
	waitFor(t, "3 records", func() bool { n, _ := col.records(); return n == 3 })
	_, reqs := col.records()
	rl := reqs[0].GetResourceLogs()[0]
	res := map[string]string{}
	for _, kv := range rl.GetResource().GetAttributes() {
		res[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if res["log_name"] != "weft-test" || res["cluster_name"] != "a.default" || !strings.HasPrefix(res["node_name"], "sidecar~") {
		t.Errorf("resource %v", res)
	}
	lr := rl.GetScopeLogs()[0].GetLogRecords()[0]
	if got := lr.GetBody().GetStringValue(); got != "GET 503" {
		t.Errorf("body %q", got)
	}
	attrs := map[string]string{}
	for _, kv := range lr.GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	want := map[string]string{"code": "503", "cluster": "outbound|9080||reviews.default.svc.cluster.local",
		"upstream_peer": `{"app":"reviews","namespace":"default","workload":"reviews-v1"}`}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q (all %v)", k, attrs[k], v, attrs)
		}
	}
	if _, ok := attrs["downstream_peer"]; ok {
		t.Errorf("downstream_peer logged without a peer: %v", attrs)
	}
	if lr.GetTimeUnixNano() != uint64(r.Start.UnixNano()) || len(lr.GetTraceId()) != 16 || len(lr.GetSpanId()) != 8 {
		t.Errorf("time %d trace %x span %x", lr.GetTimeUnixNano(), lr.GetTraceId(), lr.GetSpanId())
	}
	waitFor(t, "the written counter", func() bool { return e.Written.Load() == 3 })
	if e.Dropped.Load() != 0 {
		t.Errorf("written %d dropped %d", e.Written.Load(), e.Dropped.Load())
	}
}

// TestBoundedQueue: a collector that never answers fills the queue; Log
// keeps returning at once and counts what it drops; once the collector
// answers, what was queued arrives.
func TestBoundedQueue(t *testing.T) {
	t.Parallel()
	col := &collector{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	addr := startCollector(t, col)
	const queue = 8
	e := NewExporter(Options{QueueSize: queue, Timeout: 30 * time.Second})
	defer e.Close()
	c := config(t, addr, 10*time.Millisecond)
	r := sampleRecord()
	e.Log(c, r)
	// The first record is taken into an export that hangs.
	select {
	case <-col.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no export started")
	}
	start := time.Now()
	const n = 1000
	for range n {
		e.Log(c, r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%d Log calls took %v with the collector stuck", n, d)
	}
	if got := e.Dropped.Load(); got != n-queue {
		t.Errorf("dropped %d, want %d", got, n-queue)
	}
	close(col.block)
	waitFor(t, "queued records", func() bool { got, _ := col.records(); return got == queue+1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if e.Written.Load() != queue+1 {
		t.Errorf("written %d, want %d", e.Written.Load(), queue+1)
	}
}

// TestCollectorDown: with nothing listening, exports fail, the records
// are counted as dropped and Log never blocks.
func TestCollectorDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e := NewExporter(Options{Timeout: 2 * time.Second})
	defer e.Close()
	c := config(t, addr, 10*time.Millisecond)
	for range 10 {
		e.Log(c, sampleRecord())
	}
	waitFor(t, "the failed export to be counted", func() bool { return e.Dropped.Load() == 10 })
	if e.Written.Load() != 0 {
		t.Errorf("written %d", e.Written.Load())
	}
}

func TestFromXDSErrors(t *testing.T) {
	t.Parallel()
	str := func(s string) *commonpb.AnyValue {
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
	}
	gs := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|4317||otel"}}}
	cases := []struct {
		name string
		cfg  *otellogv3.OpenTelemetryAccessLogConfig
		err  string
	}{
		{"no service", &otellogv3.OpenTelemetryAccessLogConfig{}, "want envoy_grpc"},
		{"bad body", &otellogv3.OpenTelemetryAccessLogConfig{GrpcService: gs, Body: str("%NOPE%")}, "unknown command operator %NOPE%"},
		{"bad attribute", &otellogv3.OpenTelemetryAccessLogConfig{GrpcService: gs,
			Attributes: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{{Key: "k", Value: str("%REQ(:PATH%")}}}}, `attribute "k"`},
		{"kvlist body", &otellogv3.OpenTelemetryAccessLogConfig{GrpcService: gs, Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 1}}}, "string_value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromXDS(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
			if errors.Is(err, ErrUnknownOperator) != strings.Contains(tc.err, "unknown command") {
				t.Errorf("errors.Is(ErrUnknownOperator) wrong for %v", err)
			}
		})
	}
	c, err := FromXDS(&otellogv3.OpenTelemetryAccessLogConfig{GrpcService: gs}, nil)
	if err != nil || c.Addr != "otel:4317" || !c.Builtin {
		t.Fatalf("fallback address: %+v %v", c, err)
	}
}
