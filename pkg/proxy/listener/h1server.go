package listener

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/internal/httpwire"
	"github.com/weftmesh/weft/pkg/proxy/sockio"
)

// Server is the proxy's own HTTP/1.1 server for its listeners. Compared
// with net/http's server it parses a request head into strings shared
// with the connection's previous request where lines repeat (h1parse.go,
// httpwire.HeadLines), reuses the connection's buffers and response writer from
// request to request, gives requests the connection's context instead of
// a new one each, and watches for a client hang-up only when a handler
// runs longer than a few milliseconds (instead of a goroutine per
// request). Connections that open with the HTTP/2 preface (h2c prior
// knowledge, or h2 inside the inbound mTLS wrapper) are handed to a
// net/http server with the same handler.
//
// Handlers see what net/http gives them: Request.Host without a Host
// field, Body (http.NoBody when empty), ContentLength (-1 chunked),
// Trailer, RemoteAddr, TLS, RequestURI, a context with
// http.LocalAddrContextKey and what ConnContext adds; the ResponseWriter
// supports Flush, Hijack, trailers (http.TrailerPrefix or a declared
// Trailer field), 1xx interim responses and ResponseController's
// deadlines. A ResponseWriter and Request must not be used after
// ServeHTTP returns.
type Server struct {
	Handler http.Handler
	// ConnContext, if set, derives each connection's context (as
	// http.Server.ConnContext).
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// ReadHeaderTimeout bounds reading one request head; default 30s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long; 0 never.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head; default 1 MiB (431 beyond).
	MaxHeaderBytes int
	// Log receives connection-level errors at debug level; nil discards.
	Log *slog.Logger

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*h1Conn]struct{}
	shutdown  atomic.Bool
	wd        hangupWatchdog
	h2once    sync.Once
	h2        *http.Server
	h2l       *chanListener
}

// Interface guard: the proxy's listeners serve through Server.
var _ interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
} = (*Server)(nil)

const (
	connIdle int32 = iota
	connActive
	connClosed
)

// hangupCheckDelay is how long a handler runs before the server starts
// watching its connection for a client hang-up (which cancels the
// request context, e.g. flag DC during a fault delay). The watch starts
// at the first scan after that: while requests keep arriving, within
// about two hangupCheckDelay; without traffic, within one
// hangupWatchdogTick more.
const hangupCheckDelay = 10 * time.Millisecond

// hangupWatchdogTick is the period of the watchdog goroutine's own scans.
const hangupWatchdogTick = 50 * time.Millisecond

// hangupWatchdog starts the hang-up watch of handlers that run longer
// than hangupCheckDelay. A handler only stores the time it was armed (no
// runtime timer per request: arming one that is the earliest on its P
// wakes another thread, which at 1000 rps of evenly spaced requests was
// ~1 futex wake-up and a fifth of the proxy's CPU per request). The
// scans that start the due watches are made by arriving requests, at
// most one per hangupCheckDelay (scanHangups), and by one goroutine per
// Server that ticks every hangupWatchdogTick while handlers run and
// sleeps when none does. Its tick used to be hangupCheckDelay itself:
// 100 timer wake-ups a second, each waking a thread and the runtime's
// monitor thread, ~3–8 % of a proxy's CPU at 1000 evenly spaced
// requests a second.
type hangupWatchdog struct {
	once     sync.Once
	epoch    time.Time     // armed times count from here (monotonic)
	lastScan atomic.Int64  // nanoseconds since epoch of the last scan
	active   atomic.Int64  // handlers whose watch is armed
	parked   atomic.Bool   // the goroutine waits on wake
	wake     chan struct{} // capacity 1
	stop     chan struct{} // closed by Shutdown
}

// watchMarked in h1Conn.wdSince: the watch was started for this handler.
const watchMarked = -1

// maxPostHandlerDrain is how much unread request body is discarded after
// a handler to keep the connection (as net/http).
const maxPostHandlerDrain = 256 << 10

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = http.ErrServerClosed

var (
	h1ReaderPool sync.Pool // *bufio.Reader, 4 KiB
	h1WriterPool sync.Pool // *bufio.Writer, 4 KiB
	aLongTimeAgo = time.Unix(1, 0)
)

