package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// otlpSpans collects OTLP spans with their resource's service.name.
type otlpSpans struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []otlpSpan
}

type otlpSpan struct {
	service string
	span    *tracepb.Span
}

func (o *otlpSpans) add(req *coltracepb.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans = append(o.spans, otlpSpan{svc, s})
			}
		}
	}
}

func (o *otlpSpans) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	o.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (o *otlpSpans) list() []otlpSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]otlpSpan(nil), o.spans...)
}

// TestTelemetryOTLP runs a control plane whose mesh config defines two
// OpenTelemetry providers and whose Telemetry resources send every
// workload's spans (100 %) over OTLP/gRPC, except the server workload's
// inbound spans, which go over OTLP/HTTP; access logs are limited to
// errors (response.code >= 400). Real OTLP receivers check the result.
func TestTelemetryOTLP(t *testing.T) {
	harness.SkipShort(t)
	// OTLP/gRPC receiver.
	grpcRcv := &otlpSpans{}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, grpcRcv)
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(gs.Stop)
	// OTLP/HTTP receiver (protobuf).
	httpRcv := &otlpSpans{}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := &coltracepb.ExportTraceServiceRequest{}
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, req) != nil {
			http.Error(w, "bad OTLP request", http.StatusBadRequest)
			return
		}
		httpRcv.add(req)
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = hs.Serve(hl) }()
	t.Cleanup(func() { hs.Close() })
	_, gport, _ := net.SplitHostPort(gl.Addr().String())
	_, hport, _ := net.SplitHostPort(hl.Addr().String())

	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "failed", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "traceparent=%s", r.Header.Get("traceparent"))
	})}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(al) }()
	t.Cleanup(func() { app.Close() })
	appPort := al.Addr().(*net.TCPAddr).Port

	dir, configDir := t.TempDir(), t.TempDir()
	meshFile := filepath.Join(dir, "mesh.yaml")
	mesh := fmt.Sprintf(`extensionProviders:
- name: otel-grpc
  opentelemetry: {service: 127.0.0.1, port: %s}
- name: otel-http
  opentelemetry:
    service: 127.0.0.1
    port: %s
    http: {path: /v1/traces}
`, gport, hport)
	telemetry := `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: weft-system}
spec:
  tracing:
  - providers: [{name: otel-grpc}]
    randomSamplingPercentage: 100
    customTags:
      env: {literal: {value: e2e}}
  accessLogging:
  - filter: {expression: "response.code >= 400"}
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: server-inbound, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  tracing:
  - match: {mode: SERVER}
    providers: [{name: otel-http}]
`
	for f, c := range map[string]string{meshFile: mesh, filepath.Join(configDir, "telemetry.yaml"): telemetry} {
		if err := os.WriteFile(f, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--mesh-config", meshFile,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")

	bin := weft.Binary(t)
	startProxy := func(workload string, extra ...string) (*harness.Process, string) {
		ready := filepath.Join(t.TempDir(), workload+".json")
		args := append([]string{"proxy", "--control-plane", xds, "--namespace", "default", "--workload", workload + "-v1",
			"--labels", "app=" + workload, "--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
			"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready,
			"--access-log", filepath.Join(dir, workload+"-access.log")}, extra...)
		p := harness.Start(t, bin, nil, args...)
		var a struct{ Outbound string }
		if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, p)), &a); err != nil {
			t.Fatal(err)
		}
		return p, a.Outbound
	}
	startProxy("server", "--app-port", strconv.Itoa(appPort), "--service", "server:8080/http")
	_, clientOut := startProxy("client")

	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+clientOut+path, nil)
		req.Host = "server:8080"
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Wait until the route exists and tracing is configured (the app sees a
	// sampled traceparent).
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get("/ok")
		if code == 200 && strings.HasSuffix(body, "-01") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no traced 200 through the mesh: %d %q", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := get("/fail"); code != 500 {
		t.Fatalf("/fail answered %d", code)
	}

	// The client's CLIENT span reaches the gRPC receiver, the server's
	// SERVER span the HTTP receiver, in one trace with the right parent.
	var client, server *otlpSpan
	deadline = time.Now().Add(15 * time.Second)
	for client == nil || server == nil {
		if time.Now().After(deadline) {
			t.Fatalf("spans missing: gRPC receiver %d spans, HTTP receiver %d spans", len(grpcRcv.list()), len(httpRcv.list()))
		}
		time.Sleep(200 * time.Millisecond)
		for _, c := range grpcRcv.list() {
			if c.span.GetKind() != tracepb.Span_SPAN_KIND_CLIENT || c.service != "client.default" || !strings.HasSuffix(attr(c.span, "http.url"), "/fail") {
				continue
			}
			for _, s := range httpRcv.list() {
				if s.span.GetKind() == tracepb.Span_SPAN_KIND_SERVER && string(s.span.GetTraceId()) == string(c.span.GetTraceId()) {
					client, server = &c, &s
				}
			}
		}
	}
	if string(server.span.GetParentSpanId()) != string(client.span.GetSpanId()) || server.service != "server.default" {
		t.Errorf("server span parent %x (service %s), want the client span %x", server.span.GetParentSpanId(), server.service, client.span.GetSpanId())
	}
	if attr(client.span, "env") != "e2e" || attr(client.span, "http.status_code") != "500" || client.span.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("client span attributes/status: %v %v", client.span.GetAttributes(), client.span.GetStatus())
	}
	for _, s := range grpcRcv.list() {
		if s.service == "server.default" && s.span.GetKind() == tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("the server's inbound span went to the gRPC provider despite its workload Telemetry")
		}
	}
	// Access logs hold the 500 (with its trace id) and not the 200s.
	traceID := hex.EncodeToString(client.span.GetTraceId())
	for _, w := range []string{"client", "server"} {
		b, err := os.ReadFile(filepath.Join(dir, w+"-access.log"))
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		if !strings.Contains(log, `"response_code":500`) || !strings.Contains(log, `"trace_id":"`+traceID+`"`) || strings.Contains(log, `"response_code":200`) {
			t.Errorf("%s access log (filter response.code >= 400):\n%s", w, log)
		}
	}
}

func attr(s *tracepb.Span, k string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == k {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}
