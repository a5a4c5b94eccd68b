package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/otelals"
	"github.com/weftmesh/weft/pkg/proxy/router"
	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/telemetry/expr"
)

// ResponseFlagsHeader is set on every response the proxy produces or
// forwards when it has Envoy response flags (e.g. "UO", "NR"), to ease
// debugging and tests; it is not an Envoy header.
const ResponseFlagsHeader = "X-Weft-Response-Flags"

type outcome int

const (
	outOK outcome = iota
	outConnectFailure
	outReset
	outPerTryTimeout
	outRouteTimeout
	outDownstreamGone
	outOverflow
)

func (h *Handler) forward(ctx context.Context, w *countingWriter, r *http.Request, ri *reqInfo, c *cluster.Cluster,
	up *upstreamReq, hash uint64, retry *router.RetryPolicy, respHdr func(http.Header)) {
	br := c.Breakers
	br.RequestTotal.Add(1)
	if br.Requests.Add(1) > c.Thresholds.MaxRequests {
		br.Requests.Add(-1)
		br.RequestOverflow.Add(1)
		h.localReply(w, r, ri, http.StatusServiceUnavailable, "UO", "upstream max requests overflow")
		return
	}
	defer br.Requests.Add(-1)
	if h.Direction == Inbound { // metadata exchange: the caller's metadata stops here
		if md := takePeerMetadata(r.Header); md != "" {
			ri.peerMD = md
		}
	}
	attempts := 1
	if retry != nil && up.buffered {
		attempts += retry.NumRetries
	}
	var (
		resp      *http.Response
		out       outcome
		retriable bool
		host      *cluster.Host
		// Envoy's previous_priorities (retryRemoteLocalities): priorities
		// of the hosts tried, and those the current attempts avoid.
		triedPrios, excludedPrios uint64
	)
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			if br.Retries.Add(1) > c.RetryLimit() { // max_retries, or the retry budget
				br.Retries.Add(-1)
				br.RetryOverflow.Add(1)
				break
			}
			br.RetryTotal.Add(1)
			ri.retries++
			backoff := 25 * time.Millisecond << min(attempt-1, 3)
			backoff = backoff/2 + time.Duration(h.rnd()%uint64(backoff/2+1))
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		var addr string
		if c.Passthrough && up.dialAddr != "" {
			addr = up.dialAddr
		} else if c.Passthrough {
			addr = up.orig.Host
			if _, _, err := net.SplitHostPort(addr); err != nil {
				addr = net.JoinHostPort(addr, "80")
			}
		} else {
			var err error
			prev := host
			if f := retryPriorityFrequency(retry); f > 0 && attempt >= f && attempt%f == 0 {
				excludedPrios = triedPrios
			}
			host, err = c.PickExcluding(hash, excludedPrios)
			if err == nil && host.Priority < 64 {
				triedPrios |= 1 << host.Priority
			}
			// Like Envoy's previous_hosts retry predicate (Istio's default):
			// a retry prefers another host when there is one.
			if err == nil && prev != nil && host == prev {
				host = c.Other(prev, h.rnd())
			}
			if err != nil {
				if attempt > 0 {
					br.Retries.Add(-1)
				}
				if resp == nil {
					h.localReply(w, r, ri, http.StatusServiceUnavailable, "UH", "no healthy upstream")
					return
				}
				break
			}
			addr = host.Addr
		}
		if resp != nil {
			resp.Body.Close()
			resp = nil
		}
		ri.upstreamHost = addr
		if host != nil {
			ri.destWorkload = host.Workload
		}
		// A gateway does not carry downstream HTTP/2 (TLS ALPN) to HTTP/1
		// backends, nor does the inbound listener to the application (the
		// HTTP/2 may be only the mesh hop, Istio's h2UpgradePolicy): only
		// gRPC or clusters asking for HTTP/2 go upstream as h2c.
		resp, out = h.attempt(ctx, c, host, addr, up, retry, r.ProtoMajor == 2 && (h.forwardsH2() || isGRPC(r)))
		ri.upstreamPeer = up.peerSAN
		if attempt > 0 {
			br.Retries.Add(-1)
		}
		if host != nil {
			switch out {
			case outOK:
				c.Report(host, resp.StatusCode)
			case outConnectFailure, outReset:
				c.Report(host, 0)
			case outPerTryTimeout:
				c.Report(host, cluster.LocalTimeout)
			}
		}
		retriable = shouldRetry(retry, resp, out)
		if !retriable || ctx.Err() != nil {
			break
		}
	}
	if retriable && retry != nil && attempts > 1 {
		ri.flag("URX")
	}
	switch out {
	case outOverflow:
		br.PendingOverflow.Add(1)
		h.localReply(w, r, ri, http.StatusServiceUnavailable, "UO", "upstream connection pool overflow")
		return
	case outRouteTimeout, outPerTryTimeout:
		h.localReply(w, r, ri, http.StatusGatewayTimeout, "UT", "upstream request timeout")
		return
	case outDownstreamGone:
		ri.flag("DC")
		ri.status = 499
		return
	case outConnectFailure:
		h.localReply(w, r, ri, http.StatusServiceUnavailable, "UF", "upstream connect error or disconnect/reset before headers. reset reason: connection failure")
		return
	case outReset:
		h.localReply(w, r, ri, http.StatusServiceUnavailable, "UC", "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
		return
	}
	defer resp.Body.Close()
	hdr := w.Header()
	upgraded := resp.StatusCode == http.StatusSwitchingProtocols
	// The fixed hop-by-hop fields are left out as the fields are copied
	// (no map deletes afterwards); fields Connection names are dropped
	// after. With a scratch, the values are copied into the request's own
	// array: an H1Pool response's are reused once its body is closed, and
	// the downstream response may be written after that (h1Server's
	// finish).
	for k, v := range resp.Header {
		switch {
		case isHopHeader(k, upgraded):
		case up.sc != nil:
			rv := up.sc.rv
			i := len(rv)
			rv = append(rv, v...)
			hdr[k] = rv[i:len(rv):len(rv)]
			up.sc.rv = rv
		default:
			hdr[k] = append([]string(nil), v...)
		}
	}
	if conn := resp.Header["Connection"]; len(conn) > 0 {
		removeConnectionNamed(hdr, conn, upgraded)
	}
	if h.Direction == Outbound { // the server proxy's metadata is for telemetry, not the app
		if md := takePeerMetadata(hdr); md != "" {
			ri.peerMD = md
		}
	} else if ri.peerMD != "" { // answer a mesh peer with this workload's metadata
		h.self().stamp(hdr)
	}
	respHdr(hdr)
	if len(ri.flags) > 0 {
		hdr.Set(ResponseFlagsHeader, ri.flagString())
	}
	ri.status = resp.StatusCode
	if resp.StatusCode == http.StatusSwitchingProtocols {
		h.upgrade(w, r, ri, resp)
		return
	}
	if ri.xconnect != "" && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		// A 2xx would tell the extended CONNECT client its tunnel is open.
		clear(hdr)
		h.localReply(w, r, ri, http.StatusBadGateway, "", "upgrade_failed: upstream answered "+strconv.Itoa(resp.StatusCode)+" without switching protocols")
		return
	}
	w.WriteHeader(resp.StatusCode)
	if ri.framed {
		h.openMessageStream(r, w, ri)
	}
	rc := http.NewResponseController(w)
	stream := resp.ContentLength < 0 || r.ProtoMajor == 2
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 32*1024)
		bp = &b
	}
	defer h.bufs.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				ri.flag("DC")
				return
			}
			if stream {
				_ = rc.Flush()
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				if ctx.Err() != nil {
					ri.flag("UT")
				} else {
					ri.flag("UR")
				}
				panic(http.ErrAbortHandler) // reset the downstream stream
			}
			break
		}
	}
	for k, v := range resp.Trailer {
		hdr[http.TrailerPrefix+k] = v
	}
}