// Serve accepts connections on l until it fails or Shutdown is called.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[*net.Listener]struct{}{}
		s.conns = map[*h1Conn]struct{}{}
	}
	s.listeners[&l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, &l)
		s.mu.Unlock()
	}()
	base := context.Background()
	var backoff time.Duration
	for {
		rwc, err := l.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.logDebug("accept error; retrying", "err", err, "delay", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(base, rwc)
		if c == nil {
			rwc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) logDebug(msg string, args ...any) {
	if s.Log != nil {
		s.Log.Debug(msg, args...)
	}
}

func (s *Server) newConn(base context.Context, rwc net.Conn) *h1Conn {
	c := &h1Conn{s: s, rwc: rwc, remoteAddr: rwc.RemoteAddr().String()}
	ctx := context.WithValue(base, http.LocalAddrContextKey, rwc.LocalAddr())
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, rwc)
	}
	cctx, cancel := context.WithCancel(ctx)
	c.ctx, c.cancel = &connCtx{Context: cctx, c: c, origDst: cctx.Value(origDstKey{})}, cancel
	c.src = rwc
	if pc, ok := rwc.(*peekedConn); ok { // sniffed inbound: read through its buffer
		c.src = pc.r
	}
	c.d = sockio.DeferrerOf(rwc)
	c.cr.c = c
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *h1Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops accepting, closes idle connections and waits for active
// requests to finish (or ctx). Hijacked connections are not waited for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown.Store(true)
	s.wd.once.Do(func() {}) // no watchdog after this
	if s.wd.stop != nil {
		select {
		case <-s.wd.stop:
		default:
			close(s.wd.stop)
		}
	}
	var errs []error
	for l := range s.listeners {
		if err := (*l).Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	h2 := s.h2
	s.mu.Unlock()
	h2done := make(chan error, 1)
	if h2 != nil {
		go func() { h2done <- h2.Shutdown(ctx) }()
	} else {
		h2done <- nil
	}
	wait := time.Millisecond
	for {
		if s.closeIdle() {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	errs = append(errs, <-h2done)
	return errors.Join(errs...)
}

// closeIdle closes idle connections; true when none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			_ = c.rwc.Close()
		}
	}
	return len(s.conns) == 0
}

// h2Server is the net/http server taking connections that start with
// the HTTP/2 preface.
func (s *Server) h2Server() *chanListener {
	s.h2once.Do(func() {
		pr := new(http.Protocols)
		pr.SetHTTP1(true)
		pr.SetUnencryptedHTTP2(true)
		l := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
		srv := &http.Server{Handler: s.Handler, Protocols: pr, ReadHeaderTimeout: s.readHeaderTimeout(), ConnContext: s.ConnContext}
		if s.Log != nil {
			srv.ErrorLog = slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug)
		}
		s.mu.Lock()
		s.h2, s.h2l = srv, l
		s.mu.Unlock()
		go func() { _ = srv.Serve(l) }()
	})
	return s.h2l
}

func (s *Server) readHeaderTimeout() time.Duration {
	if s.ReadHeaderTimeout > 0 {
		return s.ReadHeaderTimeout
	}
	return 30 * time.Second
}

// chanListener hands connections to an http.Server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// h1Conn is one downstream connection.
type h1Conn struct {
	s   *Server
	rwc net.Conn
	src io.Reader // rwc, or the sniffer's buffered reader
	// d sends a kept-alive connection's response with the read of the
	// next request (one read(2) fewer per request, see
	// sockio.DeferFlush); nil when the socket is not a sockio.Conn.
	d          sockio.Deferrer
	cr         connReader
	br         *bufio.Reader
	bw         *bufio.Writer
	ctx        context.Context
	cancel     context.CancelFunc
	remoteAddr string
	tlsState   *tls.ConnectionState
	state      atomic.Int32
	head       []byte // scratch for the request head
	base       *http.Request
	resp       h1Response

	// Reused from request to request (see serveOne): nothing may keep
	// them once a request's response is finished.
	req    http.Request // a copy of *base, then the request's fields
	url    url.URL
	hs     httpwire.HeaderScratch
	hl     httpwire.HeadLines // the previous request head's lines, reused where equal
	rs     *reqState          // the Handler's per-request state (reqStateFor)
	rsBusy bool               // rs is in use by a ServeHTTP on this connection

	// hang-up watch (see watchHangup); guarded by mu.
	mu        sync.Mutex
	inHandler bool
	bodyDone  bool
	pipelined bool // the next request's bytes are already buffered
	bgRunning bool
	bgDone    chan struct{}
	bgErr     error
	hijacked  bool
	// wdSince is when the armed handler was armed (nanoseconds since the
	// watchdog's epoch, plus one), 0 when none is armed (else it counts
	// in the watchdog's active handlers), watchMarked once its watch was
	// started. Only c.mu holders set or clear it; scans only mark it.
	wdSince atomic.Int64
	// wmu orders the 100 Continue a body read writes against the
	// response the handler writes.
	wmu sync.Mutex

	// onCancel is the function registered through connCtx.AfterCancel
	// (an upstream exchange's interrupt), hookID its registration.
	hookMu   sync.Mutex
	onCancel func()
	hookID   uint64
}

