package listener

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otellogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/pkg/proxy/otelals"
)

type logsCollector struct {
	collogspb.UnimplementedLogsServiceServer
	mu     sync.Mutex
	bodies []string
}

func (c *logsCollector) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				c.bodies = append(c.bodies, lr.GetBody().GetStringValue())
			}
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

type denyConns struct{}

func (denyConns) CheckConn(*ConnInfo) (bool, string) {
	return false, "rbac_access_denied_matched_policy[ns[default]-policy[deny]-rule[0]]"
}

// TestOTelLogsDeniedConnection: an inbound TCP connection a network
// filter refuses reaches the OpenTelemetry access log with its
// connection_termination_details.
func TestOTelLogsDeniedConnection(t *testing.T) {
	t.Parallel()
	col := &logsCollector{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(gs, col)
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	cfg, err := otelals.FromXDS(&otellogv3.OpenTelemetryAccessLogConfig{
		CommonConfig: &grpclogv3.CommonGrpcAccessLogConfig{GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "collector", Authority: ln.Addr().String()}}}},
		Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "%UPSTREAM_CLUSTER% %CONNECTION_TERMINATION_DETAILS%"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := otelals.NewExporter(otelals.Options{})
	defer exp.Close()
	rt := &Runtime{InboundConnFilters: map[int][]ConnFilter{9000: {denyConns{}}},
		InboundOTelLogs: []OTelLog{{Policy: &AccessLogPolicy{}, Config: cfg}}}
	h := &Handler{Direction: Inbound, Runtime: func() *Runtime { return rt }, OTelLogs: exp}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if h.allowConn(a, rt, 9000, "inbound|9000||") {
		t.Fatal("the connection was allowed")
	}
	want := "inbound|9000|| rbac_access_denied_matched_policy[ns[default]-policy[deny]-rule[0]]"
	deadline := time.Now().Add(20 * time.Second)
	for {
		col.mu.Lock()
		got := append([]string(nil), col.bodies...)
		col.mu.Unlock()
		if len(got) == 1 && got[0] == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("records %q, want [%q]", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
