package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/sockio"
)

// H1Pool is a cluster's own HTTP/1.1 upstream connection pool. Unlike
// net/http.Transport, which runs a reader and a writer goroutine per
// connection and hands each response to the caller through channels, the
// calling (handler) goroutine writes the request and reads the response
// itself, so a proxied request costs no goroutine switches. Idle
// connections are kept per host address for keep-alive reuse.
//
// It serves plain HTTP/1.1 requests; protocol upgrades (WebSocket),
// CONNECT, HTTP/2 and clusters with a connection limit keep using
// net/http's Transport (Cluster.UsesH1Pool says which).
//
// A request body is written by a goroutine of its own (sendBody) while the
// caller reads the answer: a server may answer while the body still
// arrives (an echo, an early 413), and a pool that wrote the whole body
// first would deadlock with it once the body outgrew the socket buffers.
// A connection whose answer came before its request body was all sent is
// not reused.
type H1Pool struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int           // idle connections kept per address
	idleTimeout time.Duration // idle connections older than this are closed
	maxRequests uint32        // requests per connection; 0 unlimited
	now         func() time.Time

	mu     sync.Mutex
	idle   map[string][]*h1Conn
	closed bool
}

type h1Conn struct {
	net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	uses   uint32
	idleAt time.Time
	head   []byte // scratch for response heads
	intr   func() // interrupts a blocked exchange (context.AfterFunc)
	// d sends each request with the read of its response (one read(2)
	// fewer per exchange, see sockio.DeferFlush); nil when the socket
	// is not a sockio.Conn.
	d sockio.Deferrer
	// ra is the response, its header map and value array, body framing
	// and pool body wrapper, reused by each exchange: the caller is done
	// with the previous response once its body was closed, which is
	// before the connection can be taken for the next one.
	ra respAlloc
	// sending is the request body's state (bodySent, bodySending,
	// bodyFailed); while bodySending, sendBody uses bw.
	sending atomic.Int32
	src     bodySource // sendBody's reader
}

// CancelHook is implemented by a context that can run one registered
// function when it is cancelled without context.AfterFunc's allocations
// (package listener's downstream connection context). AfterCancel
// registers f (false: not registered, the caller falls back to
// context.AfterFunc; f runs at once if the context is already done);
// StopAfterCancel(id) unregisters it, false if f has already been taken
// to run. Both are safe for concurrent use.
type CancelHook interface {
	AfterCancel(f func()) (id uint64, ok bool)
	StopAfterCancel(id uint64) bool
}

// cancelWatch is an exchange's registration on its context's
// cancellation: a CancelHook slot, or context.AfterFunc.
type cancelWatch struct {
	hook CancelHook
	id   uint64
	stop func() bool
}

func watchCancel(ctx context.Context, f func()) cancelWatch {
	if h, ok := ctx.(CancelHook); ok {
		if id, ok := h.AfterCancel(f); ok {
			return cancelWatch{hook: h, id: id}
		}
	}
	return cancelWatch{stop: context.AfterFunc(ctx, f)}
}

// Stop unregisters; false when the function has run or is running.
func (w *cancelWatch) Stop() bool {
	if w.hook != nil {
		return w.hook.StopAfterCancel(w.id)
	}
	return w.stop()
}

// interruptFunc returns the func that makes the connection's blocked
// reads and writes fail at once, made once per connection.
func (c *h1Conn) interruptFunc() func() {
	if c.intr == nil {
		c.intr = func() { _ = c.SetDeadline(aLongTimeAgo) }
	}
	return c.intr
}

// NewH1Pool returns a pool dialing with dial (nil: net.Dialer).
func NewH1Pool(dial func(ctx context.Context, network, addr string) (net.Conn, error), maxRequestsPerConn uint32) *H1Pool {
	if dial == nil {
		dial = RawDialer(&net.Dialer{})
	}
	return &H1Pool{dial: dial, maxIdle: 256, idleTimeout: 90 * time.Second, maxRequests: maxRequestsPerConn,
		now: time.Now, idle: map[string][]*h1Conn{}}
}

// CloseIdleConnections closes every idle connection.
func (p *H1Pool) CloseIdleConnections() {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string][]*h1Conn{}
	p.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			_ = c.Close()
		}
	}
}

// Close closes idle connections and stops pooling returned ones.
func (p *H1Pool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.CloseIdleConnections()
}

// IdleCount is the number of idle connections to addr (for tests).
func (p *H1Pool) IdleCount(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[addr])
}

func (p *H1Pool) getIdle(addr string) *h1Conn {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.idle[addr]
	for len(cs) > 0 {
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		cs = cs[:len(cs)-1]
		p.idle[addr] = cs
		if now.Sub(c.idleAt) > p.idleTimeout {
			go c.Close()
			continue
		}
		// A connection idle for a while may have been closed by the server
		// (or have sent something unsolicited): peek without blocking.
		if now.Sub(c.idleAt) > 50*time.Millisecond && !c.alive() {
			go c.Close()
			continue
		}
		return c
	}
	return nil
}