// connCtx is a connection's context (cancelled when the client hangs up
// or the connection closes). Besides the context it offers
// cluster.CancelHook: one function at a time runs on that cancellation,
// registered without context.AfterFunc's per-call allocations (H1Pool
// interrupts an upstream exchange with it).
type connCtx struct {
	context.Context
	c       *h1Conn
	origDst any // the connection's original destination (WithOriginalDst), or nil
}

// Value answers OriginalDst, looked up for every request, from the
// connection rather than by walking the context chain.
func (x *connCtx) Value(key any) any {
	if _, ok := key.(origDstKey); ok {
		return x.origDst
	}
	return x.Context.Value(key)
}

var _ cluster.CancelHook = (*connCtx)(nil)

// AfterCancel registers f to run when the connection's context is
// cancelled; false when another function is registered.
func (x *connCtx) AfterCancel(f func()) (uint64, bool) {
	c := x.c
	c.hookMu.Lock()
	if x.Err() != nil {
		c.hookMu.Unlock()
		f()
		return 0, true
	}
	if c.onCancel != nil {
		c.hookMu.Unlock()
		return 0, false
	}
	c.hookID++
	c.onCancel = f
	id := c.hookID
	c.hookMu.Unlock()
	return id, true
}

// StopAfterCancel unregisters registration id; false when its function
// has been taken to run (or id is not registered).
func (x *connCtx) StopAfterCancel(id uint64) bool {
	c := x.c
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	if c.onCancel == nil || c.hookID != id {
		return false
	}
	c.onCancel = nil
	return true
}

// cancelConn cancels the connection's context and runs the registered
// function.
func (c *h1Conn) cancelConn() {
	c.cancel()
	c.hookMu.Lock()
	f := c.onCancel
	c.onCancel = nil
	c.hookMu.Unlock()
	if f != nil {
		f()
	}
}

// connReader is the bufio source: it returns the byte a hang-up watch
// read (a pipelined request's first byte) before reading on.
type connReader struct {
	c       *h1Conn
	hasByte bool
	b       [1]byte
}

func (cr *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if cr.hasByte {
		p[0] = cr.b[0]
		cr.hasByte = false
		return 1, nil
	}
	return cr.c.src.Read(p)
}

func (c *h1Conn) serve() {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler { //nolint:errorlint // sentinel panic value, as net/http
			buf := make([]byte, 16<<10)
			buf = buf[:runtime.Stack(buf, false)]
			c.s.logDebug("http: panic serving", "remote", c.remoteAddr, "panic", v, "stack", string(buf))
		}
		c.close()
	}()
	if tc, ok := c.rwc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.tlsState = &st
	}
	c.br, _ = h1ReaderPool.Get().(*bufio.Reader)
	if c.br == nil {
		c.br = bufio.NewReaderSize(&c.cr, 4096)
	} else {
		c.br.Reset(&c.cr)
	}
	c.bw, _ = h1WriterPool.Get().(*bufio.Writer)
	if c.bw == nil {
		c.bw = bufio.NewWriterSize(c.rwc, 4096)
	} else {
		c.bw.Reset(c.rwc)
	}
	c.base = (&http.Request{}).WithContext(c.ctx)
	c.resp.c = c
	c.resp.header = make(http.Header, 8)
	for {
		if !c.serveOne() {
			return
		}
	}
}

// close tears the connection down (unless hijacked) and recycles buffers.
func (c *h1Conn) close() {
	c.cancelConn()
	c.s.forget(c)
	c.mu.Lock()
	hijacked := c.hijacked
	c.disarmLocked()
	c.mu.Unlock()
	if hijacked {
		return
	}
	c.state.Store(connClosed)
	if c.bw != nil {
		_ = c.bw.Flush()
	}
	_ = c.rwc.Close()
	c.resp.runAfter() // the handler panicked before its response was finished
	if c.br != nil {
		c.br.Reset(nil)
		h1ReaderPool.Put(c.br)
		c.bw.Reset(nil)
		h1WriterPool.Put(c.bw)
		c.br, c.bw = nil, nil
	}
}

const h2Preface = "PRI * HTTP/2.0\r\n"

