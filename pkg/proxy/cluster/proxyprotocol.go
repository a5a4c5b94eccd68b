package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ppv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
)

// ProxyProtocol is an executed envoy.transport_sockets.upstream_proxy_protocol
// transport socket (Istio's DestinationRule trafficPolicy.proxyProtocol):
// every upstream connection starts with a PROXY protocol header naming the
// downstream connection's source and destination addresses, before TLS
// when the wrapped socket is TLS.
type ProxyProtocol struct {
	Version int // 1 (text) or 2 (binary)
}

func (p *ProxyProtocol) key() string {
	if p == nil {
		return ""
	}
	return "pp" + strconv.Itoa(p.Version)
}

// unwrapProxyProtocol executes an upstream_proxy_protocol socket: it sets
// c.ProxyProtocol and returns the wrapped socket (nil for raw_buffer).
// Other sockets are returned as they are.
func unwrapProxyProtocol(ts *corev3.TransportSocket, c *Cluster) (*corev3.TransportSocket, error) {
	pp := &ppv3.ProxyProtocolUpstreamTransport{}
	tc := ts.GetTypedConfig()
	if tc == nil || !tc.MessageIs(pp) {
		return ts, nil
	}
	if err := tc.UnmarshalTo(pp); err != nil {
		return nil, fmt.Errorf("transport_socket %s: %w", ts.GetName(), err)
	}
	c.ProxyProtocol = &ProxyProtocol{Version: 1}
	if pp.GetConfig().GetVersion() == corev3.ProxyProtocolConfig_V2 {
		c.ProxyProtocol.Version = 2
	}
	if len(pp.GetConfig().GetPassThroughTlvs().GetTlvType()) > 0 || len(pp.GetConfig().GetAddedTlvs()) > 0 {
		c.Warnings = append(c.Warnings, "upstream_proxy_protocol TLVs not executed: the PROXY header carries addresses only")
	}
	inner := pp.GetTransportSocket()
	if inner == nil || inner.GetTypedConfig().MessageIs(&rawbufferv3.RawBuffer{}) {
		return nil, nil
	}
	return inner, nil
}

// downstreamKey is the context key of the downstream connection's
// addresses (WithDownstream).
type downstreamKey struct{}

// downstream is a downstream connection's source and destination.
type downstream struct{ src, dst netip.AddrPort }

// WithDownstream records the downstream connection's source and
// destination addresses in ctx: DialContext of a PROXY protocol cluster
// sends them in the header. Unparseable addresses are ignored (the header
// then names the upstream connection's own addresses, as Envoy does
// without downstream information).
func WithDownstream(ctx context.Context, src, dst net.Addr) context.Context {
	if src == nil || dst == nil {
		return ctx
	}
	s, err1 := netip.ParseAddrPort(src.String())
	d, err2 := netip.ParseAddrPort(dst.String())
	if err1 != nil || err2 != nil {
		return ctx
	}
	return context.WithValue(ctx, downstreamKey{}, downstream{s, d})
}

// wrapPP makes dial write the PROXY header first on each connection: for
// ds when it is valid, else for the downstream in the dial's context, else
// for the connection's own local (source) and remote (destination)
// addresses.
func (c *Cluster) wrapPP(dial dialFunc, ds downstream) dialFunc {
	pp := c.ProxyProtocol
	if pp == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		d := ds
		if !d.src.IsValid() {
			if v, ok := ctx.Value(downstreamKey{}).(downstream); ok {
				d = v
			} else {
				d.src, _ = netip.ParseAddrPort(conn.LocalAddr().String())
				d.dst, _ = netip.ParseAddrPort(conn.RemoteAddr().String())
			}
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetWriteDeadline(dl)
		}
		if _, err := conn.Write(ProxyHeader(pp.Version, d.src, d.dst)); err != nil {
			conn.Close()
			return nil, fmt.Errorf("write PROXY header to %s: %w", addr, err)
		}
		_ = conn.SetWriteDeadline(time.Time{})
		return conn, nil
	}
}

