package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// BenchmarkProxyRequest measures one HTTP/1.1 keep-alive request through
// the outbound listener to a local backend (client, proxy and backend
// share the machine's cores).
func BenchmarkProxyRequest(b *testing.B) {
	cp := xdstest.Start(b)
	be := startBackend(b, "v1", nil)
	cp.Set(b, nodeID, oneRoute(xdstest.HTTPListener(9080), be.addr))
	benchGets(b, client(startProxy(b, cp)))
}

// oneRoute is listener l (port 9080) routing everything to cAll, whose one
// endpoint is addr.
func oneRoute(l *listenerv3.Listener, addr string) *xdstest.Resources {
	res := &xdstest.Resources{}
	res.Listeners = append(res.Listeners, l)
	res.Routes = append(res.Routes, xdstest.RouteConfig(9080, "reviews", xdstest.ToCluster("r", cAll)))
	res.Clusters = append(res.Clusters, xdstest.EDSCluster(cAll))
	res.Endpoints = append(res.Endpoints, xdstest.Endpoints(cAll, "reviews-v1", addr))
	return res
}

// benchGets sends GET svcURL/bench through c once per b.Loop iteration and
// fails on a non-200 answer.
func benchGets(b *testing.B, c *http.Client) {
	b.Helper()
	req, _ := http.NewRequest(http.MethodGet, svcURL+"/bench", nil)
	benchLoop(b, func() (*http.Response, error) { return c.Do(req) })
}

// benchLoop sends a request with do once per b.Loop iteration, reads the
// answer, and fails on an error or a non-200 answer.
func benchLoop(b *testing.B, do func() (*http.Response, error)) {
	b.Helper()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := do()
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkProxyPost is BenchmarkProxyRequest with a 1 KiB request body,
// which the backend reads before it answers.
func BenchmarkProxyPost(b *testing.B) {
	cp := xdstest.Start(b)
	be := startBackend(b, "v1", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	})
	cp.Set(b, nodeID, oneRoute(xdstest.HTTPListener(9080), be.addr))
	c := client(startProxy(b, cp))
	body := bytes.Repeat([]byte("x"), 1024)
	benchLoop(b, func() (*http.Response, error) {
		return c.Post(svcURL+"/bench", "application/octet-stream", bytes.NewReader(body))
	})
}

// BenchmarkDirectRequest is the baseline: the same request without the proxy.
func BenchmarkDirectRequest(b *testing.B) {
	be := startBackend(b, "v1", nil)
	c := &http.Client{}
	req, _ := http.NewRequest(http.MethodGet, "http://"+be.addr+"/bench", nil)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
