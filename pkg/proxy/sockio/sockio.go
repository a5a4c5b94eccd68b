//go:build linux

// Package sockio gives the proxy's TCP connections a Read and Write that
// issue the socket's non-blocking read(2)/write(2) as raw system calls
// while still waiting for readiness in the Go network poller.
//
// net.TCPConn's Read and Write go through the runtime's syscall entry and
// exit, which for every call checks whether the system monitor thread
// (sysmon) sleeps because the process was idle and, if so, wakes it; sysmon
// then polls every 20 µs until every P is idle again. A proxy at a moderate
// request rate is idle between requests, so each request paid a futex wake
// and a few sysmon sleeps (on a 2-core host ~17 % of the proxy's CPU). The
// socket is non-blocking (the poller owns it), so read and write return at
// once and need none of the bookkeeping that lets the runtime hand the P to
// another thread during a blocking call.
//
// Everything else (deadlines, CloseWrite, SetNoDelay, SyscallConn, the
// file descriptor) is the wrapped *net.TCPConn's; NetConn returns it.
//
// DeferFlush saves a request/response exchange one read(2): Go's poller
// forgets a socket's readiness when a read begins, so every blocking read
// first tries read(2), which after sending a request (or a response, on a
// kept-alive connection) finds nothing (EAGAIN) before it waits. A
// deferred flush keeps the bytes until the next Read, which sends them
// after the poller has forgotten the old readiness and then waits for the
// answer straight away: whatever arrives after the send wakes it.
package sockio

import (
	"bufio"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// Conn is a TCP connection whose Read and Write use raw system calls.
// Like net.Conn it is safe for concurrent use: one Read and one Write may
// run at a time (others wait), as with the poller's own locks.
type Conn struct {
	*net.TCPConn
	raw syscall.RawConn

	rmu   sync.Mutex // guards the read call state below
	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readf func(fd uintptr) bool
	// eagain counts reads that found nothing (tests).
	eagain int

	wmu    sync.Mutex // guards the write call state below
	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writef func(fd uintptr) bool

	// A deferred flush's bytes (guarded by wmu), sent by the next Read
	// (sendThenRead) or SendPending.
	deferring bool
	pend      *[]byte
	pending   atomic.Bool
	after     func() // run once the pending bytes are sent (AfterSend)
	sent      bool   // read call state: this Read sent the pending bytes
	sendErr   error  // read call state: sending them failed
	sendReadf func(fd uintptr) bool
}

// pendPool holds deferred-flush buffers: a connection holds one only
// between a deferred flush and the next Read.
var pendPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// Wrap returns c as a *Conn when it is a *net.TCPConn; any other
// connection (TLS, a test pipe, an already wrapped one) is returned as it is.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{TCPConn: tc, raw: raw}
	sc.readf = sc.read
	sc.writef = sc.write
	sc.sendReadf = sc.sendThenRead
	return sc
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

func (c *Conn) read(fd uintptr) bool {
	for {
		n, e := sysRead(fd, c.rbuf)
		switch e {
		case 0:
			c.rn, c.rerr = n, 0
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.eagain++
			return false // wait in the poller, then call again
		}
		c.rn, c.rerr = 0, e
		return true
	}
}

func (c *Conn) write(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		p := c.wbuf[c.wn:]
		n, e := sysWrite(fd, p)
		switch e {
		case 0:
			if n <= 0 {
				c.werr = syscall.EIO
				return true
			}
			c.wn += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until writable, then go on
		}
		c.werr = e
		return true
	}
	return true
}

// Read reads like net.TCPConn.Read: io.EOF at the end of the stream,
// *net.OpError otherwise (os.ErrDeadlineExceeded, net.ErrClosed and
// *os.SyscallError inside, as net's).
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf = p
	var err error
	if c.pending.Load() {
		c.sent, c.sendErr = false, nil
		err = c.raw.Read(c.sendReadf)
		if !c.sent && err != nil {
			// The read failed before the send (closed, deadline
			// passed): the bytes still go out if the socket takes
			// them now.
			c.dropPending()
		}
		if c.sendErr != nil {
			c.rbuf = nil
			return 0, c.sendErr
		}
	} else {
		err = c.raw.Read(c.readf)
	}
	c.rbuf = nil
	if err != nil {
		return 0, c.opError("read", err)
	}
	if c.rerr != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", c.rerr))
	}
	if c.rn == 0 {
		return 0, io.EOF
	}
	return c.rn, nil
}

// sendThenRead is the read callback of a Read with pending bytes: the
// first call (after the poller reset the socket's read readiness) sends
// them and waits; later calls read.
func (c *Conn) sendThenRead(fd uintptr) bool {
	if c.sent {
		return c.read(fd)
	}
	c.sent = true
	c.wmu.Lock()
	if c.pend == nil {
		c.wmu.Unlock()
		return c.read(fd) // sent meanwhile (SendPending from another goroutine)
	}
	after, err := c.sendLocked(int(fd))
	c.unlockThen(after) // before waiting: whatever arrives meanwhile wakes the wait
	if err != nil {
		c.sendErr = err
		return true
	}
	return false // wait for the answer: it can only come after the send
}

