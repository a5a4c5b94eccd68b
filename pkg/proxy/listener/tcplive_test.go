package listener

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	statsv1 "istio.io/api/envoy/extensions/stats"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/stats"
)

// A long-lived TCP connection's bytes reach istio_tcp_*_bytes_total every
// reporting interval (Telemetry metrics reportingInterval, carried as
// tcp_reporting_duration), before it closes; the close adds the rest once.
func TestTCPBytesReportedWhileOpen(t *testing.T) {
	t.Parallel()
	echo := tcpEcho(t)
	mp, err := compileMetrics(&statsv1.PluginConfig{TcpReportingDuration: durationpb.New(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if mp.overrides() || mp.TCPReportingInterval != 50*time.Millisecond {
		t.Fatalf("policy %+v: want only the interval", mp)
	}
	const name = "outbound|5432||db.shop.svc.cluster.local"
	rt := &Runtime{Clusters: &cluster.Set{Clusters: map[string]*cluster.Cluster{name: cluster.Static(name, echo.Addr().String())}},
		OutboundMetrics: mp}
	reg := stats.NewRegistry()
	h := &Handler{Runtime: func() *Runtime { return rt }, Stats: reg, Direction: Outbound, Ident: Identity{Namespace: "shop", Workload: "api-v1"}}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	go func() {
		c, err := front.Accept()
		if err == nil {
			h.ServeTCPCluster(context.Background(), c, name, nil)
		}
	}()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	value := func(metric string) string {
		var b strings.Builder
		_ = reg.WritePrometheus(&b)
		for _, line := range strings.Split(b.String(), "\n") {
			if strings.HasPrefix(line, metric+"{") && strings.Contains(line, `destination_service="db.shop.svc.cluster.local"`) {
				return line[strings.LastIndexByte(line, ' ')+1:]
			}
		}
		return ""
	}
	exchange := func(msg string) {
		t.Helper()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q %v", buf, err)
		}
	}
	waitValue := func(metric, want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); value(metric) != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s = %q, want %s", metric, value(metric), want)
			}
		}
	}
	exchange("hello")
	waitValue("istio_tcp_sent_bytes_total", "5")
	waitValue("istio_tcp_received_bytes_total", "5")
	exchange(strings.Repeat("x", 70000)) // more than one copy buffer
	waitValue("istio_tcp_sent_bytes_total", "70005")
	waitValue("istio_tcp_received_bytes_total", "70005")
	if got := value("istio_tcp_connections_closed_total"); got != "" && got != "0" {
		t.Fatalf("closed = %s while open", got)
	}
	exchange("bye")
	c.Close()
	waitValue("istio_tcp_connections_closed_total", "1")
	if s, r := value("istio_tcp_sent_bytes_total"), value("istio_tcp_received_bytes_total"); s != "70008" || r != "70008" {
		t.Errorf("after close: sent %s received %s, want 70008 each", s, r)
	}
}

// tcpEcho is a TCP server on 127.0.0.1 that echoes every connection; it
// closes when the test ends.
func tcpEcho(t *testing.T) net.Listener {
	t.Helper()
	return echotest.Start(t, echotest.Bytes)
}
