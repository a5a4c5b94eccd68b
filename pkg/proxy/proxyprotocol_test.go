package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// freeAddr returns an address on 127.0.0.1 that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startHAProxy runs haproxy in the foreground with cfg and waits until
// every address in addrs accepts connections.
func startHAProxy(t *testing.T, cfg string, addrs ...string) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: hack/install-deps.sh installs it (Debian package haproxy)")
	}
	p := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", p)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				t.Fatalf("haproxy exited:\n%s", out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy not listening on %s: %v\n%s", a, err, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func proxyProtocolSocket(t *testing.T, v corev3.ProxyProtocolConfig_Version, inner proto.Message, innerName string) *corev3.TransportSocket {
	t.Helper()
	in, err := anypb.New(inner)
	if err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(&ppv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{Version: v},
		TransportSocket: &corev3.TransportSocket{Name: innerName, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: in}}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.upstream_proxy_protocol", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

// TestProxyProtocolHAProxy is DestinationRule proxyProtocol end to end
// against HAProxy binds with accept-proxy: HAProxy takes the client
// address from the PROXY header (v1, v2, and v2 before TLS origination)
// and hands it to the app as headers. Each downstream connection's
// requests arrive with its own source address, so upstream connections
// are not shared between downstream connections.
func TestProxyProtocolHAProxy(t *testing.T) {
	skipShort(t)
	t.Parallel()
	app := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "src=%s dst=%s tls=%s", r.Header.Get("X-PP-Src"), r.Header.Get("X-PP-Dst"), r.Header.Get("X-PP-TLS"))
	})
	certPEM, keyPEM, _ := testCert(t, "backend.example.com")
	dir := t.TempDir()
	pemPath := filepath.Join(dir, "server.pem")
	if err := os.WriteFile(pemPath, append(append([]byte(nil), certPEM...), keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	plain, secure := freeAddr(t), freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`global
  maxconn 200
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind %s accept-proxy
  bind %s accept-proxy ssl crt %s
  http-request set-header X-PP-Src %%[src]:%%[src_port]
  http-request set-header X-PP-Dst %%[dst]:%%[dst_port]
  http-request set-header X-PP-TLS %%[ssl_fc]
  default_backend app
backend app
  server app %s
`, plain, secure, pemPath, app.addr), plain, secure)

	tlsCtx := &tlsv3.UpstreamTlsContext{Sni: "backend.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}}}}}}
	cases := []struct {
		host, addr, tls string
		socket          *corev3.TransportSocket
	}{
		{"v1.pp", plain, "0", proxyProtocolSocket(t, corev3.ProxyProtocolConfig_V1, &rawbufferv3.RawBuffer{}, "envoy.transport_sockets.raw_buffer")},
		{"v2.pp", plain, "0", proxyProtocolSocket(t, corev3.ProxyProtocolConfig_V2, &rawbufferv3.RawBuffer{}, "envoy.transport_sockets.raw_buffer")},
		{"tls.pp", secure, "1", proxyProtocolSocket(t, corev3.ProxyProtocolConfig_V2, tlsCtx, "envoy.transport_sockets.tls")},
	}
	res := &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(9080)}}
	rc := &routev3.RouteConfiguration{Name: "9080"}
	for _, tc := range cases {
		name := "outbound|9080||" + tc.host
		c := xdstest.EDSCluster(name)
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		c.TransportSocket = tc.socket
		res.Clusters = append(res.Clusters, c)
		res.Endpoints = append(res.Endpoints, xdstest.Endpoints(name, "backend", tc.addr))
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: tc.host, Domains: []string{tc.host, tc.host + ":9080"},
			Routes: []*routev3.Route{xdstest.ToCluster("all", name)}})
	}
	res.Routes = []types.Resource{rc}
	cp := xdstest.Start(t)
	cp.Set(t, nodeID, res)
	p := startProxy(t, cp)
	outbound := p.Addresses().Outbound

	// newClient is one downstream connection (no more than one at a time)
	// and reports its local address.
	newClient := func() (*http.Client, func() string) {
		u, _ := url.Parse("http://" + outbound)
		var mu sync.Mutex
		var local string
		tr := &http.Transport{Proxy: http.ProxyURL(u), MaxConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				local = c.LocalAddr().String()
				mu.Unlock()
			}
			return c, err
		}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 20 * time.Second}, func() string { mu.Lock(); defer mu.Unlock(); return local }
	}
	for _, tc := range cases {
		t.Run(tc.host, func(t *testing.T) {
			a, aLocal := newClient()
			b, bLocal := newClient()
			for i, step := range []struct {
				c     *http.Client
				local func() string
			}{{a, aLocal}, {b, bLocal}, {a, aLocal}, {b, bLocal}} {
				resp, err := step.c.Get("http://" + tc.host + ":9080/")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want := fmt.Sprintf("src=%s dst=%s tls=%s", step.local(), outbound, tc.tls)
				if resp.StatusCode != 200 || string(body) != want {
					t.Fatalf("request %d: %d %q, want %q (HAProxy's view of the PROXY header)", i, resp.StatusCode, body, want)
				}
			}
			if aLocal() == bLocal() {
				t.Fatal("the two clients share a connection: test proves nothing")
			}
		})
		// A CONNECT tunnel (opaque bytes) through the same cluster: the
		// upstream connection starts with the tunnel's downstream
		// connection's header, then TLS for tls.pp.
		t.Run(tc.host+"/CONNECT", func(t *testing.T) {
			conn, br, resp := rawRequest(t, outbound, "CONNECT "+tc.host+":9080 HTTP/1.1\r\nHost: "+tc.host+":9080\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT: %d", resp.StatusCode)
			}
			if _, err := io.WriteString(conn, "GET /tunnel HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			tr, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(tr.Body, 200))
			if want := fmt.Sprintf("src=%s dst=%s tls=%s", conn.LocalAddr(), outbound, tc.tls); string(body) != want {
				t.Fatalf("through the tunnel: %d %q, want %q", tr.StatusCode, body, want)
			}
		})
	}
}
