package proxy_test

import (
	"context"
	"crypto/sha1" //nolint:gosec // RFC 6455's accept value
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

func wsAcceptFor(key string) string {
	h := sha1.New() //nolint:gosec // RFC 6455
	io.WriteString(h, key+"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// TestExtendedConnectInbound sends RFC 8441 extended CONNECT streams
// (golang.org/x/net/http2's client, h2c) to a proxy's inbound listener in
// front of an HTTP/1.1-only application: the stream becomes an HTTP/1.1
// WebSocket Upgrade (GET, a Sec-WebSocket-Key the proxy makes when the
// client sent none, checked against the app's Sec-WebSocket-Accept), the
// app's 101 becomes 200, the DATA frames reach the app, the client's
// END_STREAM half-closes the app's connection (the app answers only after
// reading to EOF), and the app closing ends the stream. A wrong accept
// value and an app that answers 200 without switching protocols are 502.
func TestExtendedConnectInbound(t *testing.T) {
	skipShort(t)
	var mu sync.Mutex
	var seen []string // method, key, version per upgrade the app saw
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			fmt.Fprint(w, "plain")
			return
		}
		key := r.Header.Get("Sec-WebSocket-Key")
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("Upgrade")+" key="+fmt.Sprint(key != "")+" v="+r.Header.Get("Sec-WebSocket-Version"))
		mu.Unlock()
		if r.URL.Path == "/no-upgrade" {
			fmt.Fprint(w, "not a websocket server")
			return
		}
		if key == "" {
			http.Error(w, "missing Sec-WebSocket-Key", http.StatusBadRequest)
			return
		}
		accept := wsAcceptFor(key)
		if r.URL.Path == "/bad-accept" {
			accept = wsAcceptFor("another key")
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept)
		// Everything up to the half-close, then the answer: this only ends
		// when the client's END_STREAM reaches here as a FIN.
		all, _ := io.ReadAll(brw)
		_, _ = conn.Write([]byte(strings.ToUpper(string(all))))
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(l) }()
	t.Cleanup(func() { app.Close() })

	cp := xdstest.Start(t)
	cp.Set(t, nodeID, &xdstest.Resources{Clusters: []types.Resource{&clusterv3.Cluster{Name: "BlackHoleCluster",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}}})
	p := startProxy(t, cp, func(o *proxy.Options) { o.AppPort = l.Addr().(*net.TCPAddr).Port })
	in := p.Addresses().Inbound

	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	xconnect := func(path string, hdr http.Header, body io.Reader) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+in+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.URL = &url.URL{Scheme: "http", Host: in, Path: path}
		req.Host = "reviews:9080"
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header[":protocol"] = []string{"websocket"}
		req.Header.Set("Sec-WebSocket-Version", "13")
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("extended CONNECT %s: %v", path, err)
		}
		return resp
	}

	// No key: the proxy makes one and checks the answer.
	pr, pw := io.Pipe()
	resp := xconnect("/ws", nil, pr)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("extended CONNECT: %d %s", resp.StatusCode, resp.Proto)
	}
	for _, k := range []string{"Upgrade", "Connection", "Sec-Websocket-Accept"} {
		if v, ok := resp.Header[k]; ok {
			t.Errorf("200 to the extended CONNECT carries %s: %q", k, v)
		}
	}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	for _, s := range []string{"hello ", "over ", "h2"} {
		if _, err := io.WriteString(pw, s); err != nil {
			t.Fatal(err)
		}
	}
	pw.Close() // END_STREAM: the app reads EOF only through the half-close
	select {
	case s := <-got:
		if s != "HELLO OVER H2" {
			t.Fatalf("through the stream: %q", s)
		}
	case <-ctx.Done():
		t.Fatal("the app never saw the half-close, or its answer never came back")
	}
	resp.Body.Close()

	// The client's own key: the app's accept value comes back.
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	pr, pw = io.Pipe()
	resp = xconnect("/ws", http.Header{"Sec-Websocket-Key": {key}}, pr)
	pw.Close()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Sec-WebSocket-Accept") != wsAcceptFor(key) || len(b) != 0 {
		t.Fatalf("with the client's key: %d accept %q body %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"), b)
	}

	for _, path := range []string{"/bad-accept", "/no-upgrade"} {
		resp := xconnect(path, nil, http.NoBody)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "upgrade_failed") {
			t.Errorf("%s: %d %q, want 502 upgrade_failed", path, resp.StatusCode, b)
		}
	}

	mu.Lock()
	for _, s := range seen {
		if s != "GET websocket key=true v=13" {
			t.Errorf("the app saw the upgrade as %q", s)
		}
	}
	mu.Unlock()
	eventually(t, "inbound 101 counted", func() bool {
		_, body := httpGet(t, "http://"+p.Addresses().Metrics+"/stats/prometheus")
		return strings.Contains(body, `istio_requests_total{reporter="destination"`) && strings.Contains(body, `response_code="101"`)
	})
}
