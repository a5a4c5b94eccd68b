package listener

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/cluster/lb"
	"github.com/weftmesh/weft/pkg/proxy/internal/httpwire"
	"github.com/weftmesh/weft/pkg/proxy/otelals"
	"github.com/weftmesh/weft/pkg/proxy/router"
	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/proxy/tracing"
)

// Direction of a listener.
type Direction int

// Directions.
const (
	Outbound Direction = iota
	Inbound
)

// Identity is this proxy's workload, for telemetry labels.
type Identity struct {
	Workload, Namespace, App, ServiceAccount string
	// Labels are the workload's labels (app, version, canonical service
	// and revision labels); nil means {app: App}.
	Labels map[string]string
	// Cluster is the mesh cluster id (source_cluster /
	// destination_cluster); default DefaultCluster, as Istio.
	Cluster string
	// Principal is the proxy's SPIFFE ID when it has a workload
	// certificate; mutual TLS connections report it as their local
	// principal.
	Principal string
}

// Handler executes the current Runtime for one listener.
type Handler struct {
	Direction Direction
	// Runtime returns the current config (nil before the first one).
	Runtime func() *Runtime
	Ident   Identity
	// AppPort is the local application's port (inbound fallback).
	AppPort int
	// Service is the FQDN of the service this workload serves; inbound
	// telemetry reports it as destination_service when the request's
	// authority names no service (e.g. an IP address).
	Service string
	Log     *slog.Logger
	Stats   *stats.Registry
	Access  *stats.AccessLog
	Rnd     lb.Rand
	// Ctx bounds background work (mirrors); cancelled on shutdown.
	Ctx context.Context
	// RouteFor, when set, makes this a gateway handler: requests are routed
	// by the RDS route configuration it names (e.g. "http.8000") and run
	// the filters of the gateway listener port it returns, instead of
	// choosing the route table by the Host port. Telemetry is as outbound.
	RouteFor func(r *http.Request) (route string, port int)
	// Bound marks a sidecar's own bound listener (a Sidecar egress
	// listener with bind or captureMode NONE): RouteFor picks the route
	// table, but the downstream HTTP/2 is kept upstream as on the
	// outbound listener, not a gateway's HTTP/1 default.
	Bound bool
	// OrigDst, when set (transparent capture mode), returns the original
	// destination of a redirected connection: outbound routes by its port
	// (and unknown destinations pass through to it), inbound forwards to
	// 127.0.0.1:ITS_PORT. HTTP requests carry it in their context
	// (WithOriginalDst); opaque TCP looks it up on the connection.
	OrigDst func(net.Conn) (netip.AddrPort, bool)
	// Tracer exports spans when the listener's HCM configures tracing;
	// nil drops them (headers are still propagated).
	Tracer *tracing.Tracer
	// OTelLogs exports the OpenTelemetry access loggers' LogRecords; nil
	// runs none.
	OTelLogs *otelals.Exporter

	// fallback transports for inbound direct-to-app and passthrough.
	once       sync.Once
	t1, t2     *http.Transport
	once2      sync.Once
	direct     *cluster.Cluster
	ports      sync.Map // capture mode: app port → direct *cluster.Cluster
	mirrorsWG  sync.WaitGroup
	bufs       sync.Pool // *[]byte response copy buffers
	selfOnce   sync.Once
	me         *self
	peers      peerCache      // decoded peer metadata header values
	principals principalCache // SPIFFE IDs of peer certificates
	fqdns      sync.Map       // service host → ServiceFQDN (serviceFQDN), at most maxFQDNCache
	nfqdn      atomic.Int32
}

// reqState is everything the handler keeps per request, allocated once:
// telemetry info, the counting writer, the route match input and the
// upstream request description (the mirror goroutine copies the latter).
//
// On the proxy's own HTTP/1 server a connection reuses one reqState for
// its requests (reqStateFor): it is reset when the next request starts,
// after the previous response was finished, so what it holds (the
// upstream request, response header values) may be used until then but
// not kept beyond (a mirror copies what it needs).
type reqState struct {
	ri   reqInfo
	cw   countingWriter
	rreq router.Request
	up   upstreamReq
	upsc upScratch
	rid  [1]string // X-Request-Id value slice when the proxy sets it

	// The telemetry of a request on the proxy's own HTTP/1 server runs
	// once its response is sent (h1Response.AfterSend): finishFn (made
	// once, kept by reset) calls fh.telemetry(fr, ...) and frees the state.
	fh       *Handler
	fr       *http.Request
	fc       *h1Conn
	finishFn func()
}