// sendLocked sends the pending bytes: raw write(2) calls on fd while the
// socket takes them, the poller-waiting write path for the rest (fd < 0:
// that path only). c.wmu is held. The bytes stop being pending first, so
// a Close during a send that waits does not wait for it (it interrupts
// it, as it does a Write). It returns the AfterSend function, which the
// caller runs once it has released c.wmu.
func (c *Conn) sendLocked(fd int) (after func(), err error) {
	bp, after := c.takePendingLocked()
	defer releasePend(bp)
	c.wbuf, c.wn, c.werr = *bp, 0, 0
	if fd >= 0 {
		c.write(uintptr(fd))
	}
	rest, werr := (*bp)[c.wn:], c.werr
	c.wbuf = nil
	if werr != 0 {
		return after, c.opError("write", os.NewSyscallError("write", werr))
	}
	if len(rest) > 0 {
		_, err = c.writeLocked(rest)
	}
	return after, err
}

// takePendingLocked ends the pending state and returns its buffer, for
// releasePend once sent, and the AfterSend function to run then. c.wmu
// is held and there are pending bytes.
func (c *Conn) takePendingLocked() (*[]byte, func()) {
	bp, after := c.pend, c.after
	c.pend, c.after = nil, nil
	c.pending.Store(false)
	return bp, after
}

// AfterSend runs fn once the bytes of the last deferred flush have been
// sent (or failed to be, or were dropped by Close), right after the send:
// in the Read that sends them, before it waits for the answer. So work
// that need not delay the peer (a request's telemetry) is done while
// waiting for the next message instead of before the answer goes out.
// With nothing pending fn runs at once. fn must not use c.
func (c *Conn) AfterSend(fn func()) {
	c.wmu.Lock()
	if c.pend == nil {
		c.wmu.Unlock()
		fn()
		return
	}
	if prev := c.after; prev != nil {
		c.after = func() { prev(); fn() }
	} else {
		c.after = fn
	}
	c.wmu.Unlock()
}

// unlockThen releases c.wmu, then runs after (the AfterSend function
// taken with the pending bytes), if any: outside the lock, since it may
// take long and must not use c.
func (c *Conn) unlockThen(after func()) {
	c.wmu.Unlock()
	if after != nil {
		after()
	}
}

func releasePend(bp *[]byte) {
	*bp = (*bp)[:0]
	pendPool.Put(bp)
}

// DeferFlush flushes w, which writes to c, without sending: the bytes
// wait in c and the next Read sends them before it waits for the answer
// (see the package comment). The caller must read next, or call
// SendPending; Write and Close send pending bytes first.
func (c *Conn) DeferFlush(w *bufio.Writer) error {
	c.wmu.Lock()
	c.deferring = true
	c.wmu.Unlock()
	err := w.Flush()
	c.wmu.Lock()
	c.deferring = false
	c.wmu.Unlock()
	return err
}

// SendPending sends the bytes a deferred flush left, if any.
func (c *Conn) SendPending() error {
	if !c.pending.Load() {
		return nil
	}
	c.wmu.Lock()
	if c.pend == nil {
		c.wmu.Unlock()
		return nil
	}
	after, err := c.sendLocked(-1)
	c.unlockThen(after)
	return err
}

// Close sends pending bytes (one attempt that does not wait) and closes.
func (c *Conn) Close() error {
	c.dropPending()
	return c.TCPConn.Close()
}

// dropPending makes one write attempt that does not wait for the
// pending bytes, then forgets them.
func (c *Conn) dropPending() {
	if !c.pending.Load() {
		return
	}
	c.wmu.Lock()
	if c.pend == nil {
		c.wmu.Unlock()
		return
	}
	bp, after := c.takePendingLocked()
	c.wbuf, c.wn, c.werr = *bp, 0, 0
	_ = c.raw.Control(func(fd uintptr) { c.write(fd) }) // stops at EAGAIN
	c.wbuf = nil
	releasePend(bp)
	c.unlockThen(after)
}

// Write writes all of p like net.TCPConn.Write, after any pending bytes;
// during DeferFlush it keeps p as pending bytes.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	if c.deferring {
		if c.pend == nil {
			c.pend = pendPool.Get().(*[]byte)
			c.pending.Store(true)
		}
		*c.pend = append(*c.pend, p...)
		c.wmu.Unlock()
		return len(p), nil
	}
	var after func()
	if c.pend != nil {
		var err error
		if after, err = c.sendLocked(-1); err != nil {
			c.unlockThen(after)
			return 0, err
		}
	}
	n, err := c.writeLocked(p)
	c.unlockThen(after)
	return n, err
}

// writeLocked writes all of p through the poller; c.wmu is held.
func (c *Conn) writeLocked(p []byte) (int, error) {
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.raw.Write(c.writef)
	n := c.wn
	c.wbuf = nil
	if err != nil {
		return n, c.opError("write", err)
	}
	if c.werr != 0 {
		return n, c.opError("write", os.NewSyscallError("write", c.werr))
	}
	return n, nil
}

// opError rewraps a raw-read/raw-write error as net's read/write error.
func (c *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok { //nolint:errorlint // the raw conn's own wrapper, replaced
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Quiet reports whether a kept-alive connection that should be silent
// is: nothing to read and not closed by the peer (a byte would be an
// unsolicited response, EOF or an error a closed connection). It peeks
// without blocking and without the runtime's syscall path.
func (c *Conn) Quiet() bool {
	quiet := true
	var b [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		n, e := sysPeek(fd, &b)
		quiet = n <= 0 && (e == syscall.EAGAIN || e == syscall.EINTR)
		return true
	})
	return quiet && err == nil
}

// Listener wraps accepted TCP connections with Wrap.
type Listener struct{ net.Listener }

// Accept returns the next connection, wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
