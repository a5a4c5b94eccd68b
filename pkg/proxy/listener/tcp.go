package listener

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/otelals"
	"github.com/weftmesh/weft/pkg/proxy/router"
	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/telemetry/expr"
)

// upgrade completes a 101 Switching Protocols (e.g. WebSocket) by
// hijacking the downstream connection and piping bytes both ways; for an
// RFC 8441 extended CONNECT stream (ri.xconnect) by answering 200 on the
// stream and piping its DATA frames (upgradeStream).
func (h *Handler) upgrade(w *countingWriter, r *http.Request, ri *reqInfo, resp *http.Response) {
	upConn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		h.localReply(w, r, &reqInfo{}, http.StatusBadGateway, "", "upgrade: upstream body not writable")
		return
	}
	defer upConn.Close()
	if ri.xconnect != "" {
		h.upgradeStream(w, r, ri, resp, upConn)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	w.status = http.StatusSwitchingProtocols
	if err := writeStatus(brw.Writer, resp, w.Header()); err != nil {
		return
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := upConn.Write(b); err != nil {
			return
		}
	}
	sent, _ := pipe(r.Context(), conn, upConn, nil)
	w.n += sent
}

func writeStatus(bw *bufio.Writer, resp *http.Response, hdr http.Header) error {
	if _, err := fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode)); err != nil {
		return err
	}
	h := hdr.Clone()
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", resp.Header.Get("Upgrade"))
	if err := h.Write(bw); err != nil {
		return err
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	return bw.Flush()
}

// pipe copies a→b and b→a until both directions end or ctx is done. It
// returns bytes written to a (sent downstream) and to b (sent upstream).
// With live, the bytes are counted on it as they go (live.Sent those to
// a, live.Received those to b), so its periodic reports see them.
func pipe(ctx context.Context, a, b io.ReadWriteCloser, live *stats.TCPConn) (toA, toB int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	var na, nb atomic.Int64
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wa, wb io.Writer = a, b
	if live != nil {
		wa, wb = countingTo{a, &live.Sent}, countingTo{b, &live.Received}
	}
	go func() {
		defer wg.Done()
		n, _ := io.Copy(wb, a)
		nb.Store(n)
		closeWrite(b)
	}()
	go func() {
		defer wg.Done()
		n, _ := io.Copy(wa, b)
		na.Store(n)
		closeWrite(a)
	}()
	wg.Wait()
	return na.Load(), nb.Load()
}