// runFinish is finishFn: the request's telemetry, then the state is free
// for the connection's next request.
func (st *reqState) runFinish() {
	h, r, c := st.fh, st.fr, st.fc
	st.fh, st.fr, st.fc = nil, nil, nil
	h.telemetry(r, &st.cw, &st.ri)
	if h.Stats != nil {
		h.Stats.EndPending()
	}
	c.rsBusy = false
}

// reqStateFor returns the request state for a request written to w: the
// connection's reused one on the proxy's own HTTP/1 server (in use until
// runFinish, which ServeHTTP has run after the response), else a new one.
func reqStateFor(w http.ResponseWriter) (st *reqState, release *h1Conn) {
	hw, ok := w.(*h1Response)
	if !ok || hw.c.rsBusy { // another server, or a nested ServeHTTP
		st = new(reqState)
		st.up.sc = &st.upsc
		return st, nil
	}
	c := hw.c
	c.rsBusy = true
	if c.rs == nil {
		c.rs = new(reqState)
		c.rs.finishFn = c.rs.runFinish
	} else {
		c.rs.reset()
	}
	c.rs.up.sc = &c.rs.upsc
	return c.rs, c
}

// reset zeroes st for the next request, keeping its slices' and maps'
// storage (unless a request made them large).
func (st *reqState) reset() {
	sc := &st.upsc
	hdr, vals, rv := sc.hdr, sc.vals, sc.rv
	if len(hdr) > httpwire.MaxReusedFields || cap(vals) > 2*httpwire.MaxReusedFields {
		hdr, vals = nil, nil
	}
	if cap(rv) > 2*httpwire.MaxReusedFields {
		rv = nil
	}
	clear(hdr)
	clear(vals)
	clear(rv)
	clear(st.ri.done)
	flags, done, fin := st.ri.flags[:0], st.ri.done[:0], st.finishFn
	*st = reqState{}
	st.ri.flags, st.ri.done, st.finishFn = flags, done, fin
	sc.hdr, sc.vals, sc.rv = hdr, vals[:0], rv[:0]
}

// reqInfo accumulates what telemetry needs about one request.
type reqInfo struct {
	start        time.Time
	flags        []string
	upstreamHost string
	cluster      string
	routeName    string
	statPrefix   string // the route's stats root (stat_prefix), or empty
	retries      int    // retries made
	status       int
	grpc         bool              // a gRPC request (content-type application/grpc*)
	framed       bool              // gRPC messages are counted (grpcFramed)
	msgStream    *stats.GRPCStream // a gRPC stream's message counts, reported while it is open
	bytesIn      atomic.Int64      // tunnels; request bodies count in body
	body         *countingBody
	bytesOut     int64
	destWorkload string
	span         *tracing.Span      // nil unless tracing sampled this request
	details      string             // why the proxy answered itself (access log)
	upstreamPeer string             // upstream mTLS peer URI SAN (access log, destination_principal)
	peerMD       string             // the other proxy's metadata exchange value (outbound: response, inbound: request)
	done         []func(StreamInfo) // ResponseFilter completions, in filter order
	// xconnect is the :protocol of an RFC 8441 extended CONNECT request
	// turned into an HTTP/1.1 Upgrade (fromExtendedConnect); wsKey the
	// Sec-WebSocket-Key the proxy made for it when the client sent none.
	xconnect, wsKey string
}

func (ri *reqInfo) flag(f string) {
	for _, x := range ri.flags {
		if x == f {
			return
		}
	}
	ri.flags = append(ri.flags, f)
}

func (ri *reqInfo) flagString() string {
	if len(ri.flags) == 0 {
		return "-"
	}
	return strings.Join(ri.flags, ",")
}

// received is the request bytes read from the client.
func (ri *reqInfo) received() int64 {
	n := ri.bytesIn.Load()
	if ri.body != nil {
		n += ri.body.n.Load()
	}
	return n
}

// countingBody counts a request body's bytes. It is allocated per request
// (not part of the reused reqState): a transport goroutine may still call
// Read after the handler returned.
type countingBody struct {
	io.ReadCloser
	n    atomic.Int64
	msgs *stats.GRPCMessages // gRPC requests: counts the request messages
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	if c.msgs != nil && n > 0 {
		c.msgs.Write(p[:n])
	}
	return n, err
}