// alive peeks at the socket without blocking: an idle HTTP/1.1 connection
// must have nothing to read (EOF means the server closed it; data would be
// an unsolicited response).
func (c *h1Conn) alive() bool {
	if q, ok := c.Conn.(interface{ Quiet() bool }); ok { // sockio.Conn: no runtime syscall path
		return q.Quiet()
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return true // e.g. TLS: rely on the replay of idempotent failures
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	ok = true
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if n > 0 || err == nil { // data, or n == 0: EOF
			ok = false
		} else if !errors.Is(err, syscall.EAGAIN) {
			ok = false
		}
		return true
	})
	return ok
}

func (p *H1Pool) put(addr string, c *h1Conn) {
	if c.br.Buffered() > 0 { // unsolicited bytes after the response
		_ = c.Close()
		return
	}
	c.idleAt = p.now()
	p.mu.Lock()
	if p.closed || len(p.idle[addr]) >= p.maxIdle {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], c)
	p.mu.Unlock()
}

var bufioReaders, bufioWriters sync.Pool

func (p *H1Pool) dialConn(ctx context.Context, addr string) (*h1Conn, error) {
	nc, err := p.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	br, _ := bufioReaders.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	} else {
		br.Reset(nc)
	}
	bw, _ := bufioWriters.Get().(*bufio.Writer)
	if bw == nil {
		bw = bufio.NewWriterSize(nc, 4096)
	} else {
		bw.Reset(nc)
	}
	return &h1Conn{Conn: nc, br: br, bw: bw, d: sockio.DeferrerOf(nc)}, nil
}

// Close closes the connection and recycles its buffers.
func (c *h1Conn) Close() error {
	err := c.Conn.Close()
	if c.br != nil {
		c.br.Reset(nil)
		bufioReaders.Put(c.br)
		if c.sending.Load() != bodySending { // else sendBody still has it
			c.bw.Reset(nil)
			bufioWriters.Put(c.bw)
		}
		c.br, c.bw = nil, nil
	}
	return err
}

// ErrDial wraps a failure to open an upstream connection.
type ErrDial struct{ Err error }

func (e *ErrDial) Error() string { return "dial upstream: " + e.Err.Error() }
func (e *ErrDial) Unwrap() error { return e.Err }

var aLongTimeAgo = time.Unix(1, 0)

// RoundTrip sends req (client form: Host, URL.Path/RawQuery, Header,
// Body/ContentLength) to addr on a pooled or new connection and returns the
// response; its Body must be closed, which returns the connection to the
// pool when the response was read to its end and both sides keep it alive.
// gotConn runs once a connection is in hand, with it. Cancelling ctx (req's
// own context is not used) interrupts the exchange, including reads of the
// body. The response, its Header and Body are the connection's and are
// reused once Body is closed: a caller copies what it keeps. A dial failure is
// an *ErrDial. A request without a body (or replay, a body that can be
// sent again) that fails on a reused connection before any response byte
// is retried once on a new connection, as the server may have closed it.
func (p *H1Pool) RoundTrip(ctx context.Context, req *http.Request, addr string, replay func() (io.ReadCloser, error), gotConn func(net.Conn)) (*http.Response, error) {
	c := p.getIdle(addr)
	reused := c != nil
	if c == nil {
		var err error
		if c, err = p.dialConn(ctx, addr); err != nil {
			return nil, &ErrDial{Err: err}
		}
	}
	if gotConn != nil {
		gotConn(c.Conn)
	}
	for {
		resp, err, fresh := p.exchange(ctx, c, req, addr)
		if err == nil {
			return resp, nil
		}
		if !reused || !fresh || ctx.Err() != nil {
			return nil, err
		}
		// The server closed a kept-alive connection before answering.
		if req.Body != nil && req.Body != http.NoBody {
			if replay == nil {
				return nil, err
			}
			b, rerr := replay()
			if rerr != nil {
				return nil, err
			}
			req.Body = b
		}
		reused = false
		if c, err = p.dialConn(ctx, addr); err != nil {
			return nil, &ErrDial{Err: err}
		}
	}
}

