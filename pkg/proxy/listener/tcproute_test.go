package listener

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

func tcpChain(t *testing.T, serverNames []string, statPrefix string, clusters ...*tcpv3.TcpProxy_WeightedCluster_ClusterWeight) *listenerv3.FilterChain {
	tp := &tcpv3.TcpProxy{StatPrefix: statPrefix}
	if len(clusters) == 1 {
		tp.ClusterSpecifier = &tcpv3.TcpProxy_Cluster{Cluster: clusters[0].Name}
	} else {
		tp.ClusterSpecifier = &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: clusters}}
	}
	a, err := anypb.New(tp)
	if err != nil {
		t.Fatal(err)
	}
	fc := &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}
	if len(serverNames) > 0 {
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: serverNames}
	}
	return fc
}

func hcmChain(t *testing.T, rds string) *listenerv3.FilterChain {
	a, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "outbound_" + rds, RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rds}}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.FilterChain{Name: "http", FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1", "h2c"}},
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}
}

func cw(name string, w uint32) *tcpv3.TcpProxy_WeightedCluster_ClusterWeight {
	return &tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: name, Weight: w}
}

func tcpListenerAt(name, addr string, port uint32, chains ...*listenerv3.FilterChain) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, FilterChains: chains,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}
}

// TestOutboundTCPRouting: several TCP services on one port are told apart
// by their VIP listeners (captured connections) and by host (CONNECT); a
// TLS listener picks its chain by SNI and weights its clusters; a TCP
// service on an HTTP port does not capture the HTTP services' CONNECTs.
func TestOutboundTCPRouting(t *testing.T) {
	const (
		dbA    = "outbound|3306||db-a.ns.svc.cluster.local"
		dbB    = "outbound|3306||db-b.ns.svc.cluster.local"
		dbC    = "outbound|3306||db-c.ns.svc.cluster.local"
		legacy = "outbound|80||legacy.ns.svc.cluster.local"
		apiV1  = "outbound|443|v1|api.example.com"
		apiV2  = "outbound|443|v2|api.example.com"
		wild   = "outbound|443||wild.example.com"
		ledger = "outbound|7070||ledger.ns.svc.cluster.local"
	)
	res := xdsclient.NewResources()
	for _, l := range []*listenerv3.Listener{
		tcpListenerAt("10.0.0.5_3306", "10.0.0.5", 3306, tcpChain(t, nil, dbA, cw(dbA, 1))),
		tcpListenerAt("10.0.0.6_3306", "10.0.0.6", 3306, tcpChain(t, nil, dbB, cw(dbB, 1))),
		tcpListenerAt("0.0.0.0_3306", "0.0.0.0", 3306, tcpChain(t, nil, dbC, cw(dbC, 1))),
		tcpListenerAt("10.0.0.7_80", "10.0.0.7", 80, tcpChain(t, nil, legacy, cw(legacy, 1))),
		// A port without a declared protocol: HTTP chain + TCP chain.
		tcpListenerAt("10.0.0.9_7070", "10.0.0.9", 7070, hcmChain(t, "7070"), tcpChain(t, nil, ledger, cw(ledger, 1))),
		tcpListenerAt("0.0.0.0_443", "0.0.0.0", 443,
			tcpChain(t, []string{"API.example.com"}, "api.example.com|0|api.ns", cw(apiV1, 80), cw(apiV2, 20)),
			tcpChain(t, []string{"*.example.com"}, "wild.example.com|~default", cw(wild, 1))),
	} {
		res.Listeners[l.Name] = l
	}
	res.Routes["80"] = &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "web", Domains: []string{"web.ns.svc.cluster.local"}}}}
	rt, err := Build(res, cluster.NewManager(nil, nil, nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pick := func(ts []*TCPRoute, sni string) string {
		if tr := matchSNI(ts, sni); tr != nil {
			return tr.Pick(0)
		}
		return ""
	}
	for _, c := range []struct {
		dst, sni, want string
	}{
		{"10.0.0.5:3306", "", dbA},
		{"10.0.0.6:3306", "", dbB},
		{"10.9.9.9:3306", "", dbC}, // no VIP listener: the port's wildcard one
		{"[::ffff:10.0.0.6]:3306", "", dbB},
		{"10.0.0.7:80", "", legacy},
		{"10.0.0.8:80", "", ""}, // HTTP port: no TCP listener
		{"1.2.3.4:443", "api.example.com", apiV1},
		{"1.2.3.4:443", "x.example.com", wild},
		{"1.2.3.4:443", "example.org", ""},
	} {
		if got := pick(rt.TCP.forAddr(netip.MustParseAddrPort(c.dst)), c.sni); got != c.want {
			t.Errorf("captured %s (SNI %q): cluster %q, want %q", c.dst, c.sni, got, c.want)
		}
	}
	for _, c := range []struct{ target, want string }{
		{"db-b.ns.svc.cluster.local:3306", dbB},
		{"DB-A.ns.svc.cluster.local.:3306", dbA},
		{"10.0.0.5:3306", dbA},
		{"db-c.ns.svc.cluster.local:3306", dbC},
		{"legacy.ns.svc.cluster.local:80", legacy},
		{"web.ns.svc.cluster.local:80", ""}, // the HTTP route table's
		{"unknown.example.org:3306", ""},    // not the wildcard listener's service
		{"api.example.com:443", apiV1},
		{"db-b:3306", dbB}, // short names complete in the proxy's namespace
		{"db-b.ns:3306", dbB},
		{"db-b.other:3306", ""},
		{"ledger:7070", ledger}, // a tunnel is opaque: the sniffed port's TCP chain
	} {
		got := ""
		if tr := rt.connectTCPRoute(c.target, hostPort(c.target, 443), "ns"); tr != nil {
			got = tr.Pick(0)
		}
		if got != c.want {
			t.Errorf("CONNECT %s: cluster %q, want %q", c.target, got, c.want)
		}
	}
	// Weights: 80/20 over the random number's range.
	tr := rt.connectTCPRoute("api.example.com:443", 443, "ns")
	n := map[string]int{}
	for r := range uint32(100) {
		n[tr.Pick(r)]++
	}
	if n[apiV1] != 80 || n[apiV2] != 20 {
		t.Errorf("weighted picks: %v, want 80/20", n)
	}
	// Captured connections: TCP listener → opaque, HTTP port → HTTP, else sniff.
	h := &Handler{Runtime: func() *Runtime { return rt }}
	for dst, want := range map[string]Decision{"10.0.0.7:80": AsTCP, "10.9.9.9:3306": AsTCP, "10.0.0.8:80": AsHTTP, "10.0.0.8:9999": Sniff,
		"10.0.0.9:7070": Sniff} {
		od := netip.MustParseAddrPort(dst)
		h.OrigDst = func(net.Conn) (netip.AddrPort, bool) { return od, true }
		if got := h.OutboundDecision(nil); got != want {
			t.Errorf("decision for %s: %d, want %d", dst, got, want)
		}
	}
}

// TestPeekSNI reads a real ClientHello's server name and leaves its bytes
// for the connection's reader.
func TestPeekSNI(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		_ = tls.Client(c, &tls.Config{ServerName: "db.Example.com", InsecureSkipVerify: true}).Handshake()
	}()
	pc, sni := peekConnSNI(s)
	if sni != "db.example.com" {
		t.Fatalf("SNI %q", sni)
	}
	hdr := make([]byte, 5)
	if _, err := pc.Read(hdr); err != nil || hdr[0] != 0x16 {
		t.Fatalf("ClientHello consumed: %x %v", hdr, err)
	}
	s.Close()
	if got := PeekSNI(bufio.NewReader(&readOnlyConn{r: bufio.NewReader(nilReader{})})); got != "" {
		t.Fatalf("SNI of nothing: %q", got)
	}
}

type nilReader struct{}

func (nilReader) Read([]byte) (int, error) { return 0, net.ErrClosed }