// grpcBody is a gRPC request's countingBody and its message counter in
// one allocation.
type grpcBody struct {
	countingBody
	msgs stats.GRPCMessages
}

// requestMessages is the gRPC request messages counted so far.
func (ri *reqInfo) requestMessages() uint64 {
	if ri.body == nil || ri.body.msgs == nil {
		return 0
	}
	return ri.body.msgs.Count()
}

func (h *Handler) transports() (*http.Transport, *http.Transport) {
	h.once.Do(func() {
		h.t1 = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
		h.t2 = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		h.t2.Protocols = p
	})
	return h.t1, h.t2
}

// Wait blocks until background mirror requests finish.
func (h *Handler) Wait() { h.mirrorsWG.Wait() }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st, conn := reqStateFor(w)
	ri := &st.ri
	ri.start = time.Now()
	ri.grpc = isGRPC(r)
	ri.framed = ri.grpc && grpcFramed(r)
	if r.Body != nil && r.Body != http.NoBody {
		if ri.framed {
			gb := &grpcBody{countingBody: countingBody{ReadCloser: r.Body}}
			gb.countingBody.msgs = &gb.msgs
			ri.body = &gb.countingBody
		} else {
			ri.body = &countingBody{ReadCloser: r.Body}
		}
		r.Body = ri.body
	}
	cw := &st.cw
	cw.ResponseWriter = w
	cw.grpc = ri.framed
	if conn != nil {
		// Telemetry once the response is out: the client does not wait
		// for it (the connection's next request waits until it is done).
		st.fh, st.fr, st.fc = h, r, conn
		defer func() {
			h.streamDone(cw, ri) // part of the response
			if h.Stats != nil {
				h.Stats.BeginPending() // scrapes wait for it (EndPending in runFinish)
			}
			if !conn.resp.AfterSend(st.finishFn) {
				st.runFinish()
			}
		}()
	} else {
		defer h.finish(r, cw, ri)
	}
	if r.Method == http.MethodConnect {
		if p := r.Header[":protocol"]; len(p) > 0 && p[0] != "" { // RFC 8441 extended CONNECT
			fromExtendedConnect(r, ri, p[0])
		} else {
			h.serveConnect(cw, r, ri)
			return
		}
	}
	rt := h.Runtime()
	if rt == nil {
		h.localReply(cw, r, ri, http.StatusServiceUnavailable, "NR", "no configuration yet")
		return
	}
	odst, odOK := OriginalDst(r.Context()) // looked up once: a context chain walk
	host := strings.ToLower(r.Host)
	if r.URL.IsAbs() && r.URL.Host != "" { // HTTP_PROXY absolute form
		host = strings.ToLower(r.URL.Host)
		r.Host = r.URL.Host
	}
	if v := r.Header["X-Request-Id"]; len(v) == 0 || v[0] == "" {
		st.rid[0] = newRequestID(h.rnd())
		r.Header["X-Request-Id"] = st.rid[:1:1]
	}
	if tc := h.tracingConfig(rt); tc != nil {
		h.startSpan(tc, r, ri)
	}
	var table *router.Table
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if h.RouteFor != nil {
		name, port := h.RouteFor(r)
		if h.runFilters(cw, r, ri, rt.OutboundFilters[port]) {
			return
		}
		if table = rt.Routes[name]; table == nil {
			h.localReply(cw, r, ri, http.StatusNotFound, "NR", "no route configuration "+name)
			return
		}
	} else if h.Direction == Outbound {
		port := hostPort(host, 80)
		if odOK {
			port = int(odst.Port())
		}
		if h.runFilters(cw, r, ri, rt.OutboundFilters[port]) {
			return
		}
		var pb [8]byte // m[string(bytes)] does not allocate; strconv.Itoa(port) did
		table = rt.Routes[string(strconv.AppendInt(pb[:0], int64(port), 10))]
	} else {
		appPort := h.AppPort
		if odOK {
			appPort = int(odst.Port())
		}
		fs, ok := rt.InboundFilters[appPort]
		if !ok {
			fs = rt.InboundFilters[0]
		}
		if h.runFilters(cw, r, ri, fs) {
			return
		}
		table = rt.Inbound[appPort]
		if table == nil {
			table = rt.Inbound[0]
		}
		if table == nil {
			h.forwardInboundDirect(cw, r, ri, rt, appPort, &st.up)
			return
		}
	}
	if table == nil {
		if c := rt.Clusters.Clusters[rt.Passthrough]; c != nil && c.Passthrough {
			// ALLOW_ANY: an unknown destination goes out as addressed.
			ri.cluster = c.Name
			up := &st.up
			*up = upstreamReq{orig: r, path: r.URL.Path, rawQuery: r.URL.RawQuery, host: r.Host,
				buffered: r.Body == nil || r.Body == http.NoBody, sc: up.sc}
			if odOK {
				up.dialAddr = odst.String()
			}
			h.forward(r.Context(), cw, r, ri, c, up, 0, nil, func(http.Header) {})
			return
		}
		h.localReply(cw, r, ri, http.StatusNotFound, "NR", "no route configuration for port")
		return
	}
	rreq := &st.rreq
	*rreq = router.Request{Host: host, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Method: r.Method, Scheme: scheme, Header: r.Header}
	vh, route := table.Match(rreq)
	if odOK && vh == nil && h.Direction == Outbound {
		// Captured traffic addressed by IP: match the original destination.
		rreq.Host = odst.String()
		vh, route = table.Match(rreq)
	}
	if route == nil {
		if vh != nil && vh.Cors != nil && h.cors(cw, r, vh.Cors) {
			return
		}
		h.localReply(cw, r, ri, http.StatusNotFound, "NR", "no route")
		return
	}
	ri.routeName, ri.statPrefix = route.Name, route.StatPrefix
	if c := route.Cors; c != nil || vh.Cors != nil {
		if c == nil {
			c = vh.Cors
		}
		if h.cors(cw, r, c) {
			return
		}
	}
	h.serveRoute(cw, r, ri, rt, vh, route, rreq, &st.up)
}

