package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/echotest"
)

// readPPv2 reads a PROXY protocol v2 header (TCP over IPv4) from c byte
// by byte off the wire, leaving what follows (the TLS handshake) unread.
func readPPv2(c net.Conn) (src, dst netip.AddrPort, err error) {
	hdr := make([]byte, 16)
	if _, err = io.ReadFull(c, hdr); err != nil {
		return
	}
	if string(hdr[:12]) != "\r\n\r\n\x00\r\nQUIT\n" || hdr[12] != 0x21 || hdr[13] != 0x11 {
		return src, dst, fmt.Errorf("not a v2 PROXY TCP4 header: %q", hdr)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[14:]))
	if _, err = io.ReadFull(c, body); err != nil || len(body) < 12 {
		return src, dst, fmt.Errorf("short v2 body: %v", err)
	}
	src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:]))
	dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:]))
	return src, dst, nil
}

// TestProxyProtocolUnderMTLS: an ISTIO_MUTUAL socket wrapped in
// upstream_proxy_protocol sends the PROXY header in clear first, then
// the mutual TLS handshake, on opaque dials (the downstream from the
// context) and on the HTTP pools of a downstream connection.
func TestProxyProtocolUnderMTLS(t *testing.T) {
	const serverID, clientID = "spiffe://cluster.local/ns/default/sa/server", "spiffe://cluster.local/ns/default/sa/client"
	serverCert, serverPool := selfSigned(t, serverID)
	clientCert, clientPool := selfSigned(t, clientID)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	srvCfg := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientPool}
	echotest.Serve(t, lis, func(c net.Conn) {
		src, dst, err := readPPv2(c)
		if err != nil {
			_, _ = io.WriteString(c, err.Error())
			return
		}
		tc := tls.Server(c, srvCfg)
		if tc.Handshake() != nil {
			return
		}
		br := bufio.NewReader(tc)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body := fmt.Sprintf("src=%s dst=%s peer=%s", src, dst, tc.ConnectionState().PeerCertificates[0].URIs[0])
			resp := &http.Response{StatusCode: 200, ProtoMajor: 1, ProtoMinor: 1, ContentLength: int64(len(body)),
				Body: io.NopCloser(strings.NewReader(body)), Request: req}
			if resp.Write(tc) != nil {
				return
			}
		}
	})
	tcp := lis.Addr().(*net.TCPAddr)
	wrapped := istioMutual(t, serverID)
	a, err := anypb.New(&ppv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V2}, TransportSocket: wrapped})
	if err != nil {
		t.Fatal(err)
	}
	pc := &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.upstream_proxy_protocol", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{ep("127.0.0.1", uint32(tcp.Port))}}}}}
	m, _ := newTestManager()
	m.SetMTLS(func() *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{clientCert}, InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				_, err = c.Verify(x509.VerifyOptions{Roots: serverPool})
				return err
			}}
	})
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": pc}, nil, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := set.Clusters["c"]
	if c.MTLS == nil || c.ProxyProtocol == nil || len(c.Warnings) > 0 {
		t.Fatalf("MTLS %v, proxy protocol %v, warnings %v", c.MTLS, c.ProxyProtocol, c.Warnings)
	}

	// Opaque (tcp_proxy / CONNECT): the downstream comes in the context.
	down := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15001}
	conn, err := c.DialContext(WithDownstream(context.Background(), down, local), "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if want := "src=10.1.2.3:40000 dst=127.0.0.1:15001 peer=" + clientID; string(b) != want {
		t.Fatalf("opaque dial: server saw %q, want %q", b, want)
	}

	// HTTP: the pools of the request's downstream connection.
	r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
	r.RemoteAddr = "10.9.8.7:5555"
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
	t1, _, _ := c.Pools(r)
	out, _ := http.NewRequest(http.MethodGet, "http://"+lis.Addr().String()+"/", nil)
	resp, err = t1.RoundTrip(out)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "src=10.9.8.7:5555 dst=127.0.0.1:15001 peer=" + clientID; string(b) != want {
		t.Fatalf("HTTP pool: server saw %q, want %q", b, want)
	}
}