// exchange writes req and reads its response on c. fresh reports that the
// failure happened before any response byte arrived.
func (p *H1Pool) exchange(ctx context.Context, c *h1Conn, req *http.Request, addr string) (*http.Response, error, bool) {
	watch := watchCancel(ctx, c.interruptFunc())
	c.uses++
	if p.maxRequests == 1 || (p.maxRequests > 0 && c.uses >= p.maxRequests) {
		req.Close = true // last request on this connection: tell the server
	}
	chunked, send, werr := writeHead(c.bw, req)
	switch {
	case werr != nil:
		closeBody(req)
	case send && !chunked && req.ContentLength <= inlineBody && bodyReady(req.Body) >= req.ContentLength:
		// A small body whose bytes are all at hand is written here: it
		// cannot block on the client, and an idle connection's socket
		// takes it whole whether the server reads or not.
		werr = writeBody(c.bw, req.Body, req.ContentLength, false)
		closeBody(req)
		if werr == nil {
			werr = c.flushRequest()
		}
	case send:
		// The body goes out from its own goroutine while this one reads
		// the answer, which may come before the body ends.
		c.sending.Store(bodySending)
		go c.sendBody(c.bw, req.Body, req.ContentLength, chunked)
	default:
		closeBody(req)
		werr = c.flushRequest()
	}
	if werr != nil {
		// The server may have answered early (e.g. 413) and closed; a
		// response that is already there still counts.
		if c.br.Buffered() == 0 {
			watch.Stop()
			_ = c.Close()
			return nil, fmt.Errorf("write request: %w", werr), true
		}
		req.Close = true
	}
	var resp *http.Response
	ra := &c.ra
	for {
		if _, err := c.br.Peek(1); err != nil {
			watch.Stop()
			_ = c.Close()
			return nil, fmt.Errorf("read response: %w", err), resp == nil
		}
		r, err := readResponseInto(c.br, req, &c.head, ra)
		if err != nil {
			watch.Stop()
			_ = c.Close()
			return nil, fmt.Errorf("read response: %w", err), false
		}
		resp = r
		if c.d != nil {
			// The read above sent the request; only an early answer
			// found in the buffer could have left it pending.
			if err := c.d.SendPending(); err != nil {
				req.Close = true
			}
		}
		// Skip interim 1xx (100 Continue, 103 Early Hints); 101 is final.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	keep := !resp.Close && !req.Close && werr == nil && resp.StatusCode != http.StatusSwitchingProtocols
	ra.hb = h1Body{rc: resp.Body, c: c, p: p, addr: addr, watch: watch, keep: keep}
	resp.Body = &ra.hb
	return resp, nil, false
}

// flushRequest sends the request written to bw: with the response's
// first read when the connection can defer it.
func (c *h1Conn) flushRequest() error {
	if c.d != nil && c.br.Buffered() == 0 {
		return c.d.DeferFlush(c.bw)
	}
	return c.bw.Flush()
}

// inlineBody is the largest request body exchange writes itself, when
// all of it is at hand (bodyReady).
const inlineBody = 8 << 10

// bodyReady is how many bytes of body can be read without waiting: a body
// that knows (Ready, as the proxy's downstream request bodies and its
// buffered copies do), else 0.
func bodyReady(body io.Reader) int64 {
	if r, ok := body.(interface{ Ready() int64 }); ok {
		return r.Ready()
	}
	return 0
}

// Request body states of a connection (h1Conn.sending).
const (
	bodySent    int32 = iota // no body, or all of it was sent
	bodySending              // sendBody runs: it has the connection's bufio.Writer
	bodyFailed               // sending it failed: the connection is not reused
)

// sendBody writes a request body (after its head, already in bw) and
// flushes it, then records the outcome in c.sending; after that it no
// longer touches the connection, so a bodySent connection may be reused
// while it closes body.
//
// When the body cannot be read to its end (the client went away or sent
// less than it announced), the exchange is interrupted: the upstream would
// wait for the rest. When only the upstream write fails, the server may
// have answered early and closed; the answer is still read.
func (c *h1Conn) sendBody(bw *bufio.Writer, body io.ReadCloser, n int64, chunked bool) {
	src := &c.src
	*src = bodySource{r: body}
	err := writeBody(bw, src, n, chunked)
	if err == nil {
		err = bw.Flush()
	}
	switch {
	case err == nil:
		c.sending.Store(bodySent)
	case src.err != nil || errors.Is(err, io.ErrUnexpectedEOF):
		c.sending.Store(bodyFailed)
		_ = c.SetDeadline(aLongTimeAgo)
	default:
		c.sending.Store(bodyFailed)
	}
	_ = body.Close()
}

// bodyWasSent reports whether the request body was all sent. A server
// that reads the whole body before it answers can have its answer read
// to the end before sendBody, finishing, records its outcome, so a body
// still sending gets a grace of bodyGrace. After that, the answer came
// early: the server has answered without reading the rest, and the
// connection is not reused.
func (c *h1Conn) bodyWasSent() bool {
	var deadline time.Time
	for {
		switch c.sending.Load() {
		case bodySent:
			return true
		case bodyFailed:
			return false
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(bodyGrace)
		} else if time.Now().After(deadline) {
			return false
		}
		time.Sleep(bodyGrace / 100)
	}
}

const bodyGrace = 20 * time.Millisecond

// bodySource reads a request body for sendBody and keeps its read error
// (other than io.EOF) apart from the connection's write errors.
type bodySource struct {
	r   io.Reader
	err error
}

func (s *bodySource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// h1Body returns the connection to the pool at a clean end of the body and
// closes it otherwise.
type h1Body struct {
	rc    io.ReadCloser
	c     *h1Conn
	p     *H1Pool
	addr  string
	watch cancelWatch
	keep  bool
	eof   bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("read on closed response body")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	interrupted := !b.watch.Stop() // the context fired: the deadline poisoned the conn
	// An answer that came before the request body was all sent ends the
	// connection's use too (Close interrupts the sending).
	if b.eof && b.keep && !interrupted && b.c.bodyWasSent() {
		b.p.put(b.addr, b.c)
		return nil
	}
	// Not read to its end: the rest would have to be drained; close instead.
	return b.c.Close()
}