// runFilters runs extension filters; true means one answered the request.
// The filters after the one that answered get their log phase only
// (LogFilter).
func (h *Handler) runFilters(w *countingWriter, r *http.Request, ri *reqInfo, fs []HTTPFilter) bool {
	for i, f := range fs {
		handled := false
		if rf, ok := f.(ResponseFilter); ok {
			wrap, done, answered := rf.FilterResponse(w, r)
			if done != nil {
				ri.done = append(ri.done, done)
			}
			if !answered && wrap != nil {
				w.ResponseWriter = wrap(w.ResponseWriter)
			}
			handled = answered
		} else {
			handled = f.Filter(w, r)
		}
		if !handled {
			continue
		}
		ri.status, ri.details = w.status, w.details
		if w.flags != "" {
			ri.flag(w.flags)
		}
		for _, later := range fs[i+1:] {
			if lf, ok := later.(LogFilter); ok {
				if done := lf.LogOnly(r); done != nil {
					ri.done = append(ri.done, done)
				}
			}
		}
		return true
	}
	return false
}

// cors handles CORS; it returns true when it answered a preflight.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request, c *router.Cors) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || !c.AllowsOrigin(origin) {
		return false
	}
	hdr := w.Header()
	hdr.Set("Access-Control-Allow-Origin", origin)
	if c.AllowCredentials {
		hdr.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		if c.AllowMethods != "" {
			hdr.Set("Access-Control-Allow-Methods", c.AllowMethods)
		}
		if c.AllowHeaders != "" {
			hdr.Set("Access-Control-Allow-Headers", c.AllowHeaders)
		}
		if c.MaxAge != "" {
			hdr.Set("Access-Control-Max-Age", c.MaxAge)
		}
		w.WriteHeader(http.StatusOK)
		return true
	}
	if c.ExposeHeaders != "" {
		hdr.Set("Access-Control-Expose-Headers", c.ExposeHeaders)
	}
	return false
}

// self returns the label values and metadata computed once from Ident.
func (h *Handler) self() *self {
	h.selfOnce.Do(func() { h.me = newSelf(h.Ident) })
	return h.me
}

func (h *Handler) rnd() uint64 {
	if h.Rnd == nil {
		h.Rnd = lb.NewLockedRand(nil)
	}
	return h.Rnd.Uint64()
}

func chance(n uint64, perMillion uint32) bool { return n%1_000_000 < uint64(perMillion) }

