package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

const (
	ns       = "default"
	workload = "productpage-v1"
)

var nodeID = xdstest.NodeID(workload, ns)

// backend is a real HTTP server that answers with its name.
type backend struct {
	name  string
	addr  string
	hits  atomic.Int64
	mu    sync.Mutex
	hosts []string
	paths []string
	srv   *http.Server
}

func startBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{name: name}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = l.Addr().String()
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		b.hosts = append(b.hosts, r.Host)
		b.paths = append(b.paths, r.URL.RequestURI())
		b.mu.Unlock()
		w.Header().Set("X-Backend", name)
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprint(w, name)
	})}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backend) seenHosts() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.hosts...)
}

func (b *backend) seenPaths() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.paths...)
}

// startProxy runs a proxy against cp and waits until it is ready.
func startProxy(t testing.TB, cp *xdstest.ControlPlane, mutate ...func(*proxy.Options)) *proxy.Proxy {
	t.Helper()
	opts := proxy.Options{
		ControlPlane: cp.Addr, Namespace: ns, Workload: workload, Labels: map[string]string{"app": "productpage"},
		OutboundAddress: "127.0.0.1:0", InboundAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0",
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, DrainTimeout: time.Second,
	}
	for _, m := range mutate {
		m(&opts)
	}
	p, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy exited: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("proxy not ready after 10s")
	}
	return p
}

// client sends requests through the proxy's outbound listener as an HTTP proxy.
func client(p *proxy.Proxy) *http.Client {
	u, _ := url.Parse("http://" + p.Addresses().Outbound)
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), MaxIdleConnsPerHost: 64}, Timeout: 20 * time.Second}
}

type result struct {
	status int
	body   string
	flags  string
	header http.Header
}

func get(t testing.TB, c *http.Client, rawURL string, hdr ...string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, body: strings.TrimSpace(string(b)), flags: resp.Header.Get("X-Weft-Response-Flags"), header: resp.Header}
}

func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if f() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
