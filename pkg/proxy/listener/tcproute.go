package listener

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"crypto/tls"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// TCPRoute is one outbound tcp_proxy filter chain: the clusters it sends
// connections to (weighted) and, on TLS listeners, the server names its
// filter_chain_match selects.
type TCPRoute struct {
	ServerNames []string
	Clusters    []WeightedCluster
	total       uint64
	// Sniffed: the listener also has an HTTP chain (a port without a
	// declared protocol), so a connection is HTTP or TCP by its first bytes.
	Sniffed bool
	// Tunnel (nil: none) carries the connection to the cluster's host in
	// an HTTP CONNECT/POST tunnel (tcp_proxy tunneling_config).
	Tunnel *Tunnel
}

// WeightedCluster is a tcp_proxy destination.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// Pick returns a cluster name, chosen by weight with the random number r.
func (t *TCPRoute) Pick(r uint32) string {
	if len(t.Clusters) == 1 || t.total == 0 {
		return t.Clusters[0].Name
	}
	n := uint64(r) % t.total
	for _, c := range t.Clusters {
		if n < uint64(c.Weight) {
			return c.Name
		}
		n -= uint64(c.Weight)
	}
	return t.Clusters[len(t.Clusters)-1].Name
}

// CompileTCPRoute returns the route of filter chain fc's tcp_proxy tp
// (nil when it names no cluster).
func CompileTCPRoute(fc *listenerv3.FilterChain, tp *tcpv3.TcpProxy) *TCPRoute {
	return compileTCPRoute(fc, tp)
}

func compileTCPRoute(fc *listenerv3.FilterChain, tp *tcpv3.TcpProxy) *TCPRoute {
	t := &TCPRoute{Tunnel: CompileTunnel(tp)}
	for _, n := range fc.GetFilterChainMatch().GetServerNames() {
		t.ServerNames = append(t.ServerNames, strings.ToLower(n))
	}
	if c := tp.GetCluster(); c != "" {
		t.Clusters = []WeightedCluster{{Name: c, Weight: 1}}
	}
	for _, w := range tp.GetWeightedClusters().GetClusters() {
		t.Clusters = append(t.Clusters, WeightedCluster{Name: w.GetName(), Weight: w.GetWeight()})
		t.total += uint64(w.GetWeight())
	}
	if len(t.Clusters) == 0 {
		return nil
	}
	return t
}

// outboundTCP indexes the outbound tcp_proxy listeners: by listener
// address (a service VIP, or 0.0.0.0 for the port's wildcard listener) and
// by the service host each chain serves, for CONNECT tunnels that name it.
type outboundTCP struct {
	byAddr map[netip.AddrPort][]*TCPRoute
	byHost map[string]*TCPRoute // "host:port"
}

var wildcardAddr = netip.IPv4Unspecified()

// add records listener l's chain. The service host of a plain TCP chain is
// read from its stat prefix, which the translator (like Istio) sets to the
// cluster name outbound|PORT||HOST; a TLS chain serves its server names.
func (o *outboundTCP) add(l *listenerv3.Listener, port int, t *TCPRoute, statPrefix string) {
	addr := wildcardAddr
	if a, err := netip.ParseAddr(l.GetAddress().GetSocketAddress().GetAddress()); err == nil {
		addr = a.Unmap()
	}
	if o.byAddr == nil {
		o.byAddr, o.byHost = map[netip.AddrPort][]*TCPRoute{}, map[string]*TCPRoute{}
	}
	ap := netip.AddrPortFrom(addr, uint16(port))
	o.byAddr[ap] = append(o.byAddr[ap], t)
	hosts := t.ServerNames
	if len(hosts) == 0 {
		if f := strings.Split(statPrefix, "|"); len(f) == 4 && f[0] == "outbound" && f[1] == strconv.Itoa(port) && f[3] != "" {
			hosts = []string{strings.ToLower(f[3])}
		}
	}
	for _, h := range hosts {
		if strings.HasPrefix(h, "*") {
			continue
		}
		k := net.JoinHostPort(h, strconv.Itoa(port))
		if _, taken := o.byHost[k]; !taken {
			o.byHost[k] = t
		}
	}
}

// forAddr returns the chains of the listener for a connection's original
// destination: the listener on that exact address, else the port's
// wildcard listener.
func (o *outboundTCP) forAddr(dst netip.AddrPort) []*TCPRoute {
	if ts, ok := o.byAddr[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]; ok {
		return ts
	}
	return o.byAddr[netip.AddrPortFrom(wildcardAddr, dst.Port())]
}

// forHost returns the chain serving host:port (a CONNECT target).
func (o *outboundTCP) forHost(host string, port int) *TCPRoute {
	return o.byHost[net.JoinHostPort(strings.TrimSuffix(strings.ToLower(host), "."), strconv.Itoa(port))]
}

// needsSNI reports whether choosing among chains needs the server name.
func needsSNI(chains []*TCPRoute) bool {
	for _, t := range chains {
		if len(t.ServerNames) > 0 {
			return true
		}
	}
	return false
}

// matchSNI picks the chain for a server name as Envoy's filter chain match
// does: an exact name, then the longest matching wildcard, then a chain
// without server names.
func matchSNI(chains []*TCPRoute, sni string) *TCPRoute {
	sni = strings.ToLower(sni)
	var best *TCPRoute
	bestScore := -1
	for _, t := range chains {
		if len(t.ServerNames) == 0 {
			if bestScore < 0 {
				best, bestScore = t, 0
			}
			continue
		}
		for _, n := range t.ServerNames {
			if s := ServerNameScore(n, sni); s > bestScore {
				best, bestScore = t, s
			}
		}
	}
	return best
}

// ServerNameScore rates how specifically the filter-chain server name
// pattern matches sni: -1 no match, a large score for an exact match, the
// pattern's length for a "*.example.com" wildcard (longer is more
// specific). Both are compared case-insensitively.
func ServerNameScore(pattern, sni string) int {
	pattern, sni = strings.ToLower(pattern), strings.ToLower(sni)
	switch {
	case sni == "":
		return -1
	case pattern == sni:
		return 1 << 20
	case strings.HasPrefix(pattern, "*.") && strings.HasSuffix(sni, pattern[1:]) && len(sni) > len(pattern)-1:
		return len(pattern)
	}
	return -1
}

// MaxClientHello bounds how much of a TLS ClientHello record is peeked.
const MaxClientHello = 16*1024 + 5

// PeekSNI returns the server name of the TLS ClientHello at the head of br
// without consuming it, lowercased ("" if there is none or it cannot be
// parsed). br
// must be able to buffer MaxClientHello bytes.
func PeekSNI(br *bufio.Reader) string {
	hdr, err := br.Peek(5)
	if err != nil || hdr[0] != 0x16 { // not a TLS handshake record
		return ""
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	rec, err := br.Peek(min(5+n, MaxClientHello, br.Size()))
	if err != nil {
		return ""
	}
	var sni string
	errDone := errors.New("done")
	srv := tls.Server(&readOnlyConn{r: bytes.NewReader(rec)}, &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = hello.ServerName
			return nil, errDone
		}})
	_ = srv.Handshake()
	return strings.ToLower(sni)
}

// readOnlyConn feeds a recorded ClientHello to crypto/tls.
type readOnlyConn struct {
	r io.Reader
	net.Conn
}

func (c *readOnlyConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *readOnlyConn) Write(p []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (c *readOnlyConn) Close() error                     { return nil }
func (c *readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (c *readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (c *readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
func (c *readOnlyConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *readOnlyConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