func (h *Handler) serveRoute(w *countingWriter, r *http.Request, ri *reqInfo, rt *Runtime, vh *router.VirtualHost, route *router.Route, rreq *router.Request, up *upstreamReq) {
	ctx := r.Context()
	var cancel context.CancelFunc = func() {}
	if route.Forward != nil && route.Forward.Timeout > 0 && !isUpgrade(r) {
		ctx, cancel = context.WithTimeout(ctx, route.Forward.Timeout)
	}
	defer cancel()
	if f := route.Fault; f != nil && f.FaultApplies(rreq) {
		if f.HasDelay && chance(h.rnd(), f.DelayPerM) {
			ri.flag("DI")
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				if r.Context().Err() != nil {
					ri.flag("DC")
					ri.status = 499
					return
				}
				ri.flag("UT")
				h.localReply(w, r, ri, http.StatusGatewayTimeout, "", "upstream request timeout")
				return
			}
		}
		if f.HasAbort && chance(h.rnd(), f.AbortPerM) {
			ri.flag("FI")
			if f.AbortGRPC >= 0 && isGRPC(r) {
				h.grpcReply(w, ri, f.AbortGRPC, "fault filter abort")
				return
			}
			h.localReply(w, r, ri, f.AbortStatus, "", "fault filter abort")
			return
		}
	}
	switch {
	case route.Direct != nil:
		applyResponseHeaders(w.Header(), vh, route, nil)
		if route.Direct.Body != "" {
			w.Header().Set("Content-Type", "text/plain")
		}
		ri.status = route.Direct.Status
		w.WriteHeader(route.Direct.Status)
		_, _ = io.WriteString(w, route.Direct.Body)
		return
	case route.Redirect != nil:
		applyResponseHeaders(w.Header(), vh, route, nil)
		w.Header().Set("Location", route.Redirect.Location(rreq))
		ri.status = route.Redirect.Code
		w.WriteHeader(route.Redirect.Code)
		return
	}
	fwd := route.Forward
	wc := fwd.PickCluster(uint32(h.rnd()))
	c := rt.Clusters.Clusters[wc.Name]
	ri.cluster = wc.Name
	if c == nil {
		h.localReply(w, r, ri, http.StatusServiceUnavailable, "NC", "cluster not found")
		return
	}
	// Request header manipulation: weighted cluster, route, virtual host.
	for _, ops := range []*router.HeaderOps{&wc.Headers, &route.Headers, &vh.Headers} {
		applyRequestHeaders(r.Header, ops)
	}
	path := fwd.RewritePath(r.URL.Path)
	host := r.Host
	if fwd.HostRewrite != "" {
		host = fwd.HostRewrite
	}
	var hash uint64
	if c.HashBased {
		hash = requestHash(r, fwd.Hash, h.rnd)
	}
	*up = upstreamReq{orig: r, path: path, rawQuery: r.URL.RawQuery, host: host, sc: up.sc}
	// Mirrors and retries need the body more than once.
	needBuffer := len(fwd.Mirrors) > 0 || (fwd.Retry != nil && fwd.Retry.NumRetries > 0)
	if needBuffer && r.Body != nil && r.Body != http.NoBody && r.ContentLength >= 0 && r.ContentLength <= 1<<20 {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			h.localReply(w, r, ri, http.StatusBadRequest, "DPE", "read request body")
			return
		}
		up.body = b
		up.buffered = true
	} else if r.Body == nil || r.Body == http.NoBody {
		up.buffered = true
	}
	if up.buffered {
		for _, m := range fwd.Mirrors {
			if chance(h.rnd(), m.Fraction) {
				h.mirror(rt, m.Cluster, up, fwd.Timeout)
			}
		}
	}
	if h.Direction == Outbound {
		h.self().stamp(r.Header) // metadata exchange
	}
	h.forward(ctx, w, r, ri, c, up, hash, fwd.Retry, func(hdr http.Header) { applyResponseHeaders(hdr, vh, route, wc) })
}

type upstreamReq struct {
	orig                 *http.Request
	path, rawQuery, host string
	body                 []byte
	buffered             bool
	dialAddr             string // passthrough: the captured original destination
	consumed             bool
	peerSAN              string     // upstream mTLS peer's URI SAN (access log)
	sc                   *upScratch // the request's reused attempt storage; nil in a mirror
}