func (h *Handler) attempt(ctx context.Context, c *cluster.Cluster, host *cluster.Host, addr string, up *upstreamReq,
	retry *router.RetryPolicy, h2 bool) (*http.Response, outcome) {
	br := c.Breakers
	br.PendingTotal.Add(1)
	if br.Pending.Add(1) > c.Thresholds.MaxPending {
		br.Pending.Add(-1)
		return nil, outOverflow
	}
	t1, t2, h1 := c.Pools(up.orig) // per downstream connection for PROXY protocol clusters
	t := t1
	upgrade := isUpgrade(up.orig)
	// An upgrade to an HTTP/2 upstream is an RFC 8441 extended CONNECT
	// stream (roundTripXConnect); other requests to it go through t2.
	xconn := upgrade && (h2 || c.UpstreamH2)
	if (h2 || c.UpstreamH2) && !upgrade {
		t = t2
	}
	// Plain HTTP/1.1 goes through the cluster's own pool: this goroutine
	// writes the request and reads the response itself (no per-connection
	// goroutines to hand off to, no client trace to allocate), and the
	// attempt's bookkeeping and upstream request reuse the request's
	// scratch (attempts run one after the other; each one's body is closed
	// before the next starts). Otherwise one allocation for the attempt's
	// bookkeeping; it also wraps the response body.
	// Request trailers are not written by the pool: those go through
	// net/http's Transport.
	ownH1 := h1 != nil && t == t1 && !upgrade && len(up.orig.Trailer) == 0
	var st *attemptState
	if ownH1 && up.sc != nil {
		st = &up.sc.att
		*st = attemptState{h: h, br: br, host: host, up: up, peerURI: c.MTLS != nil}
	} else {
		st = &attemptState{h: h, br: br, host: host, up: up, peerURI: c.MTLS != nil}
	}
	defer st.release()
	actx := ctx
	if retry != nil && retry.PerTryTimeout > 0 {
		actx, st.cancel = context.WithTimeout(ctx, retry.PerTryTimeout)
	}
	var req *http.Request
	var err error
	if ownH1 && up.sc != nil {
		req, err = up.build(nil, addr, &up.sc.url, up.sc)
	} else {
		if !ownH1 {
			actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { st.gotConn(info.Conn) }})
		}
		req, err = up.build(actx, addr, &st.url, nil)
	}
	if err != nil {
		st.finish()
		return nil, outReset
	}
	if host != nil {
		host.Enter()
		st.entered = true
	}
	var resp *http.Response
	if ownH1 {
		// A dial failure leaves got false (connect failure); the pool counts
		// max_requests_per_connection itself. A buffered body can be sent
		// again on a new connection (GetBody); a streamed one cannot.
		resp, err = h1.RoundTrip(actx, req, addr, req.GetBody, st.gotConn)
	} else if xconn {
		resp, err = roundTripXConnect(c.XConnectPool(up.orig), t1, req)
	} else {
		resp, err = t.RoundTrip(req)
	}
	if err != nil {
		st.finish()
		switch {
		case ctx.Err() != nil && up.orig.Context().Err() != nil:
			return nil, outDownstreamGone
		case ctx.Err() != nil:
			return nil, outRouteTimeout
		case actx.Err() != nil:
			return nil, outPerTryTimeout
		case !st.got.Load():
			return nil, outConnectFailure
		}
		return nil, outReset
	}
	// Keep the per-try context alive while the body streams; finish on
	// close. The host stays active (for LEAST_REQUEST) until the body is
	// closed.
	st.body = resp.Body
	resp.Body = st
	return resp, outOK
}

