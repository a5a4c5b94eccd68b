package proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// TestConnectOverH2 opens RFC 9113 §8.5 CONNECT tunnels to the outbound
// listener with golang.org/x/net/http2's client over h2c: the request
// body's DATA frames reach the upstream, its bytes come back as response
// DATA, the client's END_STREAM half-closes the upstream connection (the
// upstream HTTP server then closes, which ends the response stream), and an
// unknown target is 404.
func TestConnectOverH2(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "v1 %s", r.URL.Path) }, nil)
	cp.Set(t, nodeID, m.resources(prefixRoute("v1", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	out := p.Addresses().Outbound

	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	connect := func(ctx context.Context, authority string, body io.Reader) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+out, body)
		if err != nil {
			return nil, err
		}
		req.URL = &url.URL{Scheme: "http", Host: out}
		req.Host = authority // :authority
		return tr.RoundTrip(req)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Two requests on one tunnel, then END_STREAM.
	pr, pw := io.Pipe()
	resp, err := connect(ctx, "reviews:9080", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("CONNECT over h2: %d %s", resp.StatusCode, resp.Proto)
	}
	br := bufio.NewReader(resp.Body)
	for _, path := range []string{"/one", "/two"} {
		if _, err := io.WriteString(pw, "GET "+path+" HTTP/1.1\r\nHost: reviews\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		tunneled, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response through the tunnel: %v", err)
		}
		b, err := io.ReadAll(tunneled.Body)
		if err != nil || string(b) != "v1 "+path {
			t.Fatalf("through the tunnel: %q %v", b, err)
		}
	}
	// The client's END_STREAM reaches the upstream as a FIN; the upstream
	// server closes its side and the tunnel's response stream ends.
	pw.Close()
	done := make(chan error, 1)
	go func() {
		rest, err := io.ReadAll(br)
		if err == nil && len(rest) > 0 {
			err = fmt.Errorf("unexpected bytes %q", rest)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tunnel end: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the response stream did not end after the client's END_STREAM")
	}

	// Several tunnels share one HTTP/2 connection concurrently.
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			pr, pw := io.Pipe()
			resp, err := connect(ctx, "reviews:9080", pr)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			go func() {
				_, _ = fmt.Fprintf(pw, "GET /c%d HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n", i)
			}()
			tunneled, err := http.ReadResponse(bufio.NewReader(resp.Body), nil)
			if err != nil {
				errs <- err
				return
			}
			b, _ := io.ReadAll(tunneled.Body)
			if want := fmt.Sprintf("v1 /c%d", i); string(b) != want {
				errs <- fmt.Errorf("tunnel %d: %q, want %q", i, b, want)
				return
			}
			pw.Close()
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	resp, err = connect(ctx, "nowhere.example:443", http.NoBody)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("CONNECT over h2 to an unknown host: %d, want 404", resp.StatusCode)
	}
}
