package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// startTinyproxy runs Debian's tinyproxy (a real HTTP forward proxy) in
// the foreground on a free 127.0.0.1 port; the returned func reads its log
// (one line per CONNECT request).
func startTinyproxy(t *testing.T) (addr string, log func() string) {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Fatal("tinyproxy is not installed: hack/install-deps.sh installs it (Debian package tinyproxy)")
	}
	addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tinyproxy.log")
	cfg := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Connect\nLogFile %q\n", port, logPath)
	cfgPath := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", cfgPath)
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
	log = func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr, log
		}
		select {
		case <-exited:
			t.Fatalf("tinyproxy exited:\n%s%s", out.String(), log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy not listening on %s: %v\n%s", addr, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startEcho is a TCP server that answers each line with "echo: LINE".
func startEcho(t *testing.T) string {
	t.Helper()
	return echotest.Start(t, echotest.Lines("echo: ")).Addr().String()
}

// startPostTunnel is a minimal POST tunnel terminator (what Envoy's
// use_post expects upstream): it answers 200 at once, then streams the
// request body to target and target's bytes back as the chunked response
// body. It records the request line and Host.
func startPostTunnel(t *testing.T, target string) (addr string, seen func() []string) {
	t.Helper()
	var mu sync.Mutex
	var reqs []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs = append(reqs, r.Method+" "+r.URL.Path+" host="+r.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", target)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer up.Close()
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		_ = rc.Flush()
		go func() {
			_, _ = io.Copy(up, r.Body)
			_ = up.(*net.TCPConn).CloseWrite()
		}()
		buf := make([]byte, 4096)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = rc.Flush()
			}
			if err != nil {
				return
			}
		}
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), reqs...) }
}

// tunnelListener is the outbound TCP listener the translator emits for
// service host on port with a DestinationRule tunnel on its route.
func tunnelListener(t *testing.T, port int, host, cluster string, tunnel *tcpv3.TcpProxy_TunnelingConfig) *listenerv3.Listener {
	t.Helper()
	tp, err := anypb.New(&tcpv3.TcpProxy{StatPrefix: fmt.Sprintf("outbound|%d||%s", port, host),
		ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}, TunnelingConfig: tunnel})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: fmt.Sprintf("0.0.0.0_%d", port),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp}}}}}}
}

