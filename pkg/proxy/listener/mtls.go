package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// InboundTLS is what virtualInbound's filter chains for one destination
// port accept (PeerAuthentication as translated): TLS chains
// (transport_protocol "tls" with a DownstreamTlsContext) and plaintext
// chains ("raw_buffer" or no transport protocol match).
type InboundTLS struct {
	TLS, Plain bool
	// ALPN is what the server offers in the TLS handshake: the protocols
	// of the TLS chains' DownstreamTlsContexts (Istio: istio-peer-exchange
	// only on opaque TCP chains), with "istio" added so that mesh clients
	// offering only Istio's protocols are not refused (Go's server fails a
	// handshake without a common protocol, Envoy's carries on); nil: the
	// listener's default.
	ALPN []string
	// Exchange is the ALPN protocol of an istio.metadata_exchange filter
	// on the port's chains, "" without one: a connection that negotiates
	// it runs the TCP metadata exchange (package peerexchange).
	Exchange string
}

// Mode names the policy as Istio's PeerAuthentication modes.
func (m InboundTLS) Mode() string {
	switch {
	case m.TLS && m.Plain:
		return "PERMISSIVE"
	case m.TLS:
		return "STRICT"
	}
	return "DISABLE"
}

// InboundTLSFor inspects virtualInbound's filter chains for destination
// port (falling back to chains without a port); port AnyPort takes every
// chain. Without a virtualInbound listener or chains, plaintext only is
// accepted.
func InboundTLSFor(res *xdsclient.Resources, port int) InboundTLS {
	var m, fallback InboundTLS
	found := false
	if res == nil {
		return InboundTLS{Plain: true}
	}
	l := res.Listeners["virtualInbound"]
	for _, fc := range l.GetFilterChains() {
		tgt := &fallback
		switch p := int(fc.GetFilterChainMatch().GetDestinationPort().GetValue()); {
		case p == port || port == AnyPort:
			tgt, found = &m, true
		case p != 0:
			continue
		}
		isTLS := fc.GetFilterChainMatch().GetTransportProtocol() == "tls"
		if isTLS && fc.GetTransportSocket() != nil && fc.GetTransportSocket().GetTypedConfig().MessageIs(&tlsv3.DownstreamTlsContext{}) {
			tgt.TLS = true
			tgt.addChainTLS(fc)
		} else if !isTLS {
			tgt.Plain = true
		}
	}
	if !found {
		m = fallback
	}
	if !m.TLS && !m.Plain {
		m.Plain = true
	}
	if m.ALPN != nil && !slices.Contains(m.ALPN, "istio") {
		m.ALPN = append(m.ALPN, "istio")
	}
	if i := slices.Index(m.ALPN, peerexchange.Protocol); i > 0 { // several chains: the exchange first
		m.ALPN = slices.Insert(slices.Delete(m.ALPN, i, i+1), 0, peerexchange.Protocol)
	}
	return m
}

// AnyPort makes InboundTLSFor take every chain: for the explicit-mode
// inbound listener, which serves every port of the workload on one
// address, so a connection's port is not known before the handshake.
const AnyPort = -1

// InboundTLSCache memoizes InboundTLSFor per configuration (Resources are
// immutable once compiled) and port, so accepting a connection does not
// unmarshal the chains' TLS contexts again. Safe for concurrent use.
type InboundTLSCache struct {
	mu  sync.Mutex
	res *xdsclient.Resources
	m   map[int]InboundTLS
}

// For returns InboundTLSFor(res, port), computed once per res and port.
func (c *InboundTLSCache) For(res *xdsclient.Resources, port int) InboundTLS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.res != res || c.m == nil {
		c.res, c.m = res, map[int]InboundTLS{}
	}
	if v, ok := c.m[port]; ok {
		return v
	}
	v := InboundTLSFor(res, port)
	c.m[port] = v
	return v
}

// addChainTLS adds a TLS chain's ALPN protocols and metadata exchange
// filter to m.
func (m *InboundTLS) addChainTLS(fc *listenerv3.FilterChain) {
	ctx := &tlsv3.DownstreamTlsContext{}
	if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err == nil {
		for _, p := range ctx.GetCommonTlsContext().GetAlpnProtocols() {
			if !slices.Contains(m.ALPN, p) {
				m.ALPN = append(m.ALPN, p)
			}
		}
	}
	for _, f := range fc.GetFilters() {
		if f.GetName() == peerexchange.FilterName {
			m.Exchange = exchangeProtocol(f.GetTypedConfig())
		}
	}
}

// exchangeProtocol is the ALPN protocol of an istio.metadata_exchange
// filter config (a TypedStruct with `protocol`), istio-peer-exchange by
// default.
func exchangeProtocol(tc *anypb.Any) string {
	ts := &xdstypev3.TypedStruct{}
	if tc != nil && tc.MessageIs(ts) && tc.UnmarshalTo(ts) == nil {
		if p := ts.GetValue().GetFields()["protocol"].GetStringValue(); p != "" {
			return p
		}
	}
	return peerexchange.Protocol
}

// PeerAddr is the RemoteAddr of a connection accepted over mutual TLS; it
// carries the handshake state (peer certificates) through wrappers such as
// SniffListener, which delegate RemoteAddr.
type PeerAddr struct {
	net.Addr
	State *tls.ConnectionState
	// Peer is what the client's TCP metadata exchange frame said, nil
	// without one.
	Peer *peerexchange.Peer
}

// PeerTLS returns the mutual-TLS state of a connection accepted by an
// MTLSListener, or nil for plaintext.
func PeerTLS(c net.Conn) *tls.ConnectionState {
	if c == nil {
		return nil
	}
	if pa, ok := c.RemoteAddr().(*PeerAddr); ok {
		return pa.State
	}
	return nil
}

