package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/proxy/cluster/lb"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// gwChain is one compiled gateway filter chain.
type gwChain struct {
	name        string
	serverNames []string    // SNI match; empty matches any
	tls         *tls.Config // non-nil: terminate TLS
	// meshTLS: terminate the mesh's mutual TLS (Gateway ISTIO_MUTUAL, SDS
	// "default"/"ROOTCA") with the proxy's workload certificate, taken per
	// handshake so rotation applies; alpn is the chain's ALPN list.
	meshTLS    bool
	alpn       []string
	route      string // HCM: the RDS route configuration name
	tcpCluster string // tcp_proxy: the (first) upstream cluster
	// tcpRoute is the tcp_proxy's clusters with their weights and its
	// tunneling_config; a connection picks one by weight.
	tcpRoute *listener.TCPRoute
}

// gwConfig is the compiled form of one gateway listener.
type gwConfig struct {
	port int
	// network and addr, when set, are where the listener binds: a
	// sidecar's bound listener ("tcp" HOST:PORT or "unix" PATH, its own
	// address); empty for a gateway's, bound by port (bindAddr).
	network, addr string
	chains        []*gwChain
}

// match picks the filter chain for a connection as Envoy does with the TLS
// inspector: TLS connections prefer the chain with the most specific
// matching server name (exact, then the longest wildcard), then a TLS chain
// without server names; plaintext connections take a chain that neither
// terminates TLS nor matches server names.
func (c *gwConfig) match(isTLS bool, sni string) *gwChain {
	if !isTLS {
		for _, ch := range c.chains {
			if !ch.terminates() && len(ch.serverNames) == 0 {
				return ch
			}
		}
		return nil
	}
	var best *gwChain
	bestScore := -1
	for _, ch := range c.chains {
		if len(ch.serverNames) == 0 {
			if ch.terminates() && bestScore < 0 {
				best, bestScore = ch, 0
			}
			continue
		}
		for _, n := range ch.serverNames {
			if score := listener.ServerNameScore(n, sni); score > bestScore {
				best, bestScore = ch, score
			}
		}
	}
	return best
}

// terminates reports whether the chain terminates TLS.
func (ch *gwChain) terminates() bool { return ch.tls != nil || ch.meshTLS }

// compileGateway compiles the gateway listeners (every listener except the
// sidecar's virtual ones) into per-listener configs by name.
// Chains whose TLS certificate is not inline (an unresolved credential) or
// does not parse, and ISTIO_MUTUAL chains of a proxy without a workload
// certificate (mesh false), are skipped with a warning rather than
// rejecting the whole update.
func compileGateway(ls map[string]*listenerv3.Listener, mesh bool) (map[string]*gwConfig, []string, error) {
	return compileListeners(ls, mesh, false)
}

// compileBound compiles a sidecar's bound listeners: the outbound
// listeners other than the virtual ones whose bind_to_port is explicitly
// true (the translator's Sidecar egress listeners with a bind address or
// captureMode NONE; the per-service listeners have it false and only
// match captured connections), each bound on its own address (socket
// address, or a pipe path as a unix socket).
func compileBound(ls map[string]*listenerv3.Listener, mesh bool) (map[string]*gwConfig, []string, error) {
	return compileListeners(ls, mesh, true)
}

func compileListeners(ls map[string]*listenerv3.Listener, mesh, bound bool) (map[string]*gwConfig, []string, error) {
	var warnings []string
	out := map[string]*gwConfig{}
	for name, l := range ls {
		if name == "virtualInbound" || name == "virtualOutbound" {
			continue
		}
		port := int(l.GetAddress().GetSocketAddress().GetPortValue())
		cfg := &gwConfig{port: port}
		if bound {
			if !l.GetBindToPort().GetValue() || l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
				continue
			}
			switch a := l.GetAddress(); {
			case a.GetPipe() != nil && a.GetPipe().GetPath() != "":
				cfg.network, cfg.addr = "unix", a.GetPipe().GetPath()
			case port > 0:
				cfg.network, cfg.addr = "tcp", net.JoinHostPort(a.GetSocketAddress().GetAddress(), strconv.Itoa(port))
			default:
				continue
			}
		} else if port == 0 {
			continue
		}
		chains := l.GetFilterChains()
		if d := l.GetDefaultFilterChain(); d != nil {
			chains = append(append([]*listenerv3.FilterChain{}, chains...), d)
		}
		for _, fc := range chains {
			ch, err := compileChain(fc, mesh)
			if errors.Is(err, errNoCert) {
				warnings = append(warnings, fmt.Sprintf("listener %q: filter chain %q skipped: %v", name, fc.GetName(), err))
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("listener %q: filter chain %q: %w", name, fc.GetName(), err)
			}
			if ch != nil {
				cfg.chains = append(cfg.chains, ch)
			}
		}
		out[name] = cfg
	}
	return out, warnings, nil
}