// serveOne reads and serves one request; false closes the connection.
func (c *h1Conn) serveOne() bool {
	s := c.s
	if s.shutdown.Load() {
		return false
	}
	c.state.Store(connIdle)
	if s.IdleTimeout > 0 {
		_ = c.rwc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
	}
	first, err := c.br.Peek(1)
	if err != nil {
		return false
	}
	if c.d != nil {
		// The read that found this request sent the previous response,
		// unless the request was already buffered (pipelined): send it
		// before this one is served.
		if c.d.SendPending() != nil {
			return false
		}
	}
	isP := first[0] == 'P'
	if !c.state.CompareAndSwap(connIdle, connActive) {
		return false // closed by Shutdown
	}
	// Bound the head read, unless the whole head is already buffered.
	buffered, _ := c.br.Peek(c.br.Buffered())
	deadline := s.IdleTimeout > 0
	if len(buffered) < len(h2Preface) || !bytes.Contains(buffered, []byte("\r\n\r\n")) {
		_ = c.rwc.SetReadDeadline(time.Now().Add(s.readHeaderTimeout()))
		deadline = true
	}
	if isP {
		if b, err := c.br.Peek(len(h2Preface)); err == nil && string(b) == h2Preface {
			c.handoffH2()
			return false
		}
	}
	max := s.MaxHeaderBytes
	if max <= 0 {
		max = 1 << 20
	}
	err = readHeadBytes(c.br, &c.head, max)
	if deadline {
		_ = c.rwc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		c.reject(err)
		return false
	}
	var hd h1Head
	h := &hd
	if err := parseHead(&c.hl, c.hl.Split(c.head), h, &c.hs); err != nil {
		c.reject(err)
		return false
	}
	if cap(c.head) > 64<<10 { // do not keep a huge head buffer
		c.head = nil
	}
	u, err := requestURL(h.method, h.target, &c.url)
	if err != nil {
		c.reject(err)
		return false
	}
	// The connection's Request, header map, value array and URL are reused
	// for each request: the previous request is over (its response
	// finished, its body closed), and the handler copies what outlives it
	// (a mirror copies the request, header and URL). *base carries the
	// connection's context.
	r := &c.req
	*r = *c.base
	r.Method = h.method
	r.URL = u
	r.RequestURI = h.target
	r.Proto = "HTTP/1.1"
	if h.minor == 0 {
		r.Proto = "HTTP/1.0"
	}
	r.ProtoMajor, r.ProtoMinor = 1, h.minor
	r.Header = h.header
	r.Host = u.Host
	if r.Host == "" {
		r.Host = h.host
	}
	r.ContentLength = h.contentLength
	r.Close = !h.keepAlive
	r.RemoteAddr = c.remoteAddr
	r.TLS = c.tlsState
	var body *h1Body
	if h.chunked {
		r.TransferEncoding = []string{"chunked"}
		r.Trailer = h.trailer
	}
	if h.chunked || h.contentLength > 0 {
		body = &h1Body{c: c, left: h.contentLength, needContinue: h.expectContinue}
		if h.chunked {
			body.chunked = &chunkedReader{br: c.br, trailer: &r.Trailer}
		}
		r.Body = body
	} else {
		r.Body = http.NoBody
	}
	w := &c.resp
	w.reset(r, h)

	c.mu.Lock()
	c.inHandler, c.bodyDone, c.pipelined, c.bgErr = true, body == nil, false, nil
	if body == nil {
		c.pipelined = c.br.Buffered() > 0
	}
	if body == nil {
		c.armHangupWatchLocked()
	}
	c.mu.Unlock()
	c.s.scanHangups()
	c.s.Handler.ServeHTTP(w, r)
	if c.stopHangupWatch() {
		w.runAfter()
		return false // hijacked
	}
	if body != nil {
		body.mu.Lock()
		body.closed = true
		body.mu.Unlock()
	}
	keep := w.finish()
	if w.after != nil {
		if keep && c.d != nil && c.bgErr == nil {
			// Sent by the next read (or by whatever sends or drops the
			// deferred bytes first: a pipelined request, a linger, close).
			c.d.AfterSend(w.after)
			w.after = nil
		} else {
			w.runAfter() // flushed already
		}
	}
	if !keep || c.bgErr != nil {
		return false
	}
	if body != nil && !body.eof {
		if body.needContinue || body.err != nil { // the client may not send it
			return false
		}
		if !body.drain() {
			// The client may still be sending the body: a close now,
			// with its bytes unread, would reset the connection and
			// could cost it the answer it has not read yet.
			if body.err == nil {
				c.lingerClose(-1)
			}
			return false
		}
	}
	return true
}

// lingerClose sends what is buffered, half-closes the connection and
// discards what the client still sends (up to half a second, and up to
// limit bytes unless limit is negative), so that the close that follows
// does not reset a connection with unread input, which can make the
// client lose the answer (as net/http and Envoy's delayed close).
func (c *h1Conn) lingerClose(limit int64) {
	if c.bw.Flush() != nil {
		return
	}
	if c.d != nil && c.d.SendPending() != nil { // a deferred flush's bytes
		return
	}
	if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.rwc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		src := c.src
		if limit >= 0 {
			src = io.LimitReader(src, limit)
		}
		_, _ = io.Copy(io.Discard, src)
	}
}