// upScratch is what a request's attempts through a cluster's own
// HTTP/1.1 pool (cluster.H1Pool) reuse, one attempt after the other: the
// attempt state, the upstream request with its URL, header map and value
// array (H1Pool writes the request before RoundTrip returns), and the
// response header values copied for the downstream response (the pool
// reuses the response's own once the body is closed).
type upScratch struct {
	att  attemptState
	req  http.Request
	url  url.URL
	hdr  http.Header
	vals []string
	rv   []string
}

// build makes the upstream request for one attempt; its URL is *uu. With
// sc, the request, header map and value array are sc's (reused) and the
// request carries no context: the caller passes ctx to H1Pool.RoundTrip.
// Without, they are new and the request carries ctx.
func (u *upstreamReq) build(ctx context.Context, addr string, uu *url.URL, sc *upScratch) (*http.Request, error) {
	var body io.ReadCloser
	var getBody func() (io.ReadCloser, error)
	switch {
	case u.buffered && len(u.body) > 0:
		b := u.body
		body = newBufferedBody(b)
		getBody = func() (io.ReadCloser, error) { return newBufferedBody(b), nil }
	case u.buffered && u.body != nil:
		body = http.NoBody
	case !u.buffered:
		if u.consumed {
			return nil, errors.New("request body already consumed")
		}
		u.consumed = true
		body = u.orig.Body
	}
	if ctx == nil && sc == nil {
		return nil, errors.New("build upstream request: nil context")
	}
	// The method was validated when the request was read; the URL is set
	// field by field (no "http://"+addr string to build and parse again).
	*uu = url.URL{Scheme: "http", Host: addr, Path: u.path, RawQuery: u.rawQuery}
	if u.path == u.orig.URL.Path {
		uu.RawPath = u.orig.URL.RawPath // keep the client's (normalized) encoding, e.g. %2F
	}
	var out *http.Request
	if sc != nil {
		out = &sc.req
		*out = http.Request{Method: u.orig.Method, URL: uu, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: u.host}
	} else {
		out = (&http.Request{Method: u.orig.Method, URL: uu, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Host: u.host}).WithContext(ctx)
	}
	out.Body, out.GetBody = body, getBody
	clientIP := ""
	if ip, _, err := net.SplitHostPort(u.orig.RemoteAddr); err == nil {
		clientIP = ip
	}
	if sc != nil {
		sc.hdr, sc.vals = upstreamHeader(u.orig.Header, isUpgrade(u.orig), clientIP, sc.hdr, sc.vals)
		out.Header = sc.hdr
	} else {
		out.Header, _ = upstreamHeader(u.orig.Header, isUpgrade(u.orig), clientIP, nil, nil)
	}
	if u.buffered {
		out.ContentLength = int64(len(u.body))
	} else {
		out.ContentLength = u.orig.ContentLength
	}
	if len(u.orig.Trailer) > 0 {
		out.Trailer = u.orig.Trailer
	}
	return out, nil
}

// bufferedBody is a request body the proxy holds (for retries and
// mirrors); Ready tells cluster.H1Pool that all of it can be read without
// waiting.
type bufferedBody struct{ bytes.Reader }

func newBufferedBody(b []byte) *bufferedBody {
	bb := &bufferedBody{}
	bb.Reset(b)
	return bb
}

func (b *bufferedBody) Close() error { return nil }
func (b *bufferedBody) Ready() int64 { return int64(b.Len()) }