// attemptState is one upstream attempt: the pending-request gauge it
// holds until a connection is in hand, the connection whose request
// budget it used up, and, as the response body's wrapper, the clean-up
// when the body is closed (per-try timeout, host activity, spent
// connection).
type attemptState struct {
	br       *cluster.Breakers
	host     *cluster.Host
	up       *upstreamReq
	peerURI  bool // record the upstream mTLS peer (access log, principal labels)
	h        *Handler
	entered  bool // host.Enter was called
	got      atomic.Bool
	spent    *cluster.CountedConn // connection whose request budget this request used up
	conn     net.Conn             // the upstream connection (an upgrade's, to half-close)
	cancel   context.CancelFunc   // per-try timeout, or nil
	body     io.ReadCloser
	closed   bool // Close was called: body is not ours any more
	finished atomic.Bool
	url      url.URL // the upstream request's URL (when not in upScratch)
}

// release returns the pending-request slot once.
func (a *attemptState) release() {
	if a.got.CompareAndSwap(false, true) {
		a.br.Pending.Add(-1)
	}
}

func (a *attemptState) gotConn(conn net.Conn) {
	a.release()
	a.conn = conn
	if cc, ok := conn.(*cluster.CountedConn); ok && cc.Use() {
		a.spent = cc
	}
	if a.peerURI {
		a.up.peerSAN = a.h.principals.of(upstreamCert(conn)) // access log upstream_peer_uri_san, destination_principal
	}
}

// finish ends the attempt once: per-try timeout, host activity, and the
// connection whose request budget is spent (max_requests_per_connection).
func (a *attemptState) finish() {
	if !a.finished.CompareAndSwap(false, true) {
		return
	}
	if a.cancel != nil {
		a.cancel()
	}
	if a.entered {
		a.host.Leave()
	}
	if a.spent != nil {
		_ = a.spent.Close()
	}
}

func (a *attemptState) Read(p []byte) (int, error) {
	if a.closed {
		return 0, errors.New("read on closed response body")
	}
	return a.body.Read(p)
}

// Close closes the body once: after that an H1Pool body (and its
// connection) may serve another request.
func (a *attemptState) Close() error {
	if a.closed {
		return nil
	}
	a.closed = true
	err := a.body.Close()
	a.finish()
	return err
}

// Write makes upgraded (101) bodies writable through the wrapper.
func (a *attemptState) Write(p []byte) (int, error) {
	if w, ok := a.body.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("body is not writable")
}