func compileChain(fc *listenerv3.FilterChain, mesh bool) (*gwChain, error) {
	ch := &gwChain{name: fc.GetName(), serverNames: fc.GetFilterChainMatch().GetServerNames()}
	for _, f := range fc.GetFilters() {
		tc := f.GetTypedConfig()
		if tc == nil {
			continue
		}
		hcm := &hcmv3.HttpConnectionManager{}
		tp := &tcpv3.TcpProxy{}
		switch {
		case tc.MessageIs(hcm):
			if err := tc.UnmarshalTo(hcm); err != nil {
				return nil, fmt.Errorf("http_connection_manager: %w", err)
			}
			ch.route = hcm.GetRds().GetRouteConfigName()
			if ch.route == "" {
				return nil, fmt.Errorf("%w: gateway http_connection_manager without RDS", ErrUnsupported)
			}
		case tc.MessageIs(tp):
			if err := tc.UnmarshalTo(tp); err != nil {
				return nil, fmt.Errorf("tcp_proxy: %w", err)
			}
			if ch.tcpRoute = listener.CompileTCPRoute(fc, tp); ch.tcpRoute != nil {
				ch.tcpCluster = ch.tcpRoute.Clusters[0].Name
			}
		}
	}
	if ch.route == "" && ch.tcpCluster == "" {
		return nil, nil
	}
	if ts := fc.GetTransportSocket(); ts != nil {
		ctx := &tlsv3.DownstreamTlsContext{}
		if tc := ts.GetTypedConfig(); tc == nil || !tc.MessageIs(ctx) {
			return nil, fmt.Errorf("%w: transport socket %q", ErrUnsupported, ts.GetName())
		} else if err := tc.UnmarshalTo(ctx); err != nil {
			return nil, fmt.Errorf("downstream tls context: %w", err)
		}
		if isMeshTLS(ctx) {
			if !mesh {
				return nil, fmt.Errorf("%w: ISTIO_MUTUAL needs the proxy's workload certificate (weft proxy --ca-address ...)", errNoCert)
			}
			if !ctx.GetRequireClientCertificate().GetValue() {
				return nil, fmt.Errorf("%w: mesh TLS without required client certificates", ErrUnsupported)
			}
			ch.meshTLS, ch.alpn = true, ctx.GetCommonTlsContext().GetAlpnProtocols()
			return ch, nil
		}
		cfg, err := serverTLS(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errNoCert, err)
		}
		ch.tls = cfg
	}
	return ch, nil
}

// ErrUnsupported marks configuration the gateway cannot execute (NACKed).
var ErrUnsupported = errors.New("unsupported")

// errNoCert marks a TLS chain without a usable certificate: the chain is
// skipped (like Envoy warming a listener whose secret is missing), the rest
// of the update applies.
var errNoCert = errors.New("no usable certificate")

func dataSource(d *corev3.DataSource) ([]byte, error) {
	switch {
	case d == nil:
		return nil, errors.New("missing data source")
	case d.GetInlineBytes() != nil:
		return d.GetInlineBytes(), nil
	case d.GetInlineString() != "":
		return []byte(d.GetInlineString()), nil
	case d.GetFilename() != "":
		b, err := os.ReadFile(d.GetFilename())
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", d.GetFilename(), err)
		}
		return b, nil
	}
	return nil, errors.New("empty data source")
}

// isMeshTLS reports whether ctx is the mesh's mutual TLS: no inline
// certificate, the workload certificate by SDS name "default" and the mesh
// roots ("ROOTCA") as validation context.
func isMeshTLS(ctx *tlsv3.DownstreamTlsContext) bool {
	common := ctx.GetCommonTlsContext()
	sds := common.GetTlsCertificateSdsSecretConfigs()
	if len(common.GetTlsCertificates()) > 0 || len(sds) != 1 || sds[0].GetName() != "default" {
		return false
	}
	root := common.GetValidationContextSdsSecretConfig()
	if c := common.GetCombinedValidationContext(); c != nil {
		root = c.GetValidationContextSdsSecretConfig()
	}
	return root.GetName() == "ROOTCA"
}