// upstreamHeader copies the client's fields for the upstream request in
// one pass, one map and one value array: hop-by-hop fields and the fields
// Connection names are dropped (Connection and Upgrade kept for an
// upgrade), Te is passed on only as "trailers", X-Forwarded-For gets the
// client address appended (to its first value) and X-Forwarded-Proto
// defaults to http. out and vals, when not nil, are cleared and reused
// (the returned vals is the value array to keep for the next call).
func upstreamHeader(in http.Header, keepUpgrade bool, clientIP string, out http.Header, vals []string) (http.Header, []string) {
	n := 0
	for _, vs := range in {
		n += len(vs)
	}
	if out == nil {
		out = make(http.Header, len(in)+2)
	} else {
		clear(out)
	}
	if cap(vals) < n+3 {
		vals = make([]string, 0, n+3)
	}
	vals = vals[:0]
	conn := in["Connection"]
	put := func(k string, vs ...string) {
		i := len(vals)
		vals = append(vals, vs...)
		out[k] = vals[i:len(vals):len(vals)]
	}
	te, xff, xfp := false, []string(nil), ""
	for k, vs := range in {
		if k == "Te" {
			if len(vs) > 0 && strings.Contains(strings.ToLower(vs[0]), "trailers") {
				te = true
			}
			continue
		}
		if isHopHeader(k, keepUpgrade) {
			continue
		}
		if len(conn) > 0 && connectionNames(conn, k, keepUpgrade) {
			continue
		}
		switch k {
		case "X-Forwarded-For":
			xff = vs
			continue
		case "X-Forwarded-Proto":
			if len(vs) > 0 {
				xfp = vs[0]
			}
			if xfp == "" {
				continue
			}
		}
		put(k, vs...)
	}
	if te {
		put("Te", "trailers")
	}
	switch {
	case clientIP != "" && len(xff) > 0 && xff[0] != "":
		put("X-Forwarded-For", xff[0]+", "+clientIP) // as before: the first value, extended
	case clientIP != "":
		put("X-Forwarded-For", clientIP)
	case len(xff) > 0:
		put("X-Forwarded-For", xff...)
	}
	if xfp == "" {
		put("X-Forwarded-Proto", "http")
	}
	return out, vals
}

// connectionNames reports whether the Connection field values name field
// k (a hop-by-hop field to drop), except Upgrade when it is kept.
func connectionNames(conn []string, k string, keepUpgrade bool) bool {
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = strings.TrimSpace(tok)
			if tok == "" || (keepUpgrade && strings.EqualFold(tok, "Upgrade")) {
				continue
			}
			if strings.EqualFold(tok, k) {
				return true
			}
		}
	}
	return false
}

// removeConnectionNamed drops the fields the Connection values conn name
// (except Upgrade when keepUpgrade).
func removeConnectionNamed(h http.Header, conn []string, keepUpgrade bool) {
	for _, f := range conn {
		for f != "" {
			var sf string
			sf, f, _ = strings.Cut(f, ",")
			if sf = strings.TrimSpace(sf); sf != "" && !(keepUpgrade && strings.EqualFold(sf, "Upgrade")) {
				h.Del(sf)
			}
		}
	}
}

// isHopHeader reports whether canonical key k is a hop-by-hop field, which
// a proxy does not pass on (Connection and Upgrade are passed on when
// keepUpgrade).
func isHopHeader(k string, keepUpgrade bool) bool {
	switch k {
	case "Connection", "Upgrade":
		return !keepUpgrade
	case "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding":
		return true
	}
	return false
}

// forwardsH2 reports whether the listener sends a downstream HTTP/2
// request upstream as HTTP/2 whatever the cluster asks for (Envoy's
// USE_DOWNSTREAM_PROTOCOL): the outbound listener and a sidecar's own
// bound listeners do, a gateway and the inbound listener only for gRPC.
func (h *Handler) forwardsH2() bool {
	return (h.RouteFor == nil && h.Direction == Outbound) || h.Bound
}

// isUpgrade reports whether r asks for an HTTP/1.1 protocol upgrade (an
// HTTP/2 request carries no Upgrade field, the server refuses it, unless
// fromExtendedConnect made it one).
func isUpgrade(r *http.Request) bool {
	u := r.Header["Upgrade"]
	return len(u) > 0 && u[0] != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"] // canonical key: no Get canonicalization per call
	return len(ct) > 0 && strings.HasPrefix(ct[0], "application/grpc")
}