// CloseWrite half-closes an upgraded (101) body: an extended CONNECT
// stream ends its request side (END_STREAM), an HTTP/1.1 connection its
// write side; where neither can, the body is closed.
func (a *attemptState) CloseWrite() error {
	if cw, ok := a.body.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	if a.conn != nil && cluster.CloseWrite(a.conn) == nil {
		return nil
	}
	return a.Close()
}

// retryPriorityFrequency is the retry policy's previous_priorities update
// frequency, 0 without one.
func retryPriorityFrequency(p *router.RetryPolicy) int {
	if p == nil {
		return 0
	}
	return p.PreviousPriorities
}

func shouldRetry(p *router.RetryPolicy, resp *http.Response, out outcome) bool {
	if p == nil {
		return false
	}
	switch out {
	case outConnectFailure:
		return p.On&(router.RetryConnectFailure|router.Retry5xx|router.RetryGatewayError|router.RetryReset) != 0
	case outReset:
		return p.On&(router.RetryReset|router.Retry5xx|router.RetryGatewayError|router.RetryRefusedStream) != 0
	case outPerTryTimeout:
		return p.On&(router.Retry5xx|router.RetryGatewayError) != 0
	case outOK:
	default:
		return false
	}
	s := resp.StatusCode
	switch {
	case p.On&router.Retry5xx != 0 && s >= 500:
		return true
	case p.On&router.RetryGatewayError != 0 && (s == 502 || s == 503 || s == 504):
		return true
	case p.On&router.RetryRetriable4xx != 0 && s == 409:
		return true
	}
	if p.On&router.RetryRetriableStatusCodes != 0 {
		for _, c := range p.StatusCodes {
			if c == s {
				return true
			}
		}
	}
	if gs := resp.Header.Get("Grpc-Status"); gs != "" {
		switch gs {
		case "14":
			return p.On&router.RetryGRPCUnavailable != 0
		case "1":
			return p.On&router.RetryGRPCCancelled != 0
		case "4":
			return p.On&router.RetryGRPCDeadlineExceeded != 0
		case "8":
			return p.On&router.RetryGRPCResourceExhausted != 0
		}
	}
	return false
}

// localReply answers from the proxy itself (gRPC-aware).
func (h *Handler) localReply(w http.ResponseWriter, r *http.Request, ri *reqInfo, status int, flag, msg string) {
	if flag != "" {
		ri.flag(flag)
	}
	if h.Direction == Inbound && (ri.peerMD != "" || len(r.Header[PeerMetadataHeader]) > 0) {
		// The calling sidecar learns who answered, as from a forwarded response.
		h.self().stamp(w.Header())
	}
	ri.details = msg
	if len(ri.flags) > 0 {
		w.Header().Set(ResponseFlagsHeader, ri.flagString())
	}
	if isGRPC(r) {
		h.grpcReply(w, ri, httpToGRPC(status), msg)
		return
	}
	ri.status = status
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg)
}

func (h *Handler) grpcReply(w http.ResponseWriter, ri *reqInfo, code int, msg string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/grpc")
	hdr.Set("Grpc-Status", strconv.Itoa(code))
	hdr.Set("Grpc-Message", msg)
	if len(ri.flags) > 0 {
		hdr.Set(ResponseFlagsHeader, ri.flagString())
	}
	ri.status = http.StatusOK
	w.WriteHeader(http.StatusOK)
}

// httpToGRPC maps HTTP statuses to gRPC codes as Envoy does.
func httpToGRPC(s int) int {
	switch s {
	case 400:
		return 13
	case 401:
		return 16
	case 403:
		return 7
	case 404:
		return 12
	case 429, 502, 503, 504:
		return 14
	}
	return 2
}

func (h *Handler) forwardInboundDirect(w *countingWriter, r *http.Request, ri *reqInfo, rt *Runtime, appPort int, up *upstreamReq) {
	name := "inbound|" + strconv.Itoa(appPort) + "||"
	c := rt.Clusters.Clusters[name]
	if c == nil && appPort == h.AppPort {
		c = h.directCluster()
	} else if c == nil {
		c = h.portCluster(appPort)
	}
	ri.cluster = name
	*up = upstreamReq{orig: r, path: r.URL.Path, rawQuery: r.URL.RawQuery, host: r.Host,
		buffered: r.Body == nil || r.Body == http.NoBody, sc: up.sc}
	h.forward(r.Context(), w, r, ri, c, up, h.rnd(), nil, func(http.Header) {})
}

// portCluster is the capture-mode direct cluster for 127.0.0.1:port.
func (h *Handler) portCluster(port int) *cluster.Cluster {
	if c, ok := h.ports.Load(port); ok {
		return c.(*cluster.Cluster)
	}
	c, _ := h.ports.LoadOrStore(port, cluster.Static("inbound|"+strconv.Itoa(port)+"||", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))))
	return c.(*cluster.Cluster)
}