// reject answers a request the parser refused and closes.
func (c *h1Conn) reject(err error) {
	var he *h1Error
	if !errors.As(err, &he) {
		if !errors.Is(err, io.EOF) && !isTimeout(err) && !errors.Is(err, net.ErrClosed) {
			c.s.logDebug("read request", "remote", c.remoteAddr, "err", err)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) { // EOF, timeouts: no answer, as net/http
			return
		}
		he = &h1Error{status: http.StatusBadRequest, msg: "incomplete request"}
	}
	c.s.logDebug("bad request", "remote", c.remoteAddr, "status", he.status, "err", he.msg)
	text := strconv.Itoa(he.status) + " " + http.StatusText(he.status)
	fmt.Fprintf(c.bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		text, len(text), text)
	c.lingerClose(256 << 10)
}

// handoffH2 passes the connection, its buffered bytes first, to the
// net/http server that speaks h2c.
func (c *h1Conn) handoffH2() {
	c.mu.Lock()
	c.hijacked = true
	c.mu.Unlock()
	br := c.br
	c.br = nil // not recycled: it holds the preface
	h1WriterPool.Put(c.bw)
	c.bw = nil
	l := c.s.h2Server()
	var nc net.Conn = &peekedConn{Conn: c.rwc, r: br}
	select {
	case l.conns <- nc:
	case <-l.done:
		_ = c.rwc.Close()
	}
}

// armHangupWatchLocked has the watchdog start (after hangupCheckDelay)
// a read that notices the client closing while the handler still runs;
// the request body must have been read to its end. c.mu is held.
func (c *h1Conn) armHangupWatchLocked() {
	if c.wdSince.Load() != 0 {
		return
	}
	wd := &c.s.wd
	wd.once.Do(func() {
		wd.epoch = time.Now()
		wd.wake = make(chan struct{}, 1)
		wd.stop = make(chan struct{})
		go c.s.runWatchdog()
	})
	c.wdSince.Store(int64(time.Since(wd.epoch)) + 1)
	wd.active.Add(1)
	if wd.parked.Load() && wd.parked.CompareAndSwap(true, false) {
		select {
		case wd.wake <- struct{}{}:
		default:
		}
	}
}

// disarmLocked takes the handler off the watchdog. c.mu is held.
func (c *h1Conn) disarmLocked() {
	if c.wdSince.Load() != 0 {
		c.wdSince.Store(0)
		c.s.wd.active.Add(-1)
	}
}

// scanHangups starts the watch of the handlers armed hangupCheckDelay
// ago or earlier, unless another scan ran less than hangupCheckDelay
// ago or no handler is armed. Arriving requests call it, so under
// traffic the watchdog goroutine rarely has anything left to do.
func (s *Server) scanHangups() {
	wd := &s.wd
	if wd.active.Load() == 0 { // none armed; else epoch is set (before the first arming)
		return
	}
	now := int64(time.Since(wd.epoch))
	last := wd.lastScan.Load()
	if now-last < int64(hangupCheckDelay) || !wd.lastScan.CompareAndSwap(last, now) {
		return
	}
	var due []*h1Conn
	s.mu.Lock()
	for c := range s.conns {
		// wdSince is the armed time plus one.
		if st := c.wdSince.Load(); st > 0 && now-(st-1) >= int64(hangupCheckDelay) && c.wdSince.CompareAndSwap(st, watchMarked) {
			due = append(due, c)
		}
	}
	s.mu.Unlock()
	for _, c := range due {
		go c.watchHangup()
	}
}

// runWatchdog is the hang-up watchdog's goroutine. It sleeps after
// watchdogIdleTicks ticks without an armed handler.
func (s *Server) runWatchdog() {
	wd := &s.wd
	t := time.NewTimer(hangupWatchdogTick)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-t.C:
		case <-wd.stop:
			return
		}
		if wd.active.Load() == 0 {
			if idle++; idle >= watchdogIdleTicks {
				idle = 0
				wd.parked.Store(true)
				if wd.active.Load() == 0 { // else that handler may have missed parked
					select {
					case <-wd.wake:
					case <-wd.stop:
						return
					}
				} else if !wd.parked.CompareAndSwap(true, false) {
					<-wd.wake // the handler saw parked and woke us: take it
				}
			}
			t.Reset(hangupWatchdogTick)
			continue
		}
		idle = 0
		s.scanHangups()
		t.Reset(hangupWatchdogTick)
	}
}