// PeerPrincipal is the peer's SPIFFE ID (first URI SAN of its certificate),
// or "".
func PeerPrincipal(st *tls.ConnectionState) string {
	if st == nil || len(st.PeerCertificates) == 0 || len(st.PeerCertificates[0].URIs) == 0 {
		return ""
	}
	return st.PeerCertificates[0].URIs[0].String()
}

// MTLSListener terminates inbound mutual TLS before protocol sniffing:
// each connection is classified by its first byte (a TLS handshake record
// or plaintext) and accepted or refused according to Policy (STRICT
// refuses plaintext, DISABLE refuses TLS, PERMISSIVE takes both). TLS
// connections are handshaken with Config (client certificates required) and
// returned with a PeerAddr remote address.
type MTLSListener struct {
	net.Listener
	// Config returns the server mTLS configuration per handshake.
	Config func() *tls.Config
	// Policy returns the current policy for a new connection (from the
	// latest Runtime and the connection's destination port).
	Policy func(c net.Conn) InboundTLS
	// OnRefused is called for each refused connection (for metrics); may be
	// nil.
	OnRefused func(reason string)
	// HandshakeTimeout bounds classification, the handshake and the
	// metadata exchange (default 10s).
	HandshakeTimeout time.Duration
	// PeerFrame is this workload's metadata exchange frame
	// (PeerExchangeFrame), written on connections that negotiate the
	// exchange on a port with the exchange filter; nil turns it off.
	PeerFrame []byte
	// OnExchange, when set, is called with each exchange's outcome: nil,
	// or why there is no peer metadata (peerexchange errors).
	OnExchange func(err error)
	Log        *slog.Logger
	// Ctx ends background work; nil means context.Background().
	Ctx context.Context

	once  sync.Once
	conns chan net.Conn
	errc  chan error
	done  chan struct{}
}

func (m *MTLSListener) start() {
	m.conns = make(chan net.Conn)
	m.errc = make(chan error, 1)
	m.done = make(chan struct{})
	if m.HandshakeTimeout <= 0 {
		m.HandshakeTimeout = 10 * time.Second
	}
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
	if m.Ctx == nil {
		m.Ctx = context.Background()
	}
	go func() {
		for {
			c, err := m.Listener.Accept()
			if err != nil {
				m.errc <- err
				return
			}
			go m.classify(c)
		}
	}()
}

func (m *MTLSListener) refuse(c net.Conn, reason string) {
	m.Log.Debug("inbound connection refused", "peer", c.RemoteAddr().String(), "reason", reason)
	if m.OnRefused != nil {
		m.OnRefused(reason)
	}
	c.Close()
}

func (m *MTLSListener) classify(c net.Conn) {
	pol := m.Policy(c)
	deadline := time.Now().Add(m.HandshakeTimeout)
	if pol.Plain {
		// Server-first plaintext protocols send nothing: do not hold them
		// for the whole handshake timeout.
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	} else {
		_ = c.SetReadDeadline(deadline)
	}
	br := bufio.NewReaderSize(c, 4096)
	b, err := br.Peek(1)
	_ = c.SetDeadline(deadline)
	isTLS := err == nil && b[0] == 0x16
	if err != nil && !isTimeout(err) {
		c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: br}
	var out net.Conn
	switch {
	case isTLS && pol.TLS:
		cfg := m.Config()
		if pol.ALPN != nil {
			cfg.NextProtos = pol.ALPN
		}
		tc := tls.Server(pc, cfg)
		ctx, cancel := context.WithDeadline(m.Ctx, deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			m.refuse(c, "tls handshake: "+err.Error())
			return
		}
		st := tc.ConnectionState()
		pa := &PeerAddr{Addr: c.RemoteAddr(), State: &st}
		var conn net.Conn = tc
		if pol.Exchange != "" && st.NegotiatedProtocol == pol.Exchange && len(m.PeerFrame) > 0 {
			xc, err := peerexchange.Exchange(tc, m.PeerFrame, deadline)
			if m.OnExchange != nil {
				m.OnExchange(err)
			}
			if xc == nil {
				m.refuse(c, err.Error())
				return
			}
			if err != nil {
				m.Log.Debug("inbound metadata exchange: no peer metadata", "peer", c.RemoteAddr().String(), "err", err)
			}
			conn, pa.Peer = xc, xc.Peer
		}
		out = &mtlsConn{Conn: conn, addr: pa}
	case isTLS:
		m.refuse(c, "tls on a plaintext-only port (PeerAuthentication DISABLE)")
		return
	case pol.Plain:
		out = pc
	default:
		m.refuse(c, "plaintext on an mTLS STRICT port")
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case m.conns <- out:
	case <-m.done:
		c.Close()
	}
}

// Accept returns the next admitted connection.
func (m *MTLSListener) Accept() (net.Conn, error) {
	m.once.Do(m.start)
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errc:
		m.errc <- err
		return nil, err
	}
}

// Close closes the underlying listener.
func (m *MTLSListener) Close() error {
	m.once.Do(m.start)
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	return m.Listener.Close()
}

// mtlsConn is an accepted mutual TLS connection (a *tls.Conn, or a
// *peerexchange.Conn around one after the metadata exchange).
type mtlsConn struct {
	net.Conn
	addr *PeerAddr
}

func (c *mtlsConn) RemoteAddr() net.Addr { return c.addr }

// NetConn returns the TLS connection (or the exchange's wrapper of it).
func (c *mtlsConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection (TLS close_notify).
func (c *mtlsConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