func (h *Handler) directCluster() *cluster.Cluster {
	h.once2.Do(func() {
		h.direct = cluster.Static("inbound|"+strconv.Itoa(h.AppPort)+"||", net.JoinHostPort("127.0.0.1", strconv.Itoa(h.AppPort)))
	})
	return h.direct
}

// labels are the standard metric labels of request r (as finished so
// far), its destination service and its downstream mTLS principal
// (inbound; "" otherwise).
func (h *Handler) labels(r *http.Request, w *countingWriter, ri *reqInfo) (l stats.Labels, svc, downPrincipal string) {
	proto := "http"
	if ri.grpc {
		proto = "grpc"
	} else if r.Method == http.MethodConnect {
		proto = "tcp"
	}
	svc = h.serviceFQDN(serviceOf(ri.cluster, r.Host))
	if svc == "" && h.Direction == Inbound {
		svc = h.Service
	}
	svcName, svcNS, _ := strings.Cut(svc, ".")
	if svcNS != "" {
		svcNS, _, _ = strings.Cut(svcNS, ".")
	}
	me := h.self()
	l = stats.Labels{RequestProtocol: proto, ResponseCode: statusText(ri.status), ResponseFlags: ri.flagString(),
		DestinationService: orUnknown(svc), DestinationServiceName: orUnknown(svcName), DestinationServiceNamespace: orUnknown(svcNS)}
	if proto == "grpc" {
		l.GRPCResponseStatus = grpcStatus(w.Header(), ri.status)
	}
	if h.Direction == Outbound {
		l.Reporter = "source"
		setSource(&l, &me.info)
		peer := h.peers.get(ri.peerMD)
		setDestination(&l, peer)
		if peer == unknownPeer { // no metadata exchange: the endpoint's workload metadata
			l.DestinationWorkload = orUnknown(ri.destWorkload)
			if ri.destWorkload != "" {
				l.DestinationWorkloadNamespace = orUnknown(svcNS)
			}
		}
		if ri.upstreamPeer != "" { // mutual TLS upstream
			l.SourcePrincipal, l.DestinationPrincipal = me.principal, ri.upstreamPeer
		} else {
			l.SourcePrincipal, l.DestinationPrincipal = "unknown", "unknown"
		}
		// As Istio: the client cannot know the server's policy.
		l.ConnectionSecurityPolicy = "unknown"
	} else {
		l.Reporter = "destination"
		md := ri.peerMD
		if md == "" { // answered before forwarding (e.g. an authorization denial)
			if v := r.Header[PeerMetadataHeader]; len(v) > 0 {
				md = v[0]
			}
		}
		setSource(&l, h.peers.get(md))
		setDestination(&l, &me.info)
		if svc == "" {
			l.DestinationServiceNamespace = h.Ident.Namespace
		}
		downPrincipal = h.principals.of(tlsLeaf(r.TLS))
		l.SourcePrincipal, l.DestinationPrincipal = "unknown", "unknown"
		l.ConnectionSecurityPolicy = "none"
		if downPrincipal != "" {
			l.SourcePrincipal, l.DestinationPrincipal = downPrincipal, me.principal
			l.ConnectionSecurityPolicy = "mutual_tls"
			if ns := spiffeNamespace(downPrincipal); ns != "" { // as Istio: the certificate's namespace first
				l.SourceWorkloadNamespace = ns
			}
		}
	}
	return l, svc, downPrincipal
}

// messageLabels are the label sets of a gRPC request's message counters
// (istio_request_messages_total, istio_response_messages_total): the peer
// labels only, as Istio's, one set per Telemetry override group that has
// a message counter. attrs may be nil (made here when needed).
func (h *Handler) messageLabels(r *http.Request, w *countingWriter, ri *reqInfo, l stats.Labels, downPrincipal string, mp *MetricsPolicy, attrs expr.Attributes) []stats.Labels {
	lm := l
	lm.Remove(stats.MessageOmitted)
	if !mp.overrides() {
		return []stats.Labels{lm}
	}
	var out []stats.Labels
	for i := range mp.HTTP {
		g := &mp.HTTP[i]
		if g.Metrics&messageMetrics == 0 {
			continue
		}
		if attrs == nil && len(g.Upsert) > 0 {
			attrs = h.requestAttrs(r, ri, w, l, downPrincipal)
		}
		out = append(out, g.apply(lm, stats.DropAllHTTP, attrs))
	}
	return out
}