// watchdogIdleTicks is how many ticks without an armed handler the
// watchdog waits before it sleeps.
const watchdogIdleTicks = 10

func (c *h1Conn) watchHangup() {
	c.mu.Lock()
	if !c.inHandler || !c.bodyDone || c.pipelined || c.bgRunning || c.hijacked || c.cr.hasByte {
		c.mu.Unlock()
		return
	}
	c.bgRunning = true
	done := make(chan struct{})
	c.bgDone = done
	c.mu.Unlock()
	n, err := c.src.Read(c.cr.b[:])
	c.mu.Lock()
	if n == 1 {
		c.cr.hasByte = true
	}
	if err != nil && !isTimeout(err) {
		c.bgErr = err
		c.cancelConn() // the client is gone: cancel the request
	}
	c.bgRunning = false
	close(done)
	c.mu.Unlock()
}

// stopBackgroundRead interrupts the running hang-up watch's read and waits
// until it has returned (done closed).
func (c *h1Conn) stopBackgroundRead(done <-chan struct{}) {
	_ = c.rwc.SetReadDeadline(aLongTimeAgo)
	<-done
	_ = c.rwc.SetReadDeadline(time.Time{})
}

// stopHangupWatch ends the watch after the handler; true if hijacked.
func (c *h1Conn) stopHangupWatch() bool {
	c.mu.Lock()
	c.inHandler = false
	running, done, hijacked := c.bgRunning, c.bgDone, c.hijacked
	c.disarmLocked()
	c.mu.Unlock()
	if running {
		c.stopBackgroundRead(done)
	}
	return hijacked
}

// hijack takes the connection from the server.
func (c *h1Conn) hijack() (net.Conn, *bufio.ReadWriter, error) {
	c.mu.Lock()
	if c.hijacked {
		c.mu.Unlock()
		return nil, nil, http.ErrHijacked
	}
	c.hijacked = true
	running, done := c.bgRunning, c.bgDone
	c.disarmLocked()
	c.mu.Unlock()
	if running {
		c.stopBackgroundRead(done)
	}
	c.s.forget(c)
	c.state.Store(connClosed)
	return c.rwc, bufio.NewReadWriter(c.br, c.bw), nil
}

// h1Body is a request body: Content-Length or chunked. Reads are
// serialized with the server's close after the handler (a transport may
// still read it from another goroutine).
type h1Body struct {
	mu           sync.Mutex
	c            *h1Conn
	left         int64 // Content-Length bytes left
	chunked      *chunkedReader
	needContinue bool
	closed, eof  bool
	err          error
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *h1Body) readLocked(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.needContinue {
		b.needContinue = false
		b.c.writeContinue()
	}
	var n int
	var err error
	if b.chunked != nil {
		n, err = b.chunked.Read(p)
	} else {
		if int64(len(p)) > b.left {
			p = p[:b.left]
		}
		n, err = b.c.br.Read(p)
		b.left -= int64(n)
		if b.left == 0 {
			err = io.EOF
		} else if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	}
	if errors.Is(err, io.EOF) {
		b.eof = true
		c := b.c
		c.mu.Lock()
		c.bodyDone = true
		c.pipelined = c.br.Buffered() > 0 || c.cr.hasByte
		c.armHangupWatchLocked()
		c.mu.Unlock()
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *h1Body) Close() error { return nil } // the server finishes the body after the handler

// Ready is how many body bytes reads can return without waiting for the
// client: what is left of a Content-Length body that is already
// buffered. 0 for chunked bodies, and before a 100 Continue was sent.
func (b *h1Body) Ready() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.chunked != nil || b.closed || b.eof || b.err != nil || b.needContinue {
		return 0
	}
	return min(int64(b.c.br.Buffered()), b.left)
}