// TestTunnelForwardProxy is DestinationRule trafficPolicy.tunnel as the
// translator emits it (tcp_proxy tunneling_config) executed by weft proxy
// against real forward proxies: a TCP stream sent to the mesh service
// reaches its target inside an HTTP CONNECT tunnel opened through Debian's
// tinyproxy, directly and with TLS originated to the forward proxy
// (HAProxy terminating TLS in front of tinyproxy, as an HTTPS proxy); a
// POST tunnel (use_post) goes through a small POST terminator; a target
// the forward proxy cannot reach fails the client's CONNECT with 503 UF;
// an egress gateway's tcp_proxy chain tunnels the same way.
func TestTunnelForwardProxy(t *testing.T) {
	skipShort(t)
	t.Parallel()
	echo := startEcho(t)
	tp, tpLog := startTinyproxy(t)
	certPEM, keyPEM, _ := testCert(t, "proxy.example.com")
	pemPath := filepath.Join(t.TempDir(), "proxy.pem")
	if err := os.WriteFile(pemPath, append(append([]byte(nil), certPEM...), keyPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	tpTLS := freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend https_proxy
  bind %s ssl crt %s
  default_backend tinyproxy
backend tinyproxy
  server tp %s
`, tpTLS, pemPath, tp), tpTLS)
	post, postSeen := startPostTunnel(t, echo)
	// Port 1: nothing listens there, and no test can take it (a port
	// freed by freeAddr could be another parallel test's listener by
	// the time the forward proxy dials it, as CI saw once).
	closed := "127.0.0.1:1"

	tlsCtx, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "proxy.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, host, proxyAddr string
		port                  int
		tunnel                *tcpv3.TcpProxy_TunnelingConfig
		tls                   bool
	}{
		{"connect", "external.example.com", tp, 9000, &tcpv3.TcpProxy_TunnelingConfig{Hostname: echo}, false},
		{"connect-tls-origination", "external-tls.example.com", tpTLS, 9001, &tcpv3.TcpProxy_TunnelingConfig{Hostname: echo}, true},
		{"post", "external-post.example.com", post, 9002, &tcpv3.TcpProxy_TunnelingConfig{Hostname: echo, UsePost: true}, false},
		{"refused", "external-down.example.com", tp, 9003, &tcpv3.TcpProxy_TunnelingConfig{Hostname: closed}, false},
	}
	res := &xdstest.Resources{}
	for _, tc := range cases {
		cluster := fmt.Sprintf("outbound|3128|%s|proxy.example.com", tc.name)
		c := xdstest.EDSCluster(cluster)
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		if tc.tls {
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}
		}
		res.Clusters = append(res.Clusters, c)
		res.Endpoints = append(res.Endpoints, xdstest.Endpoints(cluster, "forward-proxy", tc.proxyAddr))
		res.Listeners = append(res.Listeners, tunnelListener(t, tc.port, tc.host, cluster, tc.tunnel))
	}
	cp := xdstest.Start(t)
	cp.Set(t, nodeID, res)
	p := startProxy(t, cp)
	outbound := p.Addresses().Outbound

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := fmt.Sprintf("%s:%d", tc.host, tc.port)
			conn, br, resp := rawRequest(t, outbound, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
			if tc.name == "refused" {
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Weft-Response-Flags") != "UF" {
					t.Fatalf("CONNECT %s through a tunnel the forward proxy refuses: %d %q, want 503 UF", target, resp.StatusCode, resp.Header.Get("X-Weft-Response-Flags"))
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
			}
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			for _, line := range []string{"hello " + tc.name, "second line"} {
				if _, err := fmt.Fprintf(conn, "%s\n", line); err != nil {
					t.Fatal(err)
				}
				got, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("read through the tunnel: %v", err)
				}
				if want := "echo: " + line + "\n"; got != want {
					t.Fatalf("through the tunnel: %q, want %q", got, want)
				}
			}
		})
	}
	// An egress gateway's TCP server (Istio's gateway tunneling case): the
	// gateway's tcp_proxy chain tunnels through tinyproxy too.
	gwPort := freePort(t)
	gwTP, err := anypb.New(&tcpv3.TcpProxy{StatPrefix: "tcp.egress", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "outbound|3128|connect|proxy.example.com"},
		TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: echo}})
	if err != nil {
		t.Fatal(err)
	}
	gwID := "router~127.0.0.1~istio-egressgateway.weft-system~weft-system.svc.cluster.local"
	cp.Set(t, gwID, &xdstest.Resources{
		Listeners: []types.Resource{gwListener(gwPort, &listenerv3.FilterChain{Name: "tcp.egress",
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: gwTP}}}})},
		Clusters:  []types.Resource{res.Clusters[0]},
		Endpoints: []types.Resource{res.Endpoints[0]},
	})
	gw := startProxy(t, cp, func(o *proxy.Options) {
		o.Gateway = true
		o.Namespace = "weft-system"
		o.Workload = "istio-egressgateway"
		o.Labels = map[string]string{"istio": "egressgateway"}
	})
	gwAddr := fmt.Sprintf("127.0.0.1:%d", gwPort)
	eventually(t, "the egress gateway listener", func() bool { return gw.GatewayListeners()[fmt.Sprintf("0.0.0.0_%d", gwPort)] == gwAddr })
	gc, err := net.DialTimeout("tcp", gwAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	_ = gc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(gc, "via the egress gateway\n"); err != nil {
		t.Fatal(err)
	}
	if got, err := bufio.NewReader(gc).ReadString('\n'); got != "echo: via the egress gateway\n" {
		t.Fatalf("through the egress gateway's tunnel: %q %v", got, err)
	}

	// The bytes went through the forward proxies, addressed to the tunnel's
	// target: tinyproxy logged the three CONNECTs (sidecar plain, behind
	// TLS, gateway), the POST terminator its request.
	eventually(t, "tinyproxy to log the CONNECT requests", func() bool {
		return strings.Count(tpLog(), "CONNECT "+echo+" HTTP/1.1") >= 3
	})
	if got := postSeen(); len(got) != 1 || got[0] != "POST / host="+echo {
		t.Fatalf("POST tunnel requests: %q, want one \"POST / host=%s\"", got, echo)
	}
	if !strings.Contains(tpLog(), "CONNECT "+closed+" HTTP/1.1") {
		t.Fatalf("tinyproxy did not see the refused tunnel's CONNECT:\n%s", tpLog())
	}
}