// openMessageStream starts reporting a gRPC stream's message counts every
// Telemetry reportingInterval while it lasts (as Istio's stats filter),
// once the peer is known: called when the response headers were sent.
// finish reports the rest.
func (h *Handler) openMessageStream(r *http.Request, w *countingWriter, ri *reqInfo) {
	if h.Stats == nil || !ri.framed || ri.msgStream != nil {
		return
	}
	mp := h.metricsPolicy(h.Runtime())
	l, _, downPrincipal := h.labels(r, w, ri)
	ls := h.messageLabels(r, w, ri, l, downPrincipal, mp, nil)
	var req *stats.GRPCMessages
	if ri.body != nil {
		req = ri.body.msgs
	}
	ri.msgStream = h.Stats.OpenGRPCStream(mp.tcpInterval(), req, &w.msgs, ls...)
}

// finish ends a request: streamDone, then its telemetry.
func (h *Handler) finish(r *http.Request, w *countingWriter, ri *reqInfo) {
	h.streamDone(w, ri)
	h.telemetry(r, w, ri)
}

// streamDone settles the request's status and runs the filters'
// end-of-stream functions, which may still write the response (a
// filter that buffers it).
func (h *Handler) streamDone(w *countingWriter, ri *reqInfo) {
	if ri.status == 0 {
		ri.status = w.status
	}
	if len(ri.done) > 0 {
		si := StreamInfo{ResponseCode: ri.status, ResponseFlags: ri.flagString(), Details: ri.details, Cluster: ri.cluster,
			UpstreamHost: ri.upstreamHost, RouteName: ri.routeName, Duration: time.Since(ri.start), BytesReceived: ri.received(), BytesSent: w.n}
		for i := len(ri.done) - 1; i >= 0; i-- {
			ri.done[i](si)
		}
	}
}

// telemetry records a finished request (after streamDone): metrics,
// route stats, its span, access logs.
func (h *Handler) telemetry(r *http.Request, w *countingWriter, ri *reqInfo) {
	dur := time.Since(ri.start)
	l, svc, downPrincipal := h.labels(r, w, ri)
	rt := h.Runtime()
	var attrs expr.Attributes // Telemetry expressions' view of the request, made when needed
	if h.Stats != nil && l.RequestProtocol != "tcp" {
		ms, reqB := float64(dur.Microseconds())/1000, ri.received()
		mp := h.metricsPolicy(rt)
		if !mp.overrides() {
			h.Stats.ObserveHTTP(l, ms, reqB, w.n)
		} else { // Telemetry metrics overrides: one series set per group
			if needsAttrs(mp.HTTP) {
				attrs = h.requestAttrs(r, ri, w, l, downPrincipal)
			}
			for i := range mp.HTTP {
				if g := &mp.HTTP[i]; g.Metrics&httpMetrics != 0 {
					h.Stats.ObserveHTTP(g.apply(l, stats.DropAllHTTP, attrs), ms, reqB, w.n)
				}
			}
		}
		if ri.msgStream != nil { // reported while open: the rest
			ri.msgStream.Close()
			ri.msgStream = nil
		} else if ri.framed {
			reqMsgs, respMsgs := ri.requestMessages(), w.msgs.Count()
			for _, ml := range h.messageLabels(r, w, ri, l, downPrincipal, mp, attrs) {
				h.Stats.ObserveGRPCMessages(ml, reqMsgs, respMsgs)
			}
		}
	}
	if h.Stats != nil && ri.statPrefix != "" {
		h.routeStats(ri)
	}
	if ri.span != nil {
		h.finishSpan(r, ri, svc, ri.start.Add(dur))
	}
	if ols := h.otelLogs(rt); len(ols) > 0 {
		attrs = h.logOTelHTTP(ols, r, ri, w, l, downPrincipal, dur, attrs)
	}
	if h.Access == nil {
		return
	}
	if ap := h.accessPolicy(rt); ap != nil && ap.Filter != nil && !ap.Disabled {
		if attrs == nil {
			attrs = h.requestAttrs(r, ri, w, l, downPrincipal)
		}
		if !ap.Filter.Matches(attrs) {
			return
		}
	} else if !ap.Allows(ri.status) {
		return
	}
	dir := "outbound"
	if h.Direction == Inbound {
		dir = "inbound"
	}
	traceID, spanID := traceIDs(r, ri)
	h.Access.Log(&stats.AccessEntry{TraceID: traceID, SpanID: spanID, ResponseCodeDetails: ri.details, UpstreamPeerURISAN: ri.upstreamPeer,
		SourceWorkload: l.SourceWorkload, DestinationWorkload: l.DestinationWorkload, StartTime: ri.start.UTC(), Method: r.Method, Path: r.URL.RequestURI(), Protocol: r.Proto,
		ResponseCode: ri.status, ResponseFlags: ri.flagString(), BytesReceived: ri.received(), BytesSent: w.n,
		DurationMs: dur.Milliseconds(), UpstreamHost: ri.upstreamHost, UpstreamCluster: ri.cluster,
		XRequestID: r.Header.Get("X-Request-Id"), RouteName: ri.routeName, Authority: r.Host, Direction: dir,
		DownstreamPeerURISAN: downPrincipal})
}

