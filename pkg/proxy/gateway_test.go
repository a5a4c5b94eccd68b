package proxy_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// testCert returns a self-signed certificate (PEM) for the DNS names.
func testCert(t *testing.T, names ...string) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return certPEM, keyPEM, pool
}

func hcmChain(t *testing.T, name, rds string) *listenerv3.FilterChain {
	t.Helper()
	rtr, _ := anypb.New(&routerv3.Router{})
	a, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rds,
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rtr}}}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.FilterChain{Name: name, Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}
}

func tlsSocket(t *testing.T, cert, key []byte) *corev3.TransportSocket {
	t.Helper()
	a, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificates: []*tlsv3.TlsCertificate{{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cert}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: key}},
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

func tcpChain(t *testing.T, name, cluster string, sni ...string) *listenerv3.FilterChain {
	t.Helper()
	a, err := anypb.New(&tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.FilterChain{Name: name, FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: sni},
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}
}

func gwListener(port int, chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{Name: fmt.Sprintf("0.0.0.0_%d", port),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0",
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: chains}
}

func gwRoutes(name string, vhosts ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhosts}
}

func exactRoute(path, cluster string) *routev3.Route {
	return &routev3.Route{Name: path, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestGateway runs a control plane, a gateway proxy and productpage behind
// its own sidecar: the gateway serves plain HTTP by Host (404 NR for
// unknown hosts), terminates HTTPS with the filter chain's certificate
// chosen by SNI, passes TLS through by SNI, and binds and drains
// listeners as LDS changes.
func TestGateway(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)

	// productpage app behind its sidecar (inbound straight to the app).
	app := startBackend(t, "productpage-app", nil)
	_, appPortS, _ := net.SplitHostPort(app.addr)
	var appPort int
	fmt.Sscan(appPortS, &appPort)
	var sideLog syncBuf
	side := startProxyNoWait(t, cp, func(o *proxy.Options) {
		o.Workload = "productpage-v1"
		o.Labels = map[string]string{"app": "productpage", "version": "v1"}
		o.AppPort = appPort
		o.Services = []string{"productpage:9080/http"}
		o.AccessLog = &sideLog
	})
	cp.Set(t, xdstest.NodeID("productpage-v1", ns), &xdstest.Resources{Listeners: []types.Resource{}, Clusters: []types.Resource{}})
	select { // requests must not reach the sidecar before its first config
	case <-side.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("productpage sidecar never got its first configuration")
	}

	// A TLS server behind passthrough (its own certificate).
	pCert, pKey, pPool := testCert(t, "pass.example.com")
	pPair, err := tls.X509KeyPair(pCert, pKey)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pPair}})
	if err != nil {
		t.Fatal(err)
	}
	psrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "passthrough-backend") })}
	go func() { _ = psrv.Serve(pl) }()
	t.Cleanup(func() { psrv.Close() })

	const (
		cPP   = "outbound|9080||productpage.default.svc.cluster.local"
		cPass = "outbound|443||pass.example.com"
	)
	sCert, sKey, sPool := testCert(t, "secure.example.com")
	port := freePort(t)
	ps := fmt.Sprint(port)
	res := func(withHTTP bool) *xdstest.Resources {
		chains := []*listenerv3.FilterChain{
			tcpChain(t, "passthrough", cPass, "pass.example.com"),
		}
		https := hcmChain(t, "https.secure", "https."+ps+".secure")
		https.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{"secure.example.com"}}
		https.TransportSocket = tlsSocket(t, sCert, sKey)
		chains = append(chains, https)
		if withHTTP {
			chains = append(chains, hcmChain(t, "http."+ps, "http."+ps))
		}
		return &xdstest.Resources{
			Listeners: []types.Resource{gwListener(port, chains...)},
			Routes: []types.Resource{
				gwRoutes("http."+ps,
					&routev3.VirtualHost{Name: "bookinfo.example.com", Domains: []string{"bookinfo.example.com", "bookinfo.example.com:" + ps},
						Routes: []*routev3.Route{exactRoute("/productpage", cPP)}}),
				gwRoutes("https."+ps+".secure",
					&routev3.VirtualHost{Name: "*", Domains: []string{"*"}, Routes: []*routev3.Route{exactRoute("/productpage", cPP)}}),
			},
			Clusters:  []types.Resource{xdstest.EDSCluster(cPP), xdstest.EDSCluster(cPass)},
			Endpoints: []types.Resource{xdstest.Endpoints(cPP, "productpage-v1", side.Addresses().Inbound), xdstest.Endpoints(cPass, "pass", pl.Addr().String())},
		}
	}
	gwID := "router~127.0.0.1~istio-ingressgateway.weft-system~weft-system.svc.cluster.local"
	cp.Set(t, gwID, res(true))
	var gwLog syncBuf
	gw := startProxy(t, cp, func(o *proxy.Options) {
		o.Gateway = true
		o.Namespace = "weft-system"
		o.Workload = "istio-ingressgateway"
		o.Labels = map[string]string{"istio": "ingressgateway", "app": "istio-ingressgateway"}
		o.AccessLog = &gwLog
	})
	if id := gw.Node().GetId(); id != gwID {
		t.Fatalf("gateway node id %q, want %q", id, gwID)
	}
	addr := "127.0.0.1:" + ps
	var bound string
	eventually(t, "gateway listener bound", func() bool {
		bound = gw.GatewayListeners()["0.0.0.0_"+ps]
		return bound == addr
	})

	plain := &http.Client{Timeout: 10 * time.Second}
	do := func(c *http.Client, url, host string) result {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Host %s): %v", url, host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return result{status: resp.StatusCode, body: strings.TrimSpace(string(b)), flags: resp.Header.Get("X-Weft-Response-Flags")}
	}
	t.Run("http front door", func(t *testing.T) {
		tests := []struct {
			host, path string
			status     int
			body, flag string
		}{
			{"bookinfo.example.com", "/productpage", 200, "productpage-app", ""},
			{"bookinfo.example.com:" + ps, "/productpage", 200, "productpage-app", ""},
			{"unknown.example.com", "/productpage", 404, "", "NR"},
			{"bookinfo.example.com", "/other", 404, "", "NR"},
		}
		for _, tc := range tests {
			r := do(plain, "http://"+addr+tc.path, tc.host)
			if r.status != tc.status || (tc.body != "" && r.body != tc.body) || r.flags != tc.flag {
				t.Errorf("Host %s %s: %d %q flags %q, want %d %q %q", tc.host, tc.path, r.status, r.body, r.flags, tc.status, tc.body, tc.flag)
			}
		}
	})
	t.Run("https simple", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sPool, ServerName: "secure.example.com"}}}
		if r := do(c, "https://"+addr+"/productpage", "secure.example.com"); r.status != 200 || r.body != "productpage-app" {
			t.Fatalf("https: %d %q", r.status, r.body)
		}
		// HTTP/2 over TLS (ALPN h2).
		h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{RootCAs: sPool, ServerName: "secure.example.com"}}}
		resp, err := h2.Get("https://" + addr + "/productpage")
		if err != nil {
			t.Fatalf("h2: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(b) != "productpage-app" {
			t.Fatalf("h2: %s %d %q", resp.Proto, resp.StatusCode, b)
		}
		// An RFC 8441 extended CONNECT (a browser's WebSocket over h2): the
		// gateway allows it and routes it as the Upgrade it stands for; the
		// backend is no WebSocket server and answers 200, which must not
		// reach the client as an open tunnel.
		xt := &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: sPool, ServerName: "secure.example.com"}}
		defer xt.CloseIdleConnections()
		xr, _ := http.NewRequest(http.MethodConnect, "https://"+addr+"/productpage", http.NoBody)
		xr.Host = "secure.example.com"
		xr.Header[":protocol"] = []string{"websocket"}
		xr.Header.Set("Sec-WebSocket-Version", "13")
		resp, err = xt.RoundTrip(xr)
		if err != nil {
			t.Fatalf("extended CONNECT to the gateway: %v", err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "upgrade_failed") {
			t.Fatalf("extended CONNECT to a backend without WebSocket: %d %q, want 502 upgrade_failed", resp.StatusCode, b)
		}
		// A client trusting only the passthrough backend's CA must fail:
		// the gateway answered with its own certificate.
		bad := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pPool, ServerName: "secure.example.com"}}}
		if _, err := bad.Get("https://" + addr + "/productpage"); err == nil {
			t.Fatal("TLS with an untrusted certificate succeeded")
		}
		// An SNI no chain matches gets no TLS.
		nc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: sPool, ServerName: "nobody.example.com"}}}
		if _, err := nc.Get("https://" + addr + "/productpage"); err == nil {
			t.Fatal("TLS for an unknown SNI succeeded")
		}
	})
	t.Run("tls passthrough", func(t *testing.T) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pPool, ServerName: "pass.example.com"}}}
		if r := do(c, "https://"+addr+"/", "pass.example.com"); r.status != 200 || r.body != "passthrough-backend" {
			t.Fatalf("passthrough: %d %q", r.status, r.body)
		}
	})
	t.Run("telemetry", func(t *testing.T) {
		_, m := httpGet(t, "http://"+gw.Addresses().Metrics+"/stats/prometheus")
		if !strings.Contains(m, `reporter="source",source_workload="istio-ingressgateway",source_canonical_service="istio-ingressgateway",source_canonical_revision="latest",source_workload_namespace="weft-system"`) ||
			!strings.Contains(m, `destination_service="productpage.default.svc.cluster.local"`) {
			t.Errorf("gateway metrics:\n%s", m)
		}
		if !strings.Contains(gwLog.String(), `"response_code":200`) || !strings.Contains(sideLog.String(), `"response_code":200`) {
			t.Errorf("access logs: gateway %q sidecar %q", gwLog.String(), sideLog.String())
		}
	})
	t.Run("listener config swap and removal", func(t *testing.T) {
		// Drop the plain HTTP chain: plaintext now finds no filter chain.
		cp.Set(t, gwID, res(false))
		eventually(t, "plaintext refused", func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /productpage HTTP/1.1\r\nHost: bookinfo.example.com\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, err = http.ReadResponse(bufio.NewReader(c), nil)
			return err != nil
		})
		// Remove the listener: the port is released.
		empty := res(true)
		empty.Listeners = []types.Resource{}
		cp.Set(t, gwID, empty)
		eventually(t, "listener removed", func() bool {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				return false
			}
			return len(gw.GatewayListeners()) == 0
		})
		// And back.
		cp.Set(t, gwID, res(true))
		eventually(t, "listener re-bound", func() bool {
			resp, err := plain.Do(&http.Request{Method: http.MethodGet, URL: mustURL("http://" + addr + "/productpage"), Host: "bookinfo.example.com"})
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	})
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestParseGatewayAddress(t *testing.T) {
	tests := []struct {
		in   string
		port int
		addr string
		ok   bool
	}{
		{"8000=127.0.0.1:18000", 8000, "127.0.0.1:18000", true},
		{"127.0.0.1:8443", 8443, "127.0.0.1:8443", true},
		{"0.0.0.0:80", 80, "0.0.0.0:80", true},
		{"x=127.0.0.1:1", 0, "", false},
		{"8000", 0, "", false},
		{"70000=127.0.0.1:1", 0, "", false},
	}
	for _, tc := range tests {
		port, addr, err := proxy.ParseGatewayAddress(tc.in)
		if (err == nil) != tc.ok || port != tc.port || addr != tc.addr {
			t.Errorf("ParseGatewayAddress(%q) = %d %q %v, want %d %q ok=%v", tc.in, port, addr, err, tc.port, tc.addr, tc.ok)
		}
	}
}
