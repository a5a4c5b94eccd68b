package proxy

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// TestListenersUseOwnServer: every listener, admin, metrics, health and
// status included, is served by listener.Server (no second HTTP server's
// code mapped by a scrape or a probe), and the admin endpoints that stream
// or take time (a CPU profile) work over it.
func TestListenersUseOwnServer(t *testing.T) {
	p, err := New(Options{ControlPlane: "127.0.0.1:1", Namespace: "default", Workload: "w",
		OutboundAddress: "127.0.0.1:0", InboundAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, s := range p.servers {
			_ = s.Shutdown(context.Background())
		}
	}()
	if len(p.servers) < 6 {
		t.Fatalf("%d servers, want 6", len(p.servers))
	}
	for i, s := range p.servers {
		if _, ok := s.(*listener.Server); !ok {
			t.Errorf("server %d (%s) is a %T, want *listener.Server", i, p.listeners[i].Addr(), s)
		}
	}
	a := p.Addresses()
	for url, want := range map[string]int{
		"http://" + a.Admin + "/debug/pprof/profile?seconds=0.2": 200,
		"http://" + a.Admin + "/stats":                           200,
		"http://" + a.Metrics + "/stats/prometheus":              200,
		"http://" + a.Health + "/healthz/ready":                  503, // no configuration yet
	} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || want == 200 && len(b) == 0 {
			t.Errorf("GET %s: %d, %d bytes; want %d", url, resp.StatusCode, len(b), want)
		}
	}
}