// logOTelHTTP queues a request's LogRecord for each OpenTelemetry access
// logger whose filter it passes; it returns the request's attributes
// (made here when a filter or format needed them; may be the given ones).
// Only runs when OpenTelemetry loggers are configured, so its
// allocations stay off the plain request path.
func (h *Handler) logOTelHTTP(ols []OTelLog, r *http.Request, ri *reqInfo, w *countingWriter, l stats.Labels, downPrincipal string, dur time.Duration, made expr.Attributes) expr.Attributes {
	attrs := func() expr.Attributes {
		if made == nil {
			made = h.requestAttrs(r, ri, w, l, downPrincipal)
		}
		return made
	}
	var rec *otelals.Record
	for _, ol := range ols {
		if !ol.Policy.passes(ri.status, attrs) {
			continue
		}
		if rec == nil {
			proto := r.Proto
			if r.ProtoMajor == 2 {
				proto = "HTTP/2"
			}
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			traceID, spanID := traceIDs(r, ri)
			path := r.URL.RequestURI()
			if p := r.Header[":protocol"]; r.Method == http.MethodConnect && len(p) == 0 {
				path = "" // CONNECT has no :path
			}
			rec = &otelals.Record{Start: ri.start, Duration: dur, Method: r.Method, Path: path, Protocol: proto,
				Authority: r.Host, Scheme: scheme, Request: r.Header, Response: w.Header(), Code: ri.status, Flags: ri.flagString(),
				Details: ri.details, BytesReceived: ri.received(), BytesSent: w.n, UpstreamHost: ri.upstreamHost,
				UpstreamCluster: ri.cluster, DownstreamRemote: r.RemoteAddr, SNI: tlsServerName(r.TLS), RouteName: ri.routeName,
				DownstreamPeerURISAN: downPrincipal, UpstreamPeerURISAN: ri.upstreamPeer, TraceID: traceID, SpanID: spanID,
				Attrs: attrs}
			if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && local != nil {
				rec.DownstreamLocal = local.String()
			}
			if h.Direction == Outbound {
				rec.UpstreamPeer = peerOf(l.DestinationWorkload, l.DestinationWorkloadNamespace, l.DestinationCluster,
					l.DestinationCanonicalService, l.DestinationCanonicalRevision, l.DestinationApp, l.DestinationVersion)
			} else {
				rec.DownstreamPeer = peerOf(l.SourceWorkload, l.SourceWorkloadNamespace, l.SourceCluster,
					l.SourceCanonicalService, l.SourceCanonicalRevision, l.SourceApp, l.SourceVersion)
			}
		}
		h.OTelLogs.Log(ol.Config, rec)
	}
	return made
}

func tlsServerName(cs *tls.ConnectionState) string {
	if cs == nil {
		return ""
	}
	return cs.ServerName
}

// serviceOf extracts the service host from an Istio cluster name
// (outbound|PORT|SUBSET|HOST), else from the authority.
func serviceOf(clusterName, authority string) string {
	// Without strings.Split: this runs for every request's telemetry.
	if strings.Count(clusterName, "|") == 3 {
		if i := strings.LastIndexByte(clusterName, '|'); i < len(clusterName)-1 {
			return clusterName[i+1:]
		}
	}
	h := authority
	if hh, _, err := net.SplitHostPort(authority); err == nil {
		h = hh
	}
	if isIP(h) {
		return ""
	}
	return h
}