// drain discards what the handler left unread (up to
// maxPostHandlerDrain); true when the body ended there.
func (b *h1Body) drain() bool {
	var buf [4096]byte
	read := 0
	for read <= maxPostHandlerDrain {
		n, err := b.readLocked(buf[:])
		read += n
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

func (c *h1Conn) writeContinue() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.resp.committed || c.resp.hijacked {
		return
	}
	_, _ = c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	_ = c.bw.Flush()
}

// h1Response is the connection's ResponseWriter, reused per request.
type h1Response struct {
	c           *h1Conn
	req         *http.Request
	header      http.Header
	status      int
	wroteHeader bool
	committed   bool // status line and header written to bw
	hijacked    bool
	chunked     bool
	bodyAllowed bool
	head        bool
	close       bool  // close the connection after this response
	clen        int64 // declared Content-Length, -1 none
	written     int64
	http10      bool
	keepAlive10 bool
	buf         []byte // body held back before committing, to set Content-Length
	err         error
	after       func() // AfterSend: run once the response is sent
}

var (
	_ http.ResponseWriter = (*h1Response)(nil)
	_ http.Flusher        = (*h1Response)(nil)
	_ http.Hijacker       = (*h1Response)(nil)
)

const holdBack = 2048 // body bytes held to compute Content-Length (net/http's chunking buffer size)

func (w *h1Response) reset(r *http.Request, h *h1Head) {
	clear(w.header)
	w.req = r
	w.status, w.wroteHeader, w.committed, w.hijacked, w.chunked = 0, false, false, false, false
	w.bodyAllowed, w.head, w.close, w.clen, w.written, w.err = true, r.Method == http.MethodHead, !h.keepAlive, -1, 0, nil
	w.http10, w.keepAlive10 = h.minor == 0, h.minor == 0 && h.keepAlive
	w.buf = w.buf[:0]
}

func (w *h1Response) Header() http.Header { return w.header }

// AfterSend has fn run once the response has been sent, instead of
// before: a kept-alive connection's response goes out with the next
// read (sockio.DeferFlush), and fn runs right after that send, before
// the read waits for the next request. It is for a handler's work that
// the client need not wait for (telemetry). fn runs exactly once, also
// when the connection closes instead; the next request on the
// connection is read only after it has run. It returns false, and does
// not keep fn, once the connection is hijacked.
func (w *h1Response) AfterSend(fn func()) bool {
	if w.hijacked {
		return false
	}
	if prev := w.after; prev != nil {
		w.after = func() { prev(); fn() }
	} else {
		w.after = fn
	}
	return true
}

// runAfter runs the AfterSend function now, if there is one.
func (w *h1Response) runAfter() {
	if fn := w.after; fn != nil {
		w.after = nil
		fn()
	}
}

func (w *h1Response) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Interim response: written now, the header map stays for the final one.
		c := w.c
		c.wmu.Lock()
		_, _ = c.bw.WriteString(statusLine(code))
		writeHeaderFields(c.bw, w.header)
		_, _ = c.bw.WriteString("\r\n")
		err := c.bw.Flush()
		c.wmu.Unlock()
		if err != nil {
			w.err = err
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	w.bodyAllowed = code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
	if cl := w.header["Content-Length"]; len(cl) > 0 && w.bodyAllowed {
		if n, ok := httpwire.ParseContentLength(httpwire.TrimOWS(cl[0])); ok {
			w.clen = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

func (w *h1Response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.bodyAllowed {
		return 0, http.ErrBodyNotAllowed
	}
	if w.head {
		return len(p), nil
	}
	if !w.committed {
		if w.clen < 0 && len(w.buf)+len(p) <= holdBack {
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		w.commit(false)
		if w.err != nil {
			return 0, w.err
		}
	}
	return w.writeBody(p)
}

func (w *h1Response) writeBody(p []byte) (int, error) {
	bw := w.c.bw
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		p = p[:w.clen-w.written]
		w.err = http.ErrContentLength
	}
	if len(p) == 0 {
		if w.err != nil {
			return 0, w.err
		}
		return 0, nil
	}
	if w.chunked {
		var hx [20]byte
		b := strconv.AppendUint(hx[:0], uint64(len(p)), 16)
		b = append(b, '\r', '\n')
		if _, err := bw.Write(b); err != nil {
			w.err = err
			return 0, err
		}
	}
	n, err := bw.Write(p)
	w.written += int64(n)
	if err == nil && w.chunked {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.err = err
		return n, err
	}
	return n, w.err
}

// commit writes the status line and header fields; done means the
// handler has returned (the held-back body is then the whole body).
func (w *h1Response) commit(done bool) {
	if w.committed {
		return
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w.committed = true
	hdr := w.header
	delete(hdr, "Transfer-Encoding") // framing is the server's
	trailers := len(hdr["Trailer"]) > 0
	if !trailers {
		for k := range hdr {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				trailers = true
				break
			}
		}
	}
	if conn := hdr["Connection"]; len(conn) > 0 && httpwire.HasToken(strings.Join(conn, ","), "close") {
		w.close = true
	}
	var extra [3]string // framing and connection fields
	n := 0
	switch {
	case !w.bodyAllowed:
		delete(hdr, "Content-Length")
	case w.clen >= 0:
	case done && !trailers && !(w.head && len(w.buf) == 0):
		w.clen = int64(len(w.buf))
		extra[n] = "Content-Length: " + strconv.Itoa(len(w.buf)) + "\r\n"
		n++
	case w.head:
	case !w.http10:
		w.chunked = true
		extra[n] = "Transfer-Encoding: chunked\r\n"
		n++
	default: // HTTP/1.0 without a length: the close ends the body
		w.close = true
	}
	if w.status == http.StatusSwitchingProtocols {
		w.close = false
	}
	if w.close {
		if !w.http10 && len(hdr["Connection"]) == 0 {
			extra[n] = "Connection: close\r\n"
			n++
		}
	} else if w.keepAlive10 && len(hdr["Connection"]) == 0 {
		extra[n] = "Connection: keep-alive\r\n"
		n++
	}
	bw := c.bw
	_, _ = bw.WriteString(statusLine(w.status))
	if _, ok := hdr["Date"]; !ok {
		_, _ = bw.Write(dateField())
	}
	writeHeaderFields(bw, hdr)
	for _, e := range extra[:n] {
		_, _ = bw.WriteString(e)
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		w.err = err
		return
	}
	if len(w.buf) > 0 {
		b := w.buf
		w.buf = w.buf[:0]
		if _, err := w.writeBody(b); err != nil {
			return
		}
	}
}

// writeHeaderFields writes hdr, skipping http.TrailerPrefix keys; field
// names that are not tokens are dropped and CR/LF in values become
// spaces (no response splitting).
func writeHeaderFields(bw *bufio.Writer, hdr http.Header) {
	for k, vs := range hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) || !isToken(k) {
			continue
		}
		for _, v := range vs {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			_, _ = bw.WriteString(v)
			_, _ = bw.WriteString("\r\n")
		}
	}
}

// finish completes the response after the handler; false closes the
// connection.
func (w *h1Response) finish() bool {
	if w.hijacked {
		return false
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(true)
	bw := w.c.bw
	if w.chunked && w.err == nil {
		_, _ = bw.WriteString("0\r\n")
		for _, k := range w.header["Trailer"] {
			for _, f := range strings.Split(k, ",") {
				f = http.CanonicalHeaderKey(httpwire.TrimOWS(f))
				for _, v := range w.header[f] {
					if isToken(f) {
						fmt.Fprintf(bw, "%s: %s\r\n", f, strings.NewReplacer("\r", " ", "\n", " ").Replace(v))
					}
				}
			}
		}
		for k, vs := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && isToken(name) {
				for _, v := range vs {
					fmt.Fprintf(bw, "%s: %s\r\n", name, strings.NewReplacer("\r", " ", "\n", " ").Replace(v))
				}
			}
		}
		_, _ = bw.WriteString("\r\n")
	}
	keep := !w.close && (w.clen < 0 || w.written >= w.clen || w.head || !w.bodyAllowed)
	var err error
	if keep && w.err == nil && w.c.d != nil {
		err = w.c.d.DeferFlush(bw) // sent by the next request's first read
	} else {
		err = bw.Flush()
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	return keep && w.err == nil
}

// Flush sends what is buffered (committing the header).
func (w *h1Response) Flush() { _ = w.FlushError() }

// FlushError is Flush reporting the write error (http.ResponseController).
func (w *h1Response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.commit(false)
	if w.err != nil {
		return w.err
	}
	if err := w.c.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

// Hijack hands the connection to the handler (WebSocket, CONNECT).
func (w *h1Response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		if err := w.c.bw.Flush(); err != nil {
			return nil, nil, err
		}
	}
	conn, rw, err := w.c.hijack()
	if err == nil {
		w.hijacked = true
	}
	return conn, rw, err
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *h1Response) SetReadDeadline(t time.Time) error  { return w.c.rwc.SetReadDeadline(t) }
func (w *h1Response) SetWriteDeadline(t time.Time) error { return w.c.rwc.SetWriteDeadline(t) }

// EnableFullDuplex serves http.ResponseController: this server always
// lets handlers read the request body while writing the response.
func (w *h1Response) EnableFullDuplex() error { return nil }

var statusLines = func() (t [600]string) {
	for code := 100; code < 600; code++ {
		if txt := http.StatusText(code); txt != "" {
			t[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + txt + "\r\n"
		}
	}
	return t
}()

func statusLine(code int) string {
	if code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " status code " + strconv.Itoa(code) + "\r\n"
}

type dateCache struct {
	sec  int64
	line []byte
}

var cachedDate atomic.Pointer[dateCache]

// dateField is "Date: <IMF-fixdate>\r\n", formatted once a second.
func dateField() []byte {
	now := time.Now()
	if d := cachedDate.Load(); d != nil && d.sec == now.Unix() {
		return d.line
	}
	b := make([]byte, 0, 40)
	b = append(b, "Date: "...)
	b = now.UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	cachedDate.Store(&dateCache{sec: now.Unix(), line: b})
	return b
}