// countingTo adds what it writes to n. It hides the writer's ReadFrom,
// so io.Copy goes through a buffer (no splice) and every chunk is
// counted when it is written.
type countingTo struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingTo) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func closeWrite(c io.Closer) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// serveConnect handles a CONNECT tunnel on the outbound listener: HTTP/1.1
// (the connection is hijacked) or HTTP/2 (RFC 9113 §8.5: the tunnel is the
// stream's DATA frames).
func (h *Handler) serveConnect(w *countingWriter, r *http.Request, ri *reqInfo) {
	rt := h.Runtime()
	target := r.Host
	port := hostPort(target, 443)
	var c *cluster.Cluster
	var tunnel *Tunnel
	if rt != nil {
		if tr := rt.connectTCPRoute(target, port, h.Ident.Namespace); tr != nil {
			tunnel = tr.Tunnel
			name := tr.Pick(uint32(h.rnd()))
			c, ri.cluster = rt.Clusters.Clusters[name], name
		} else if t := rt.Routes[strconv.Itoa(port)]; t != nil {
			_, route := t.Match(&router.Request{Host: strings.ToLower(target), Path: "/", Method: http.MethodConnect, Header: r.Header})
			if route != nil && route.Forward != nil {
				wc := route.Forward.PickCluster(uint32(h.rnd()))
				c, ri.cluster, ri.routeName = rt.Clusters.Clusters[wc.Name], wc.Name, route.Name
			}
		}
	}
	var addr string
	switch {
	case c != nil && !c.Passthrough:
		host, err := c.Pick(h.rnd())
		if err != nil {
			h.localReply(w, r, ri, http.StatusServiceUnavailable, "UH", "no healthy upstream")
			return
		}
		addr, ri.destWorkload = host.Addr, host.Workload
	case c != nil || (rt != nil && rt.Passthrough != ""):
		addr = target
	default:
		h.localReply(w, r, ri, http.StatusNotFound, "NR", "no route for CONNECT target")
		return
	}
	ri.upstreamHost = addr
	dial := (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	if c != nil && !c.Passthrough {
		dial = c.DialContext // mutual TLS for ISTIO_MUTUAL clusters
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	up, err := dial(cluster.WithDownstream(r.Context(), stringAddr(r.RemoteAddr), local), "tcp", addr)
	if err != nil {
		h.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", "upstream connect error")
		return
	}
	defer up.Close()
	if tunnel != nil && c != nil && !c.Passthrough {
		tc, err := tunnel.Open(r.Context(), up)
		if err != nil {
			if h.Log != nil {
				h.Log.Debug("tcp proxy: tunnel", "cluster", ri.cluster, "addr", addr, "err", err)
			}
			h.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", "upstream tunnel not established")
			return
		}
		up = tc
	}
	ri.status = http.StatusOK
	if r.ProtoMajor == 2 {
		h.connectH2(w, r, ri, up, target)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	l := h.tcpLabels(ri.cluster, target, ri.destWorkload, h.principals.of(upstreamCert(up)), h.peers.ofExchange(upstreamPeer(up)))
	m := h.tcpOpen(l, func() connAttrs { return h.connectAttrs(r, ri, l) })
	sent, recv := pipe(r.Context(), conn, up, m)
	m.Close()
	w.n += sent
	ri.bytesIn.Add(recv)
}

// connectH2 runs an HTTP/2 CONNECT tunnel over the request's stream: a 200
// response without END_STREAM, then the request body's DATA frames go
// upstream and the upstream bytes come back as response DATA frames,
// each flushed. The client's END_STREAM half-closes the upstream
// connection; the stream ends when both directions have.
func (h *Handler) connectH2(w *countingWriter, r *http.Request, ri *reqInfo, up net.Conn, target string) {
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	l := h.tcpLabels(ri.cluster, target, ri.destWorkload, h.principals.of(upstreamCert(up)), h.peers.ofExchange(upstreamPeer(up)))
	m := h.tcpOpen(l, func() connAttrs { return h.connectAttrs(r, ri, l) })
	// r.Body counts into ri.body itself (countingBody).
	pipe(r.Context(), &h2Stream{body: r.Body, w: w, rc: rc}, up, m)
	m.Close()
}

// h2Stream is the downstream side of an HTTP/2 CONNECT tunnel: reads are
// the request body, writes are flushed response DATA frames.
type h2Stream struct {
	body io.ReadCloser
	w    io.Writer
	rc   *http.ResponseController
}

func (s *h2Stream) Read(p []byte) (int, error) { return s.body.Read(p) }

func (s *h2Stream) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, s.rc.Flush()
}

// Close stops reading the client's DATA frames; the response stream ends
// when the handler returns.
func (s *h2Stream) Close() error { return s.body.Close() }

// tcpLabels are a TCP connection's labels; principal is the peer's
// SPIFFE ID over mutual TLS (inbound: the downstream's, outbound: the
// upstream's), else "". peer is what the peer's TCP metadata exchange
// said (Istio's istio-peer-exchange), nil without one: then the peer's
// workload labels are what the endpoint metadata (outbound) or the
// certificate (inbound: namespace) tell, the rest "unknown".
func (h *Handler) tcpLabels(clusterName, authority, destWorkload, principal string, peer *PeerInfo) stats.Labels {
	svc := ServiceFQDN(serviceOf(clusterName, authority), h.Ident.Namespace)
	if svc == "" && h.Direction == Inbound {
		svc = h.Service
	}
	name, ns, _ := strings.Cut(svc, ".")
	ns, _, _ = strings.Cut(ns, ".")
	me := h.self()
	l := stats.Labels{RequestProtocol: "tcp", ResponseFlags: "-", SourcePrincipal: "unknown", DestinationPrincipal: "unknown",
		DestinationService: orUnknown(svc), DestinationServiceName: orUnknown(name), DestinationServiceNamespace: orUnknown(ns)}
	if h.Direction == Outbound {
		l.Reporter = "source"
		setSource(&l, &me.info)
		setDestination(&l, unknownPeer)
		l.DestinationWorkload = orUnknown(destWorkload)
		l.DestinationWorkloadNamespace = orUnknown(ns)
		if principal != "" {
			l.SourcePrincipal, l.DestinationPrincipal = me.principal, principal
		}
		l.ConnectionSecurityPolicy = "unknown"
		if peer != nil {
			setDestination(&l, peer)
		}
	} else {
		l.Reporter = "destination"
		setSource(&l, unknownPeer)
		setDestination(&l, &me.info)
		l.ConnectionSecurityPolicy = "none"
		if principal != "" {
			l.SourcePrincipal, l.DestinationPrincipal = principal, me.principal
			l.ConnectionSecurityPolicy = "mutual_tls"
			if pns := spiffeNamespace(principal); pns != "" {
				l.SourceWorkloadNamespace = pns
			}
		}
		if peer != nil {
			setSource(&l, peer)
		}
	}
	return l
}

// ServeTCP proxies an opaque inbound connection to the local application
// (the inbound tcp_proxy cluster for the app port, else 127.0.0.1:APP_PORT).
func (h *Handler) ServeTCP(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	start := time.Now()
	appPort := h.AppPort
	if h.OrigDst != nil {
		if od, ok := h.OrigDst(conn); ok {
			appPort = int(od.Port())
		}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(appPort))
	name := "inbound|" + strconv.Itoa(appPort) + "||"
	if rt := h.Runtime(); rt != nil {
		if n, ok := rt.InboundTCP[appPort]; ok {
			name = n
		}
		if !h.allowConn(conn, rt, appPort, name) { // network RBAC: denied connections are closed
			return
		}
		if c := rt.Clusters.Clusters[name]; c != nil {
			if host, err := c.Pick(0); err == nil {
				addr = host.Addr
			}
		}
	}
	l := h.tcpLabels(name, "", "", h.principals.of(tlsLeaf(PeerTLS(conn))), h.peers.ofExchange(downstreamPeer(conn)))
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if h.Log != nil {
			h.Log.Debug("inbound tcp: dial app", "addr", addr, "err", err)
		}
		h.logTCP(conn, start, tcpLog{cluster: name, upstream: addr, flags: "UF"}, l)
		return
	}
	defer up.Close()
	h.proxyTCP(ctx, conn, up, start, tcpLog{cluster: name, upstream: addr}, l)
}

// SniffListener wraps a listener and classifies each connection by its
// first bytes: HTTP/1.x methods and the h2c preface go to Accept (for an
// http.Server); anything else (or silence for SniffTimeout, as with
// server-first protocols) goes to OnTCP.
type SniffListener struct {
	net.Listener
	OnTCP func(net.Conn)
	// Decide, when set, is asked first: a connection it calls AsTCP or
	// AsHTTP is handed on without waiting for its first bytes.
	Decide       func(net.Conn) Decision
	SniffTimeout time.Duration // default 200ms
	Log          *slog.Logger

	once  sync.Once
	conns chan net.Conn
	errc  chan error
	done  chan struct{}
}

var httpPrefixes = []string{"GET ", "POST", "PUT ", "HEAD", "DELE", "OPTI", "PATC", "CONN", "TRAC", "PRI "}

func (s *SniffListener) start() {
	s.conns = make(chan net.Conn)
	s.errc = make(chan error, 1)
	s.done = make(chan struct{})
	if s.SniffTimeout <= 0 {
		s.SniffTimeout = 200 * time.Millisecond
	}
	go func() {
		for {
			c, err := s.Listener.Accept()
			if err != nil {
				s.errc <- err
				return
			}
			go s.classify(c)
		}
	}()
}

// Decision is what a SniffListener does with a new connection.
type Decision int

// Decisions.
const (
	Sniff  Decision = iota // classify by the first bytes
	AsHTTP                 // serve as HTTP
	AsTCP                  // opaque: OnTCP
)

// OutboundDecision classifies a captured outbound connection by its
// original destination, as Envoy's listener match does: a tcp_proxy
// listener for that address (or the port's wildcard one) makes it opaque
// TCP, an HTTP route table for the port makes it HTTP; a listener with
// both (a port without a declared protocol) and unknown destinations are
// sniffed.
func (h *Handler) OutboundDecision(c net.Conn) Decision {
	rt := h.Runtime()
	if h.OrigDst == nil || rt == nil {
		return Sniff
	}
	od, ok := h.OrigDst(c)
	if !ok {
		return Sniff
	}
	if chains := rt.TCP.forAddr(od); len(chains) > 0 {
		if chains[0].Sniffed {
			return Sniff
		}
		return AsTCP
	}
	if rt.Routes[strconv.Itoa(int(od.Port()))] != nil {
		return AsHTTP
	}
	return Sniff
}

func (s *SniffListener) classify(c net.Conn) {
	if s.Decide != nil {
		switch s.Decide(c) {
		case AsTCP:
			if s.OnTCP != nil {
				s.OnTCP(c)
			} else {
				c.Close()
			}
			return
		case AsHTTP:
			select {
			case s.conns <- c:
			case <-s.done:
				c.Close()
			}
			return
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(s.SniffTimeout))
	br := bufio.NewReaderSize(c, 4096)
	b, err := br.Peek(4)
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	isHTTP := false
	if err == nil {
		for _, p := range httpPrefixes {
			if string(b) == p {
				isHTTP = true
				break
			}
		}
	} else if !errors.Is(err, io.EOF) && !isTimeout(err) {
		c.Close()
		return
	}
	if isHTTP {
		select {
		case s.conns <- pc:
		case <-s.done:
			c.Close()
		}
		return
	}
	if s.OnTCP != nil {
		s.OnTCP(pc)
		return
	}
	c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Accept returns the next HTTP connection.
func (s *SniffListener) Accept() (net.Conn, error) {
	s.once.Do(s.start)
	select {
	case c := <-s.conns:
		return c, nil
	case err := <-s.errc:
		s.errc <- err
		return nil, err
	}
}

// Close closes the underlying listener.
func (s *SniffListener) Close() error {
	s.once.Do(s.start)
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	return s.Listener.Close()
}

// PeekedConn returns c reading through br, which holds bytes already
// peeked from c (protocol sniffing, a ClientHello's SNI).
func PeekedConn(c net.Conn, br *bufio.Reader) net.Conn { return &peekedConn{Conn: c, r: br} }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// NetConn returns the wrapped connection.
func (p *peekedConn) NetConn() net.Conn { return p.Conn }

// CloseWrite half-closes TCP connections.
func (p *peekedConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return p.Conn.Close()
}

// ServeTCPRoute is ServeTCPCluster with the cluster chosen by weight
// from route (a gateway's tcp_proxy with weighted_clusters).
func (h *Handler) ServeTCPRoute(ctx context.Context, conn net.Conn, route *TCPRoute) {
	h.ServeTCPCluster(ctx, conn, route.Pick(uint32(h.rnd())), route.Tunnel)
}

// ServeTCPCluster proxies an opaque connection to a host of the named
// cluster, as a gateway's tcp_proxy filter chain does (e.g. TLS
// passthrough routed by SNI), through tunnel when it is not nil. It
// reports outbound TCP telemetry and an access log entry per connection
// (UH: no healthy host, UF: connect failure or the tunnel refused).
func (h *Handler) ServeTCPCluster(ctx context.Context, conn net.Conn, clusterName string, tunnel *Tunnel) {
	defer conn.Close()
	start := time.Now()
	rt := h.Runtime()
	if rt == nil {
		return
	}
	c := rt.Clusters.Clusters[clusterName]
	if c == nil {
		if h.Log != nil {
			h.Log.Debug("tcp proxy: unknown cluster", "cluster", clusterName)
		}
		h.logTCP(conn, start, tcpLog{cluster: clusterName, flags: "NC"}, stats.Labels{})
		return
	}
	host, err := c.Pick(0)
	if err != nil {
		if h.Log != nil {
			h.Log.Debug("tcp proxy: no healthy host", "cluster", clusterName, "err", err)
		}
		h.logTCP(conn, start, tcpLog{cluster: clusterName, flags: "UH"}, stats.Labels{})
		return
	}
	up, err := c.DialContext(cluster.WithDownstream(ctx, conn.RemoteAddr(), conn.LocalAddr()), "tcp", host.Addr)
	if err != nil {
		c.Report(host, 0)
		if h.Log != nil {
			h.Log.Debug("tcp proxy: dial", "cluster", clusterName, "addr", host.Addr, "err", err)
		}
		h.logTCP(conn, start, tcpLog{cluster: clusterName, upstream: host.Addr, flags: "UF"}, stats.Labels{})
		return
	}
	defer up.Close()
	l := h.tcpLabels(clusterName, "", host.Workload, h.principals.of(upstreamCert(up)), h.peers.ofExchange(upstreamPeer(up)))
	if tunnel != nil {
		tc, err := tunnel.Open(ctx, up)
		if err != nil {
			if h.Log != nil {
				h.Log.Debug("tcp proxy: tunnel", "cluster", clusterName, "addr", host.Addr, "err", err)
			}
			h.logTCP(conn, start, tcpLog{cluster: clusterName, upstream: host.Addr, flags: "UF"}, l)
			return
		}
		up = tc
	}
	h.proxyTCP(ctx, conn, up, start, tcpLog{cluster: clusterName, upstream: host.Addr}, l)
}

// tcpLog is what a TCP connection's access log entry says besides bytes.
type tcpLog struct {
	cluster, upstream, flags string
	details                  string // connection_termination_details (OpenTelemetry access logs)
}

// proxyTCP pipes conn and up both ways with TCP telemetry (opened/closed
// counters and bytes) and logs the connection when it ends.
func (h *Handler) proxyTCP(ctx context.Context, conn, up net.Conn, start time.Time, e tcpLog, l stats.Labels) {
	m := h.tcpOpen(l, func() connAttrs { return h.tcpConnAttrs(conn, e, l) })
	sent, recv := pipe(ctx, conn, up, m)
	m.Close()
	e.flags = "-"
	h.logTCP(conn, start, e, l, sent, recv)
}

// logTCP writes a TCP connection's access log entry (Envoy logs tcp_proxy
// connections when they close): bytes sent to and received from the
// downstream side, the upstream and the response flags.
func (h *Handler) logTCP(conn net.Conn, start time.Time, e tcpLog, l stats.Labels, bytes ...int64) {
	rt := h.Runtime()
	if ols := h.otelLogs(rt); len(ols) > 0 {
		h.logOTelTCP(ols, conn, start, e, l, bytes...)
	}
	if h.Access == nil {
		return
	}
	if ap := h.accessPolicy(rt); ap != nil && ap.Filter != nil && !ap.Disabled {
		a := h.tcpConnAttrs(conn, e, l)
		if !ap.Filter.Matches(&a) {
			return
		}
	} else if !ap.Allows(0) {
		return
	}
	dir := "outbound"
	if h.Direction == Inbound {
		dir = "inbound"
	}
	ent := &stats.AccessEntry{StartTime: start.UTC(), Protocol: "tcp", Direction: dir, ResponseFlags: e.flags,
		DurationMs: time.Since(start).Milliseconds(), UpstreamHost: e.upstream, UpstreamCluster: e.cluster,
		SourceWorkload: l.SourceWorkload, DestinationWorkload: l.DestinationWorkload}
	if len(bytes) == 2 {
		ent.BytesSent, ent.BytesReceived = bytes[0], bytes[1]
	}
	if ra := conn.RemoteAddr(); ra != nil {
		ent.DownstreamRemoteAddress = ra.String()
	}
	if h.Direction == Inbound {
		ent.DownstreamPeerURISAN = h.principals.of(tlsLeaf(PeerTLS(conn)))
		ent.ConnectionSecurityPolicy = l.ConnectionSecurityPolicy
	}
	h.Access.Log(ent)
}

// logOTelTCP queues a TCP connection's LogRecord for each OpenTelemetry
// access logger whose filter it passes.
func (h *Handler) logOTelTCP(ols []OTelLog, conn net.Conn, start time.Time, e tcpLog, l stats.Labels, bytes ...int64) {
	var made *connAttrs
	attrs := func() expr.Attributes {
		if made == nil {
			a := h.tcpConnAttrs(conn, e, l)
			made = &a
		}
		return made
	}
	var rec *otelals.Record
	for _, ol := range ols {
		if !ol.Policy.passes(0, attrs) {
			continue
		}
		if rec == nil {
			rec = &otelals.Record{Start: start, Duration: time.Since(start), TCP: true, Flags: e.flags, TermDetails: e.details,
				UpstreamHost: e.upstream, UpstreamCluster: e.cluster, Attrs: attrs}
			if len(bytes) == 2 {
				rec.BytesSent, rec.BytesReceived = bytes[0], bytes[1]
			}
			if ra := conn.RemoteAddr(); ra != nil {
				rec.DownstreamRemote = ra.String()
			}
			if la := conn.LocalAddr(); la != nil {
				rec.DownstreamLocal = la.String()
			}
			if cs := PeerTLS(conn); cs != nil {
				rec.SNI = cs.ServerName
			}
			if h.Direction == Outbound {
				rec.UpstreamPeer = peerOf(l.DestinationWorkload, l.DestinationWorkloadNamespace, l.DestinationCluster,
					l.DestinationCanonicalService, l.DestinationCanonicalRevision, l.DestinationApp, l.DestinationVersion)
			} else {
				rec.DownstreamPeerURISAN = h.principals.of(tlsLeaf(PeerTLS(conn)))
				rec.DownstreamPeer = peerOf(l.SourceWorkload, l.SourceWorkloadNamespace, l.SourceCluster,
					l.SourceCanonicalService, l.SourceCanonicalRevision, l.SourceApp, l.SourceVersion)
			}
		}
		h.OTelLogs.Log(ol.Config, rec)
	}
}

// connectTCPRoute returns the outbound tcp_proxy chain a CONNECT target
// names: by service host (plain TCP listeners, TLS server names), or for
// an IP target the listener on that address (a service VIP) or the port's
// wildcard listener. A short host name is completed in namespace ns
// (db → db.NS.svc.cluster.local). Nil when no TCP listener serves the
// target, which then goes to the port's HTTP routes.
func (rt *Runtime) connectTCPRoute(target string, port int, ns string) *TCPRoute {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return matchSNI(rt.TCP.forAddr(netip.AddrPortFrom(ip, uint16(port))), "")
	}
	if tr := rt.TCP.forHost(host, port); tr != nil {
		return tr
	}
	return rt.TCP.forHost(ServiceFQDN(host, ns), port)
}

// peekConnSNI reads the server name of a TLS ClientHello at the start of
// conn without consuming it; the returned connection replays the bytes.
func peekConnSNI(conn net.Conn) (net.Conn, string) {
	br := bufio.NewReaderSize(conn, MaxClientHello)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	sni := PeekSNI(br)
	_ = conn.SetReadDeadline(time.Time{})
	return &peekedConn{Conn: conn, r: br}, sni
}

// ServeTCPOutbound proxies an opaque captured outbound connection: to the
// tcp_proxy cluster of the listener for its original destination (the
// service VIP's listener, else the port's wildcard one; TLS listeners pick
// the chain by the ClientHello's server name), else (ALLOW_ANY) to the
// original destination itself.
func (h *Handler) ServeTCPOutbound(ctx context.Context, conn net.Conn) {
	if h.OrigDst == nil {
		conn.Close()
		return
	}
	od, ok := h.OrigDst(conn)
	rt := h.Runtime()
	if !ok || rt == nil {
		conn.Close()
		return
	}
	if chains := rt.TCP.forAddr(od); len(chains) > 0 {
		sni := ""
		if needsSNI(chains) {
			conn, sni = peekConnSNI(conn)
		}
		if tr := matchSNI(chains, sni); tr != nil {
			if name := tr.Pick(uint32(h.rnd())); rt.Clusters.Clusters[name] == nil || !rt.Clusters.Clusters[name].Passthrough {
				h.ServeTCPCluster(ctx, conn, name, tr.Tunnel)
				return
			}
		}
	}
	defer conn.Close()
	start := time.Now()
	if c := rt.Clusters.Clusters[rt.Passthrough]; c == nil || !c.Passthrough {
		// REGISTRY_ONLY: unknown destinations are refused.
		h.logTCP(conn, start, tcpLog{cluster: "BlackHoleCluster", upstream: od.String(), flags: "UH"}, stats.Labels{})
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(ctx, "tcp", od.String())
	if err != nil {
		h.logTCP(conn, start, tcpLog{cluster: rt.Passthrough, upstream: od.String(), flags: "UF"}, stats.Labels{})
		return
	}
	defer up.Close()
	h.proxyTCP(ctx, conn, up, start, tcpLog{cluster: rt.Passthrough, upstream: od.String()}, h.tcpLabels(rt.Passthrough, "", "", "", nil))
}

// stringAddr is a net.Addr from its string form (a request's RemoteAddr).
type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }
