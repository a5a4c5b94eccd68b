package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// msgServer is a gRPC TestService with a unary, a client-streaming and a
// bidirectional method.
type msgServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (msgServer) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (msgServer) UnaryCall(_ context.Context, r *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: r.GetPayload()}, nil
}

func (msgServer) StreamingInputCall(s testgrpc.TestService_StreamingInputCallServer) error {
	size := 0
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(size)})
		}
		if err != nil {
			return err
		}
		size += len(r.GetPayload().GetBody())
	}
}

// StreamingOutputCall sends one message per response parameter and keeps
// the stream open until the client cancels it.
func (msgServer) StreamingOutputCall(r *testgrpc.StreamingOutputCallRequest, s testgrpc.TestService_StreamingOutputCallServer) error {
	for range r.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
	<-s.Context().Done()
	return s.Context().Err()
}

func (msgServer) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	for {
		r, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: r.GetPayload()}); err != nil {
			return err
		}
	}
}

// TestGRPCMessageMetrics sends a unary, a client-streaming (7 messages,
// one of 100 KB, so it spans HTTP/2 DATA frames) and a bidirectional
// call (3 messages each way) from a real gRPC client through two weft
// proxies to a real gRPC server, under a Telemetry that tags both
// message counters with the method (UPSERT, so each call has its own
// series) and disables istio_response_messages_total on the server
// side. The client proxy reports 1/1, 7/1 and 3/3 request/response
// messages; the server proxy 1, 7 and 3 request messages and no response
// message series. The message series carry the peer labels only. With
// a 0.2 s reportingInterval, a server-streaming call that stays open
// shows its messages on both reporters before it ends.
func TestGRPCMessageMetrics(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, msgServer{})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	appPort := lis.Addr().(*net.TCPAddr).Port

	configDir := t.TempDir()
	telemetry := `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: weft-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 0.2s
    overrides:
    - match: {metric: GRPC_REQUEST_MESSAGES}
      tagOverrides:
        rpc: {value: request.url_path}
    - match: {metric: GRPC_RESPONSE_MESSAGES}
      tagOverrides:
        rpc: {value: request.url_path}
    - match: {metric: GRPC_RESPONSE_MESSAGES, mode: SERVER}
      disabled: true
`
	if err := os.WriteFile(filepath.Join(configDir, "telemetry.yaml"), []byte(telemetry), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := weft.Binary(t)
	if r := harness.Run(t, bin, nil, "validate", "-f", configDir); r.ExitCode != 0 || strings.Contains(r.Stdout+r.Stderr, "not generated") {
		t.Fatalf("weft validate: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")

	type addrs struct{ Outbound, Metrics string }
	startProxy := func(workload string, extra ...string) addrs {
		ready := filepath.Join(t.TempDir(), workload+".json")
		args := append([]string{"proxy", "--control-plane", xds, "--namespace", "default", "--workload", workload + "-v1",
			"--labels", "app=" + workload, "--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
			"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready}, extra...)
		p := harness.Start(t, bin, nil, args...)
		var a addrs
		if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, p)), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	server := startProxy("server", "--app-port", strconv.Itoa(appPort), "--service", "server:8080/grpc")
	client := startProxy("client")

	hc := &http.Client{Timeout: 5 * time.Second}
	metrics := func(a addrs) string {
		resp, err := hc.Get("http://" + a.Metrics + "/stats/prometheus")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	conn, err := grpc.NewClient(client.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("server:8080"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tsc := testgrpc.NewTestServiceClient(conn)

	// Ready when an EmptyCall gets through and the server side has the
	// Telemetry (the message series carry the rpc tag); EmptyCall has
	// its own series, so these probes do not disturb the counts below.
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := tsc.EmptyCall(ctx, &testgrpc.Empty{})
		cancel()
		sm := metrics(server)
		if err == nil && strings.Contains(sm, `rpc="/grpc.testing.TestService/EmptyCall"`) &&
			strings.Contains(metrics(client), `rpc="/grpc.testing.TestService/EmptyCall"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mesh not configured: %v\nserver metrics:\n%s", err, sm)
		}
		time.Sleep(200 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	payload := func(n int) *testgrpc.Payload { return &testgrpc.Payload{Body: make([]byte, n)} }
	if _, err := tsc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: payload(10)}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	in, err := tsc.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 7
	for i := range n {
		size := i // the first message is empty (a 0-length gRPC message)
		if i == 3 {
			size = 100 << 10
		}
		if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: payload(size)}); err != nil {
			t.Fatalf("StreamingInputCall send %d: %v", i, err)
		}
	}
	if r, err := in.CloseAndRecv(); err != nil || r.GetAggregatedPayloadSize() != 100<<10+0+1+2+4+5+6 {
		t.Fatalf("StreamingInputCall: %v %v", r, err)
	}
	bidi, err := tsc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(i * 1000)}); err != nil {
			t.Fatalf("FullDuplexCall send: %v", err)
		}
		if _, err := bidi.Recv(); err != nil {
			t.Fatalf("FullDuplexCall recv: %v", err)
		}
	}
	if err := bidi.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("FullDuplexCall end: %v, want EOF", err)
	}

	// value sums the samples of metric whose labels contain every part.
	value := func(m, metric string, parts ...string) float64 {
		var sum float64
	lines:
		for _, line := range strings.Split(m, "\n") {
			if !strings.HasPrefix(line, metric+"{") {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			sum += sumSamples(line, metric+"{")
		}
		return sum
	}
	rpc := func(method string) string { return `rpc="/grpc.testing.TestService/` + method + `"` }
	type want struct {
		metric, reporter, method string
		n                        float64
	}
	wants := []want{
		{"istio_request_messages_total", "source", "UnaryCall", 1},
		{"istio_response_messages_total", "source", "UnaryCall", 1},
		{"istio_request_messages_total", "source", "StreamingInputCall", n},
		{"istio_response_messages_total", "source", "StreamingInputCall", 1},
		{"istio_request_messages_total", "source", "FullDuplexCall", 3},
		{"istio_response_messages_total", "source", "FullDuplexCall", 3},
		{"istio_request_messages_total", "destination", "UnaryCall", 1},
		{"istio_request_messages_total", "destination", "StreamingInputCall", n},
		{"istio_request_messages_total", "destination", "FullDuplexCall", 3},
	}
	// The proxies record a stream when it ends, just after the client
	// sees its end: poll.
	var cm, sm string
	deadline = time.Now().Add(20 * time.Second)
	for {
		cm, sm = metrics(client), metrics(server)
		ok := true
		for _, w := range wants {
			m := cm
			if w.reporter == "destination" {
				m = sm
			}
			if value(m, w.metric, `reporter="`+w.reporter+`"`, rpc(w.method)) != w.n {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for _, w := range wants {
				m := cm
				if w.reporter == "destination" {
					m = sm
				}
				if got := value(m, w.metric, `reporter="`+w.reporter+`"`, rpc(w.method)); got != w.n {
					t.Errorf("%s reporter=%s %s = %v, want %v", w.metric, w.reporter, w.method, got, w.n)
				}
			}
			t.Fatalf("client metrics:\n%s\nserver metrics:\n%s", grep(cm, "_messages_total"), grep(sm, "_messages_total"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Disabled on the server side only.
	if strings.Contains(sm, "istio_response_messages_total{") {
		t.Errorf("server proxy exports the disabled response message counter:\n%s", grep(sm, "_messages_total"))
	}
	// Peer labels only, as Istio's; the standard peer labels are there.
	for name, m := range map[string]string{"client": cm, "server": sm} {
		for _, line := range strings.Split(grep(m, "_messages_total{"), "\n") {
			for _, bad := range []string{"request_protocol=", "response_code=", "grpc_response_status=", "response_flags=", "connection_security_policy="} {
				if strings.Contains(line, bad) {
					t.Errorf("%s: %s on a message series: %s", name, bad, line)
				}
			}
		}
	}
	for _, part := range []string{`source_workload="client-v1"`, `destination_workload="server-v1"`, `destination_service_name="server"`} {
		if value(sm, "istio_request_messages_total", `reporter="destination"`, part, rpc("UnaryCall")) != 1 ||
			value(cm, "istio_request_messages_total", `reporter="source"`, part, rpc("UnaryCall")) != 1 {
			t.Errorf("no message series with %s:\nclient:\n%s\nserver:\n%s", part, grep(cm, "_messages_total"), grep(sm, "_messages_total"))
		}
	}
	// A long stream reports while it is open (every reportingInterval).
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	out, err := tsc.StreamingOutputCall(sctx, &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{}, {}, {}, {}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := out.Recv(); err != nil {
			t.Fatalf("StreamingOutputCall recv: %v", err)
		}
	}
	// (The proxies' default route timeout, 15 s, would end the stream:
	// the counts must show before.)
	deadline = time.Now().Add(10 * time.Second)
	for {
		cm, sm = metrics(client), metrics(server)
		if value(cm, "istio_response_messages_total", `reporter="source"`, rpc("StreamingOutputCall")) == 4 &&
			value(cm, "istio_request_messages_total", `reporter="source"`, rpc("StreamingOutputCall")) == 1 &&
			value(sm, "istio_request_messages_total", `reporter="destination"`, rpc("StreamingOutputCall")) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open stream not reported within 10 s:\nclient:\n%s\nserver:\n%s", grep(cm, "_messages_total"), grep(sm, "_messages_total"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	scancel() // the server held the stream open until now
	if _, err := out.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("StreamingOutputCall ended before the client cancelled it: %v", err)
	}

	// The request metrics still count the calls (with their usual labels).
	if value(cm, "istio_requests_total", `reporter="source"`, `request_protocol="grpc"`, `grpc_response_status="0"`) < 4 {
		t.Errorf("istio_requests_total lacks the gRPC calls:\n%s", grep(cm, "istio_requests_total"))
	}
}

// grep keeps the lines of s that contain sub.
func grep(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