// grpcFramed reports whether a gRPC request's bodies are gRPC's
// length-prefixed messages, as Envoy decides for its grpc_stats filter:
// content-type application/grpc, application/grpc+FORMAT or with
// parameters, not gRPC-Web (whose text form is base64, and whose
// trailers travel in the body).
func grpcFramed(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	rest, ok := strings.CutPrefix(ct[0], "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

func applyRequestHeaders(hdr http.Header, ops *router.HeaderOps) {
	for _, k := range ops.RequestRemove {
		hdr.Del(k)
	}
	for _, hv := range ops.RequestAdd {
		if hv.Append {
			hdr.Add(hv.Key, hv.Value)
		} else {
			hdr.Set(hv.Key, hv.Value)
		}
	}
}

func applyResponseHeaders(hdr http.Header, vh *router.VirtualHost, route *router.Route, wc *router.WeightedCluster) {
	apply := func(ops *router.HeaderOps) {
		for _, k := range ops.ResponseRemove {
			hdr.Del(k)
		}
		for _, hv := range ops.ResponseAdd {
			if hv.Append {
				hdr.Add(hv.Key, hv.Value)
			} else {
				hdr.Set(hv.Key, hv.Value)
			}
		}
	}
	if wc != nil {
		apply(&wc.Headers)
	}
	apply(&route.Headers)
	apply(&vh.Headers)
}

func requestHash(r *http.Request, policies []router.HashPolicy, rnd func() uint64) uint64 {
	var h uint64
	found := false
	for _, p := range policies {
		var v string
		ok := false
		switch {
		case p.Header != "":
			if vs := r.Header[p.Header]; len(vs) > 0 {
				v, ok = vs[0], true
			}
		case p.Cookie != "":
			if c, err := r.Cookie(p.Cookie); err == nil {
				v, ok = c.Value, true
			}
		case p.SourceIP:
			if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
				v, ok = ip, true
			}
		case p.QueryParam != "":
			if q := r.URL.Query(); q.Has(p.QueryParam) {
				v, ok = q.Get(p.QueryParam), true
			}
		}
		if ok {
			h = h*31 + lb.Hash64(v)
			found = true
			if p.Terminal {
				break
			}
		}
	}
	if !found {
		return rnd()
	}
	return h
}

func hostPort(host string, def int) int {
	if _, p, err := net.SplitHostPort(host); err == nil {
		if n, err := strconv.Atoi(p); err == nil {
			return n
		}
	}
	return def
}

func newRequestID(n uint64) string {
	const hexd = "0123456789abcdef"
	var b [36]byte
	x := n ^ uint64(time.Now().UnixNano())
	y := n*0x9e3779b97f4a7c15 + 1
	j := 0
	for i := 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			b[i] = '-'
			continue
		}
		var v uint64
		if j < 16 {
			v = (x >> (4 * j)) & 0xf
		} else {
			v = (y >> (4 * (j - 16))) & 0xf
		}
		b[i] = hexd[v]
		j++
	}
	return string(b[:])
}

type countingWriter struct {
	http.ResponseWriter
	n       int64
	status  int
	details string // set by filters that answer (SetResponseDetails)
	flags   string // set by filters that answer (SetResponseFlags)
	grpc    bool   // a gRPC response: count its messages in msgs
	msgs    stats.GRPCMessages
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	if c.grpc && n > 0 {
		c.msgs.Write(p[:n])
	}
	return n, err
}

// Unwrap lets http.ResponseController reach Flush/Hijack.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// mirror sends a copy of the request to cluster name, fire-and-forget.
func (h *Handler) mirror(rt *Runtime, name string, up *upstreamReq, timeout time.Duration) {
	c := rt.Clusters.Clusters[name]
	if c == nil {
		return
	}
	shadowHost := up.host
	if hst, p, err := net.SplitHostPort(up.host); err == nil {
		shadowHost = net.JoinHostPort(hst+"-shadow", p)
	} else {
		shadowHost += "-shadow"
	}
	// The goroutine uses copies only: the request, its header map and URL
	// are reused by the connection's next request.
	cp := *up
	cp.host = shadowHost
	cp.sc = nil
	hdr := up.orig.Header.Clone()
	orig := *up.orig
	orig.Header = hdr
	if up.orig.URL != nil {
		u := *up.orig.URL
		orig.URL = &u
	}
	cp.orig = &orig
	if timeout <= 0 {
		timeout = router.DefaultTimeout
	}
	parent := h.Ctx
	if parent == nil {
		parent = context.Background()
	}
	h.mirrorsWG.Add(1)
	go func() {
		defer h.mirrorsWG.Done()
		ctx, cancel := context.WithTimeout(parent, timeout)
		defer cancel()
		host, err := c.Pick(lb.Hash64(cp.path))
		if err != nil {
			return
		}
		req, err := cp.build(ctx, host.Addr, new(url.URL), nil)
		if err != nil {
			return
		}
		t, t2, _ := c.Pools(cp.orig)
		if (cp.orig.ProtoMajor == 2 && (h.forwardsH2() || isGRPC(cp.orig))) || c.UpstreamH2 {
			t = t2
		}
		resp, err := t.RoundTrip(req)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
}