// serverTLS builds a server tls.Config from a DownstreamTlsContext with
// inline (or file) certificates; SDS references are not resolved.
func serverTLS(ctx *tlsv3.DownstreamTlsContext) (*tls.Config, error) {
	common := ctx.GetCommonTlsContext()
	certs := common.GetTlsCertificates()
	if len(certs) == 0 {
		names := []string{}
		for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
			names = append(names, s.GetName())
		}
		return nil, fmt.Errorf("no inline certificate (SDS secrets %v are not served)", names)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	for _, c := range certs {
		chain, err := dataSource(c.GetCertificateChain())
		if err != nil {
			return nil, fmt.Errorf("certificate chain: %w", err)
		}
		key, err := dataSource(c.GetPrivateKey())
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		pair, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
		cfg.Certificates = append(cfg.Certificates, pair)
	}
	if vc := common.GetValidationContext(); vc != nil && vc.GetTrustedCa() != nil {
		pem, err := dataSource(vc.GetTrustedCa())
		if err != nil {
			return nil, fmt.Errorf("trusted ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("trusted ca: no PEM certificates")
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if ctx.GetRequireClientCertificate().GetValue() {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else if ctx.GetRequireClientCertificate().GetValue() {
		return nil, fmt.Errorf("%w: client certificates required without an inline trusted CA", ErrUnsupported)
	}
	return cfg, nil
}

// gwListener is one bound gateway listener; its config is swapped on
// updates without rebinding.
type gwListener struct {
	name          string
	port          int
	network, addr string // as bound (listenAddr)
	ln            net.Listener
	cfg           atomic.Pointer[gwConfig]
	srv           *http.Server
	conns         chan net.Conn
	done          chan struct{}
	closed        sync.Once
	h             *listener.Handler
	raw           []byte
	// inner are the servers of mesh-ALPN connections (serveMeshALPN),
	// drained with the listener.
	inner sync.Map // *http.Server → struct{}
}

// meshALPN are the protocols Istio's sidecars offer with ISTIO_MUTUAL.
var meshALPN = []string{"istio-peer-exchange", "istio"}

// serveMeshALPN takes a TLS connection whose negotiated protocol is one of
// meshALPN: net/http closes a connection with an ALPN protocol it has no
// TLSNextProto entry for, so an inner server serves it as a plain
// connection (HTTP/1.1, or HTTP/2 with prior knowledge, which is what a
// sidecar sends after "istio"), and h, net/http's wrapper of the
// listener's handler, gives each request the connection's TLS state.
func (g *gwListener) serveMeshALPN(_ *http.Server, c *tls.Conn, h http.Handler) {
	pr := new(http.Protocols)
	pr.SetHTTP1(true)
	pr.SetUnencryptedHTTP2(true)
	inner := &http.Server{Handler: h, ReadHeaderTimeout: g.srv.ReadHeaderTimeout, ErrorLog: g.srv.ErrorLog, Protocols: pr}
	g.inner.Store(inner, struct{}{})
	defer g.inner.Delete(inner)
	_ = inner.Serve(newOneConnListener(c))
}

// oneConnListener hands out one connection, hiding that it is a
// *tls.Conn, then blocks until that connection is closed.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	shut sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var out net.Conn
	l.once.Do(func() { out = &closeNotifyConn{Conn: l.c, l: l} })
	if out != nil {
		return out, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.shut.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotifyConn struct {
	net.Conn
	l *oneConnListener
}

func (c *closeNotifyConn) Close() error {
	err := c.Conn.Close()
	_ = c.l.Close()
	return err
}

// Accept implements net.Listener for the listener's http.Server: it
// returns connections the dispatcher classified as HTTP.
func (g *gwListener) Accept() (net.Conn, error) {
	select {
	case c := <-g.conns:
		return c, nil
	case <-g.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (g *gwListener) Close() error {
	g.closed.Do(func() { close(g.done) })
	return g.ln.Close()
}

// Addr implements net.Listener.
func (g *gwListener) Addr() net.Addr { return g.ln.Addr() }

// gateway manages the listeners a router proxy receives over LDS; with
// bound set, a sidecar's bound listeners (compileBound).
type gateway struct {
	p     *Proxy
	ctx   context.Context
	log   *slog.Logger
	bound bool

	mu      sync.Mutex
	lns     map[string]*gwListener
	stopped bool
}

// GatewayListeners returns the bound gateway listener addresses by
// listener name (e.g. "0.0.0.0_8000" → "127.0.0.1:8000").
func (p *Proxy) GatewayListeners() map[string]string {
	out := map[string]string{}
	if p.gw == nil {
		return out
	}
	p.gw.mu.Lock()
	defer p.gw.mu.Unlock()
	for n, l := range p.gw.lns {
		out[n] = l.ln.Addr().String()
	}
	return out
}

// ParseGatewayAddress parses a --gateway-address value: PORT=HOST:PORT
// binds the gateway listener for PORT there; a bare HOST:PORT binds the
// listener for that same port on HOST.
func ParseGatewayAddress(s string) (port int, addr string, err error) {
	ps, addr, ok := strings.Cut(s, "=")
	if !ok {
		addr = s
	}
	_, aport, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, "", fmt.Errorf("gateway address %q: %w", s, err)
	}
	if !ok {
		ps = aport
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port <= 0 || port > 65535 {
		return 0, "", fmt.Errorf("gateway address %q: bad listener port %q", s, ps)
	}
	return port, addr, nil
}

// listenAddr is where cfg's listener binds: its own address (a sidecar's
// bound listener) or the gateway's address for its port.
func (g *gateway) listenAddr(cfg *gwConfig) (network, addr string) {
	if cfg.addr != "" {
		return cfg.network, cfg.addr
	}
	return "tcp", g.bindAddr(cfg.port)
}

// listen binds network/addr; a unix socket path left by a previous process
// (a socket file nobody accepts on) is removed first.
func listen(network, addr string) (net.Listener, error) {
	if network == "unix" && !strings.HasPrefix(addr, "@") {
		if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("listen unix %s: a process accepts on it", addr)
			}
			_ = os.Remove(addr)
		}
	}
	return net.Listen(network, addr)
}

func (g *gateway) bindAddr(port int) string {
	if a, ok := g.p.opts.GatewayAddresses[port]; ok {
		return a
	}
	host := g.p.opts.GatewayBindHost
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// sync binds new listeners, swaps the config of existing ones and drains
// removed ones.
func (g *gateway) sync(ls map[string]*listenerv3.Listener, cfgs map[string]*gwConfig) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped || g.ctx.Err() != nil {
		return
	}
	for name, gl := range g.lns {
		if _, ok := cfgs[name]; !ok {
			delete(g.lns, name)
			g.log.Info("gateway listener removed, draining", "listener", name, "addr", gl.ln.Addr().String())
			go g.drain(gl)
		}
	}
	names := mapKeys(cfgs)
	sort.Strings(names)
	for _, name := range names {
		cfg := cfgs[name]
		raw, _ := proto.MarshalOptions{Deterministic: true}.Marshal(ls[name])
		network, addr := g.listenAddr(cfg)
		if gl := g.lns[name]; gl != nil {
			if gl.port == cfg.port && gl.network == network && gl.addr == addr {
				gl.cfg.Store(cfg)
				if !bytes.Equal(raw, gl.raw) {
					gl.raw = raw
					g.log.Info("gateway listener updated", "listener", name, "chains", len(cfg.chains))
				}
				continue
			}
			delete(g.lns, name)
			go g.drain(gl)
		}
		ln, err := listen(network, addr)
		if err != nil {
			g.log.Error("listener: bind failed", "listener", name, "addr", addr, "err", err)
			continue
		}
		gl := &gwListener{name: name, port: cfg.port, network: network, addr: addr, ln: ln, conns: make(chan net.Conn), done: make(chan struct{}), raw: raw}
		gl.cfg.Store(cfg)
		gl.h = g.handler(gl)
		gl.srv = &http.Server{Handler: gl.h, ReadHeaderTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelDebug)}
		pr := new(http.Protocols)
		pr.SetHTTP1(true)
		pr.SetHTTP2(true)
		pr.SetUnencryptedHTTP2(true)
		gl.srv.Protocols = pr
		gl.srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		for _, p := range meshALPN {
			gl.srv.TLSNextProto[p] = gl.serveMeshALPN
		}
		g.lns[name] = gl
		g.log.Info("gateway listener bound", "listener", name, "addr", ln.Addr().String(), "chains", len(cfg.chains))
		go func() {
			if err := gl.srv.Serve(gl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.log.Debug("gateway http server stopped", "listener", name, "err", err)
			}
		}()
		go g.accept(gl)
	}
}

func (g *gateway) handler(gl *gwListener) *listener.Handler {
	p := g.p
	o := p.opts
	ident := identity(o)
	var access = p.access
	return &listener.Handler{Direction: listener.Outbound, Runtime: p.rt.Load, Ident: ident, Log: g.log, Stats: p.stats,
		Access: access, Rnd: lb.NewLockedRand(o.Rand), Ctx: g.ctx, Tracer: p.tracer, OTelLogs: p.otelLogs, Bound: g.bound,
		RouteFor: func(r *http.Request) (string, int) {
			cfg := gl.cfg.Load()
			var ch *gwChain
			if r.TLS != nil {
				ch = cfg.match(true, r.TLS.ServerName)
			} else {
				ch = cfg.match(false, "")
			}
			if ch == nil {
				return "", cfg.port
			}
			return ch.route, cfg.port
		}}
}

func (g *gateway) drain(gl *gwListener) {
	ctx, cancel := context.WithTimeout(context.Background(), g.p.opts.DrainTimeout)
	defer cancel()
	_ = gl.srv.Shutdown(ctx) // closes gl (and the socket) first
	gl.inner.Range(func(k, _ any) bool {
		_ = k.(*http.Server).Shutdown(ctx)
		return true
	})
	gl.h.Wait()
}

// shutdown drains every gateway listener.
func (g *gateway) shutdown() {
	g.mu.Lock()
	lns := g.lns
	g.lns = map[string]*gwListener{}
	g.stopped = true
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, gl := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.drain(gl)
		}()
	}
	wg.Wait()
}

func (g *gateway) accept(gl *gwListener) {
	for {
		c, err := gl.ln.Accept()
		if err != nil {
			return
		}
		go g.dispatch(gl, c)
	}
}

// dispatch classifies a connection (TLS and its SNI, or plaintext), picks
// the filter chain and hands the connection to HTTP serving (terminating
// TLS if the chain says so) or to the chain's tcp_proxy.
func (g *gateway) dispatch(gl *gwListener, c net.Conn) {
	if cfg := gl.cfg.Load(); cfg.plainOnly() {
		// No chain looks at TLS: nothing to peek, so server-first
		// protocols (the server speaks first) work on a tcp_proxy chain.
		g.serveChain(gl, c, cfg.match(false, ""), c, false, "")
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(c, listener.MaxClientHello)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	isTLS := first[0] == 0x16 // handshake record
	sni := ""
	if isTLS {
		sni = listener.PeekSNI(br)
	}
	_ = c.SetReadDeadline(time.Time{})
	g.serveChain(gl, c, gl.cfg.Load().match(isTLS, sni), listener.PeekedConn(c, br), isTLS, sni)
}

// plainOnly reports whether no chain terminates TLS or matches server
// names: every connection takes the plaintext chain.
func (c *gwConfig) plainOnly() bool {
	for _, ch := range c.chains {
		if ch.terminates() || len(ch.serverNames) > 0 {
			return false
		}
	}
	return true
}

// serveChain hands connection c (pc: c reading through what was peeked)
// to chain ch: HTTP serving (terminating TLS if the chain says so) or its
// tcp_proxy; no chain closes it.
func (g *gateway) serveChain(gl *gwListener, c net.Conn, ch *gwChain, pc net.Conn, isTLS bool, sni string) {
	if ch == nil {
		g.log.Debug("gateway: no filter chain matches", "listener", gl.name, "tls", isTLS, "sni", sni)
		c.Close()
		return
	}
	var hc net.Conn = pc
	switch {
	case ch.tcpCluster != "" && !ch.terminates():
		gl.h.ServeTCPRoute(g.ctx, pc, ch.tcpRoute)
		return
	case ch.terminates():
		cfg := ch.tls
		if ch.meshTLS {
			if g.p.opts.MTLS == nil { // compiled only with a certificate
				c.Close()
				return
			}
			cfg = g.p.opts.MTLS.ServerConfig()
			// Mesh clients offer only Istio's ALPN ("istio-peer-exchange",
			// "istio"); Envoy carries on without a common protocol, Go's
			// server refuses, so accept "istio" after the chain's own (not
			// istio-peer-exchange: gateways run no TCP metadata exchange).
			cfg.NextProtos = append(slices.Clip(ch.alpn), "istio")
		}
		tc := tls.Server(pc, cfg)
		hctx, cancel := context.WithTimeout(g.ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			g.log.Debug("gateway: TLS handshake failed", "listener", gl.name, "sni", sni, "err", err)
			c.Close()
			return
		}
		if ch.tcpCluster != "" { // TLS terminated here, then opaque TCP
			gl.h.ServeTCPRoute(g.ctx, tc, ch.tcpRoute)
			return
		}
		hc = tc
	}
	select {
	case gl.conns <- hc:
	case <-gl.done:
		c.Close()
	}
}
