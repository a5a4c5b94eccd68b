package cluster

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestProxyHeader(t *testing.T) {
	v2 := func(rest ...byte) []byte { return append([]byte("\r\n\r\n\x00\r\nQUIT\n"), rest...) }
	ap := netip.MustParseAddrPort
	cases := []struct {
		name     string
		version  int
		src, dst netip.AddrPort
		want     []byte
	}{
		{"v1 IPv4", 1, ap("10.1.2.3:40000"), ap("127.0.0.1:15001"), []byte("PROXY TCP4 10.1.2.3 127.0.0.1 40000 15001\r\n")},
		{"v1 IPv6", 1, ap("[2001:db8::1]:1234"), ap("[::1]:80"), []byte("PROXY TCP6 2001:db8::1 ::1 1234 80\r\n")},
		{"v1 mapped IPv4", 1, ap("[::ffff:10.0.0.1]:5"), ap("10.0.0.2:6"), []byte("PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n")},
		{"v1 mixed families", 1, ap("10.0.0.1:5"), ap("[::1]:6"), []byte("PROXY UNKNOWN\r\n")},
		{"v1 no addresses", 1, netip.AddrPort{}, netip.AddrPort{}, []byte("PROXY UNKNOWN\r\n")},
		{"v2 IPv4", 2, ap("10.1.2.3:40000"), ap("127.0.0.1:15001"),
			v2(0x21, 0x11, 0, 12, 10, 1, 2, 3, 127, 0, 0, 1, 0x9c, 0x40, 0x3a, 0x99)},
		{"v2 IPv6", 2, ap("[2001:db8::1]:1"), ap("[::1]:2"),
			v2(0x21, 0x21, 0, 36, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 2)},
		{"v2 mixed families: LOCAL", 2, ap("10.0.0.1:5"), ap("[::1]:6"), v2(0x20, 0, 0, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProxyHeader(tc.version, tc.src, tc.dst); !bytes.Equal(got, tc.want) {
				t.Fatalf("ProxyHeader = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestProxyProtocolPools: a PROXY protocol cluster gives each downstream
// connection its own pools, keeps them while used, closes them after
// ppPoolIdle unused and keeps at most ppPoolMax.
func TestProxyProtocolPools(t *testing.T) {
	m, fc := newTestManager()
	raw, err := anypb.New(&rawbufferv3.RawBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	pp, err := anypb.New(&ppv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V2},
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: raw}}})
	if err != nil {
		t.Fatal(err)
	}
	pc := eds("c")
	pc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.upstream_proxy_protocol", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: pp}}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": pc}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"10.0.0.1"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := set.Clusters["c"]
	if c.ProxyProtocol == nil || c.ProxyProtocol.Version != 2 || len(c.Warnings) > 0 {
		t.Fatalf("proxy protocol %+v, warnings %v", c.ProxyProtocol, c.Warnings)
	}
	req := func(remote string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		r.RemoteAddr = remote
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15001}))
	}
	a1, _, h1 := c.Pools(req("10.1.1.1:1000"))
	a2, _, h2 := c.Pools(req("10.1.1.1:1000"))
	b1, _, _ := c.Pools(req("10.1.1.1:1001"))
	if a1 != a2 || h1 != h2 || a1 == b1 || a1 == c.Transport {
		t.Fatal("pools are not per downstream connection")
	}
	if t1, _, _ := c.Pools(httptest.NewRequest(http.MethodGet, "http://x/", nil)); t1 != c.Transport {
		t.Fatal("a request without a local address should use the cluster's own pools")
	}
	// Unused for ppPoolIdle: closed on a later lookup.
	fc.Advance(ppPoolIdle + time.Second)
	c.Pools(req("10.1.1.1:1002"))
	if a3, _, _ := c.Pools(req("10.1.1.1:1000")); a3 == a1 {
		t.Fatal("idle downstream pools were kept")
	}
	for i := 0; i < ppPoolMax+10; i++ {
		c.Pools(req("10.2.0.1:" + strconv.Itoa(2000+i)))
	}
	if n := len(c.pp.m); n > ppPoolMax {
		t.Fatalf("%d downstream pool sets kept, want at most %d", n, ppPoolMax)
	}
}

// TestProxyProtocolMaxConnections: max_connections holds across the
// per-downstream pools of a PROXY protocol cluster, not per downstream.
func TestProxyProtocolMaxConnections(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	m, _ := newTestManager()
	raw, _ := anypb.New(&rawbufferv3.RawBuffer{})
	pp, _ := anypb.New(&ppv3.ProxyProtocolUpstreamTransport{Config: &corev3.ProxyProtocolConfig{},
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: raw}}})
	pc := eds("c")
	pc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.upstream_proxy_protocol", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: pp}}
	pc.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(2)}}}
	set, err := m.Build(map[string]*clusterv3.Cluster{"c": pc}, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", []string{"127.0.0.1"})}, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := set.Clusters["c"]
	pools := func(remote string) *http.Transport {
		r := httptest.NewRequest(http.MethodGet, "http://x/", nil)
		r.RemoteAddr = remote
		t1, _, _ := c.Pools(r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15001})))
		return t1
	}
	addr := lis.Addr().String()
	a, err := pools("10.0.0.1:1").DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pools("10.0.0.2:2").DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if c3, err := pools("10.0.0.3:3").DialContext(ctx, "tcp", addr); err == nil {
		c3.Close()
		t.Fatal("a third connection opened with max_connections 2")
	}
	a.Close() // frees a slot
	c3, err := pools("10.0.0.3:3").DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatalf("after a connection closed: %v", err)
	}
	c3.Close()
}