// v2Signature starts every PROXY protocol v2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// ProxyHeader is the PROXY protocol header (HAProxy's proxy-protocol.txt)
// of version 1 (text) or 2 (binary) for a TCP connection from src to dst.
// IPv4-mapped IPv6 addresses are sent as IPv4; addresses of different
// families, or invalid ones, give "PROXY UNKNOWN" (v1) or a LOCAL command
// (v2), which tell the receiver to use the connection's own addresses.
func ProxyHeader(version int, src, dst netip.AddrPort) []byte {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	known := src.IsValid() && dst.IsValid() && s.Is4() == d.Is4()
	if version != 2 {
		if !known {
			return []byte("PROXY UNKNOWN\r\n")
		}
		fam := "TCP4"
		if s.Is6() {
			fam = "TCP6"
		}
		return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", fam, s, d, src.Port(), dst.Port())
	}
	b := append([]byte(nil), v2Signature...)
	if !known {
		return append(b, 0x20, 0x00, 0, 0) // version 2, LOCAL; AF_UNSPEC; no addresses
	}
	if s.Is4() {
		b = append(b, 0x21, 0x11, 0, 12) // version 2, PROXY; TCP over IPv4; 12 bytes
		s4, d4 := s.As4(), d.As4()
		b = append(append(b, s4[:]...), d4[:]...)
	} else {
		b = append(b, 0x21, 0x21, 0, 36) // TCP over IPv6; 36 bytes
		s16, d16 := s.As16(), d.As16()
		b = append(append(b, s16[:]...), d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// ppPools are a PROXY protocol cluster's HTTP pools, one set per
// downstream connection (source, destination): the header names the
// downstream connection, so upstream connections are not shared between
// downstream ones (Envoy keys its connection pools by the transport socket
// options that carry the addresses). A set unused for ppPoolIdle is
// closed on a later lookup.
type ppPools struct {
	c *Cluster // whose configuration the pools are built from
	// lim is the cluster's max_connections limiter, shared by every
	// downstream's pools and the cluster's own (t1, t2), so the limit
	// holds across the cluster; nil when the cluster has no limit.
	lim    *connLimiter
	t1, t2 *http.Transport
	xc     *XConnect

	mu        sync.Mutex
	m         map[downstream]*ppEntry
	lastSweep time.Time
}

type ppEntry struct {
	t1, t2 *http.Transport
	xc     *XConnect
	h1     *H1Pool
	used   atomic.Int64 // unix ns of the last lookup
}

// ppPoolIdle is how long an unused downstream's pools are kept, and
// ppPoolMax how many downstreams are kept at most (the least recently used
// ones beyond it are closed).
const (
	ppPoolIdle = 2 * time.Minute
	ppPoolMax  = 1024
)

func newPPPools(c *Cluster) *ppPools {
	p := &ppPools{c: c, m: map[downstream]*ppEntry{}, lim: newConnLimiter(c)}
	if p.lim != nil {
		p.lim.onFull = p.closeIdle
	}
	return p
}

// closeIdle closes the idle connections of every pool sharing the
// limiter, so that a dial waiting for a slot does not wait for an idle
// timeout.
func (p *ppPools) closeIdle() {
	p.mu.Lock()
	entries := make([]*ppEntry, 0, len(p.m))
	for _, e := range p.m {
		entries = append(entries, e)
	}
	t1, t2, xc := p.t1, p.t2, p.xc
	p.mu.Unlock()
	for _, e := range entries {
		e.t1.CloseIdleConnections()
		e.t2.CloseIdleConnections()
		e.xc.CloseIdleConnections()
	}
	if t1 != nil {
		t1.CloseIdleConnections()
		t2.CloseIdleConnections()
		xc.CloseIdleConnections()
	}
}

func (p *ppPools) get(ds downstream) *ppEntry {
	now := p.c.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.m[ds]
	if e == nil {
		e = &ppEntry{}
		e.t1, e.t2, e.xc = newTransports(p.c, ds, p.lim)
		e.h1 = newH1Pool(p.c, ds)
		p.m[ds] = e
	}
	e.used.Store(now.UnixNano())
	if len(p.m) > ppPoolMax || now.Sub(p.lastSweep) > ppPoolIdle/4 {
		p.lastSweep = now
		p.sweepLocked(now)
	}
	return e
}

// sweepLocked closes the pools of downstreams idle for ppPoolIdle, and the
// least recently used ones beyond ppPoolMax.
func (p *ppPools) sweepLocked(now time.Time) {
	for k, e := range p.m {
		if now.Sub(time.Unix(0, e.used.Load())) > ppPoolIdle {
			e.close()
			delete(p.m, k)
		}
	}
	for len(p.m) > ppPoolMax {
		var oldest downstream
		var at int64 = -1
		for k, e := range p.m {
			if u := e.used.Load(); at < 0 || u < at {
				oldest, at = k, u
			}
		}
		p.m[oldest].close()
		delete(p.m, oldest)
	}
}

func (e *ppEntry) close() {
	e.t1.CloseIdleConnections()
	e.t2.CloseIdleConnections()
	e.xc.CloseIdleConnections()
	if e.h1 != nil {
		e.h1.Close()
	}
}

func (p *ppPools) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.m {
		e.close()
		delete(p.m, k)
	}
}

// Pools returns the HTTP/1.1 transport, the h2c transport and the own
// HTTP/1.1 pool (nil when the cluster has none) to send r upstream with:
// the cluster's own, or for a PROXY protocol cluster those of r's
// downstream connection (r.RemoteAddr, and the http.LocalAddrContextKey
// of its context), whose connections start with that connection's header.
func (c *Cluster) Pools(r *http.Request) (*http.Transport, *http.Transport, *H1Pool) {
	if c.pp == nil {
		return c.Transport, c.H2C, c.H1
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	ds, ok := downstreamOf(r.RemoteAddr, local)
	if !ok {
		return c.Transport, c.H2C, c.H1
	}
	e := c.pp.get(ds)
	return e.t1, e.t2, e.h1
}

// downstreamOf is the downstream connection of a request from remote
// (its RemoteAddr) to local; false when either does not parse.
func downstreamOf(remote string, local net.Addr) (downstream, bool) {
	src, err := netip.ParseAddrPort(remote)
	if err != nil || local == nil {
		return downstream{}, false
	}
	dst, err := netip.ParseAddrPort(local.String())
	if err != nil {
		return downstream{}, false
	}
	return downstream{src, dst}, true
}