// isIP reports whether s is an IP address, without net.ParseIP's
// allocation (of the address, or of the error for a host name).
func isIP(s string) bool {
	if s == "" {
		return false
	}
	if strings.Contains(s, "%") { // net.ParseIP takes no zone
		return false
	}
	if !strings.Contains(s, ":") { // IPv4 needs digits and dots only
		for i := 0; i < len(s); i++ {
			if c := s[i]; c != '.' && (c < '0' || c > '9') {
				return false
			}
		}
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// statusCodes caches response_code label values 100-599.
var statusCodes = func() (t [500]string) {
	for i := range t {
		t[i] = strconv.Itoa(100 + i)
	}
	return t
}()

func statusText(code int) string {
	if code >= 100 && code < 600 {
		return statusCodes[code-100]
	}
	return strconv.Itoa(code)
}

// maxFQDNCache bounds the hosts Handler.serviceFQDN remembers.
const maxFQDNCache = 1024

// serviceFQDN is ServiceFQDN in the handler's namespace, remembered per
// host (it builds a new string for short names, once per request before).
func (h *Handler) serviceFQDN(host string) string {
	if host == "" {
		return ""
	}
	if v, ok := h.fqdns.Load(host); ok {
		return v.(string)
	}
	fq := ServiceFQDN(host, h.Ident.Namespace)
	if h.nfqdn.Load() < maxFQDNCache {
		fq = strings.Clone(fq) // not a substring of the request's head
		if _, loaded := h.fqdns.LoadOrStore(strings.Clone(host), fq); !loaded {
			h.nfqdn.Add(1)
		}
	}
	return fq
}

// commonTLDs are top-level domains that make a one-dot host an external
// name rather than NAME.NAMESPACE.
var commonTLDs = map[string]bool{"com": true, "org": true, "net": true, "io": true, "dev": true, "edu": true,
	"gov": true, "info": true, "biz": true, "app": true, "co": true, "cloud": true, "local": true, "internal": true}

// ServiceFQDN expands a service host as Istio reports it in
// destination_service: a short name ("details") becomes
// details.NS.svc.cluster.local for the proxy's namespace NS, "name.ns" and
// "name.ns.svc" become name.ns.svc.cluster.local; cluster-local FQDNs,
// external names (extsvc.example.com, example.com) and IPs stay as they are.
func ServiceFQDN(host, ns string) string {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" || strings.HasSuffix(host, ".svc.cluster.local") || isIP(host) {
		return host
	}
	if ns == "" {
		ns = "default"
	}
	dots := strings.Count(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	switch {
	case dots == 0:
		return host + "." + ns + ".svc.cluster.local"
	case dots == 1 && dnsLabel(last) && !commonTLDs[last]:
		return host + ".svc.cluster.local"
	case dots == 2 && last == "svc":
		return host + ".cluster.local"
	}
	return host
}

// dnsLabel reports whether s is an RFC 1123 label (a namespace-like name).
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// setSource and setDestination copy one workload's precomputed values.
func setSource(l *stats.Labels, p *PeerInfo) {
	l.SourceWorkload, l.SourceWorkloadNamespace, l.SourceApp, l.SourceVersion = p.Workload, p.Namespace, p.App, p.Version
	l.SourceCanonicalService, l.SourceCanonicalRevision, l.SourceCluster = p.CanonicalService, p.CanonicalRevision, p.Cluster
}

func setDestination(l *stats.Labels, p *PeerInfo) {
	l.DestinationWorkload, l.DestinationWorkloadNamespace, l.DestinationApp, l.DestinationVersion = p.Workload, p.Namespace, p.App, p.Version
	l.DestinationCanonicalService, l.DestinationCanonicalRevision, l.DestinationCluster = p.CanonicalService, p.CanonicalRevision, p.Cluster
}

// grpcCodes are the grpc_response_status values of gRPC's codes 0-16.
var grpcCodes = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"}

const trailerGRPCStatus = http.TrailerPrefix + "Grpc-Status"

// grpcStatus is a gRPC response's grpc_response_status: the grpc-status
// trailer, else header (trailers-only responses), else the HTTP status
// mapped as Envoy does; "" when there is no response.
func grpcStatus(hdr http.Header, status int) string {
	v := hdr[trailerGRPCStatus]
	if len(v) == 0 {
		v = hdr["Grpc-Status"]
	}
	if len(v) == 0 {
		if status == 0 {
			return ""
		}
		return grpcCodes[httpToGRPC(status)]
	}
	n := 0
	for _, c := range []byte(v[0]) {
		if c < '0' || c > '9' || n > len(grpcCodes) {
			return grpcCodes[2] // not a code: Unknown
		}
		n = n*10 + int(c-'0')
	}
	if v[0] == "" || n >= len(grpcCodes) {
		return grpcCodes[2]
	}
	return grpcCodes[n]
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// routeStats counts a request of a route with a stat_prefix (Istio's
// HTTPMatchRequest.statPrefix) under vhost.VHOST.route.PREFIX, with
// Envoy's virtual-cluster statistic names: upstream_rq_total,
// upstream_rq_<code>, upstream_rq_<class>xx, upstream_rq_retry.
func (h *Handler) routeStats(ri *reqInfo) {
	p := ri.statPrefix
	h.Stats.Counter(p + ".upstream_rq_total").Add(1)
	if ri.status > 0 {
		h.Stats.Counter(p + ".upstream_rq_" + strconv.Itoa(ri.status)).Add(1)
		h.Stats.Counter(p + ".upstream_rq_" + strconv.Itoa(ri.status/100) + "xx").Add(1)
	}
	if ri.retries > 0 {
		h.Stats.Counter(p + ".upstream_rq_retry").Add(uint64(ri.retries))
	}
}
