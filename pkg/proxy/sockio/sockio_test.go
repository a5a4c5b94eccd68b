//go:build linux

package sockio

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected client/server pair, both wrapped.
func pair(t testing.TB) (*Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wl := Listener{Listener: ln}
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := wl.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-acc
	if sc == nil {
		t.Fatal("accept failed")
	}
	c, ok := Wrap(cc).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap", cc)
	}
	s, ok := sc.(*Conn)
	if !ok {
		t.Fatalf("Listener.Accept returned %T, want *Conn", sc)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}

func TestWrapOnlyTCP(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
	c, _ := pair(t)
	if got := Wrap(c); got != net.Conn(c) {
		t.Fatal("Wrap re-wrapped a *Conn")
	}
	if _, ok := c.NetConn().(*net.TCPConn); !ok {
		t.Fatalf("NetConn = %T, want *net.TCPConn", c.NetConn())
	}
}

// A payload much larger than the socket buffers makes writes return
// EAGAIN and partial counts and reads wait in the poller.
func TestLargeTransferBothWays(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	payload := make([]byte, 8<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 2)
	go func() {
		n, err := c.Write(payload)
		if err == nil && n != len(payload) {
			err = io.ErrShortWrite
		}
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	// Echo back what arrives, in odd-sized reads.
	var got bytes.Buffer
	go func() {
		buf := make([]byte, 3001)
		for {
			n, err := s.Read(buf)
			got.Write(buf[:n])
			if n > 0 {
				if _, werr := s.Write(buf[:n]); werr != nil {
					errc <- werr
					return
				}
			}
			if errors.Is(err, io.EOF) {
				errc <- s.CloseWrite()
				return
			}
			if err != nil {
				errc <- err
				return
			}
		}
	}()
	back, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got.Bytes(), payload) || !bytes.Equal(back, payload) {
		t.Fatalf("payload corrupted: server got %d bytes, echo %d bytes of %d", got.Len(), len(back), len(payload))
	}
}

func TestEOFAndZeroRead(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("zero-length Read = %d, %v", n, err)
	}
	if _, err := s.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hi" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if n, err := c.Read(make([]byte, 4)); n != 0 || err != io.EOF { //nolint:errorlint // io.EOF itself, as net.Conn
		t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestReadDeadline(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 10))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("err = %#v, want *net.OpError read", err)
	}
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout with os.ErrDeadlineExceeded", err)
	}
	// A past deadline interrupts a blocked read, as the server's hang-up
	// watch does.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
	time.Sleep(10 * time.Millisecond) // let it block (not needed for correctness)
	_ = c.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("interrupted read: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a past deadline did not interrupt Read")
	}
}

func TestCloseInterruptsRead(t *testing.T) {
	t.Parallel()
	c, _ := pair(t)
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on closed conn: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not interrupt Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on closed conn: %v, want net.ErrClosed", err)
	}
}

func TestResetIsSyscallError(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	if err := s.SetLinger(0); err != nil { // close sends RST
		t.Fatal(err)
	}
	s.Close()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if _, err = c.Write([]byte("after reset")); err != nil {
			break
		}
		_, err = c.Read(make([]byte, 10))
		if err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("err = %v, want ECONNRESET or EPIPE", err)
	}
	var se *os.SyscallError
	if !errors.As(err, &se) {
		t.Fatalf("err = %#v, want an *os.SyscallError inside", err)
	}
}

func TestQuiet(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	if !c.Quiet() {
		t.Fatal("a fresh idle connection is not quiet")
	}
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Quiet() {
		if time.Now().After(deadline) {
			t.Fatal("unread data never made the connection not quiet")
		}
		time.Sleep(time.Millisecond)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("Quiet consumed the byte: %q, %v", b, err)
	}
	if !c.Quiet() {
		t.Fatal("not quiet after the data was read")
	}
	s.Close()
	for c.Quiet() {
		if time.Now().After(deadline) {
			t.Fatal("a closed peer never made the connection not quiet")
		}
		time.Sleep(time.Millisecond)
	}
}

// exchange runs n request/response round trips of size bytes each way
// between c (client) and s (server), both flushing through bufio; with
// deferred, both sides use DeferFlush. It checks every byte.
func exchange(t *testing.T, c, s *Conn, n, size int, deferred bool) {
	t.Helper()
	flush := func(conn *Conn, w *bufio.Writer) error {
		if deferred {
			return conn.DeferFlush(w)
		}
		return w.Flush()
	}
	errc := make(chan error, 1)
	go func() { // server: read a request, answer with its bytes reversed
		r, w := bufio.NewReader(s), bufio.NewWriterSize(s, size)
		buf := make([]byte, size)
		for range n {
			if _, err := io.ReadFull(r, buf); err != nil {
				errc <- fmt.Errorf("server read: %w", err)
				return
			}
			slices.Reverse(buf)
			_, _ = w.Write(buf)
			if err := flush(s, w); err != nil {
				errc <- fmt.Errorf("server flush: %w", err)
				return
			}
		}
		errc <- s.SendPending() // the last answer has no next read
	}()
	// Writers as large as a message: the whole message is one flush.
	r, w := bufio.NewReader(c), bufio.NewWriterSize(c, size)
	req, resp, want := make([]byte, size), make([]byte, size), make([]byte, size)
	for i := range n {
		for j := range req {
			req[j] = byte(i + j)
		}
		_, _ = w.Write(req)
		if err := flush(c, w); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, resp); err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		copy(want, req)
		slices.Reverse(want)
		if !bytes.Equal(resp, want) {
			t.Fatalf("exchange %d: answer corrupted", i)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A deferred flush goes out with the next read, which then waits for the
// answer without a read(2) that finds nothing: request/response on both
// sides costs one read per message instead of two.
func TestDeferFlushSavesEmptyReads(t *testing.T) {
	t.Parallel()
	const n = 300
	c, s := pair(t)
	exchange(t, c, s, n, 200, false)
	plain := c.eagain + s.eagain
	c2, s2 := pair(t)
	exchange(t, c2, s2, n, 200, true)
	deferred := c2.eagain + s2.eagain
	t.Logf("reads that found nothing over %d exchanges: %d plain, %d deferred", n, plain, deferred)
	// The client's read after each request always comes before the
	// answer, so plain flushes find nothing at least ~n times; deferred
	// ones only on a spurious wake-up.
	if deferred > n/10 {
		t.Fatalf("%d empty reads with deferred flushes over %d exchanges (plain: %d)", deferred, n, plain)
	}
	if plain < n/2 {
		t.Fatalf("plain flushes: only %d empty reads over %d exchanges; the test no longer tells the two apart", plain, n)
	}
}

// Pending bytes larger than the socket buffers: the read sends what the
// socket takes, waits in the poller for the rest, then reads.
func TestDeferFlushLarge(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	exchange(t, c, s, 3, 4<<20, true)
}

// Close, Write and SendPending send pending bytes, in order; a read whose
// deadline has passed still sends them.
func TestDeferFlushSentByCloseWriteAndFailedRead(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	w := bufio.NewWriter(c)
	_, _ = w.WriteString("one ")
	if err := c.DeferFlush(w); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("two ")); err != nil { // sends "one " first
		t.Fatal(err)
	}
	_, _ = w.WriteString("three ")
	if err := c.DeferFlush(w); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a past deadline: %v", err)
	}
	_, _ = w.WriteString("four")
	if err := c.DeferFlush(w); err != nil {
		t.Fatal(err)
	}
	if !c.pending.Load() {
		t.Fatal("DeferFlush sent its bytes")
	}
	c.Close()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "one two three four" {
		t.Fatalf("peer got %q", got)
	}
}

// A pending write that fails (peer gone) is the next Read's error.
func TestDeferFlushErrorOnRead(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	_ = s.TCPConn.SetLinger(0)
	s.Close() // reset
	w := bufio.NewWriter(c)
	var err error
	for range 50 { // the first write after the reset may still succeed
		_, _ = w.WriteString("ping")
		if err = c.DeferFlush(w); err != nil {
			break
		}
		if _, err = c.Read(make([]byte, 4)); err != nil {
			break
		}
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want the failed send or the reset", err)
	}
}

// Close interrupts a Read that waits to send pending bytes the peer does
// not take (it must not wait for that send to end).
func TestCloseInterruptsPendingSend(t *testing.T) {
	t.Parallel()
	c, _ := pair(t) // the peer never reads
	big := make([]byte, 16<<20)
	w := bufio.NewWriterSize(c, len(big))
	_, _ = w.Write(big)
	if err := c.DeferFlush(w); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 10)); done <- err }()
	time.Sleep(20 * time.Millisecond) // let the send fill the socket (not needed for correctness)
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a pending send the peer does not take")
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not interrupt the Read's pending send")
	}
}

// AfterSend's function runs once, right after the pending bytes are sent
// and before the Read that sent them waits: the peer can already read
// them from inside it. Every other way of sending or dropping them runs
// it too; with nothing pending it runs at once.
func TestAfterSend(t *testing.T) {
	t.Parallel()
	c, s := pair(t)
	w := bufio.NewWriter(c)
	deferMsg := func(msg string) {
		t.Helper()
		_, _ = w.WriteString(msg)
		if err := c.DeferFlush(w); err != nil {
			t.Fatal(err)
		}
	}
	var runs []string
	after := func(name, peerGets string) func() {
		return func() {
			runs = append(runs, name)
			if peerGets == "" {
				return
			}
			b := make([]byte, len(peerGets))
			_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(s, b); err != nil || string(b) != peerGets {
				t.Errorf("%s: peer read %q, %v; want %q already sent", name, b, err, peerGets)
			}
		}
	}

	// The Read sends, runs the function, then waits for the answer,
	// which the function itself sends (a Read that ran it only after its
	// wait would time out).
	deferMsg("ping")
	answer := after("read", "ping")
	c.AfterSend(func() { answer(); _, _ = s.Write([]byte("pong")) })
	if len(runs) != 0 {
		t.Fatal("ran before the send")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "pong" {
		t.Fatalf("read %q, %v", b, err)
	}
	_ = c.SetReadDeadline(time.Time{})

	// Two functions for one send run in order.
	deferMsg("one")
	c.AfterSend(after("first", "one"))
	c.AfterSend(after("second", ""))
	if err := c.SendPending(); err != nil {
		t.Fatal(err)
	}

	deferMsg("two")
	c.AfterSend(after("write", "")) // runs after the Write's own bytes too
	if _, err := c.Write([]byte("2")); err != nil {
		t.Fatal(err)
	}
	b = make([]byte, 4)
	if _, err := io.ReadFull(s, b); err != nil || string(b) != "two2" {
		t.Fatalf("peer read %q, %v", b, err)
	}

	c.AfterSend(after("nothing pending", ""))

	deferMsg("three")
	c.AfterSend(after("close", ""))
	c.Close()
	if got, err := io.ReadAll(s); err != nil || string(got) != "three" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	want := []string{"read", "first", "second", "write", "nothing pending", "close"}
	if !slices.Equal(runs, want) {
		t.Fatalf("ran %q, want %q", runs, want)
	}
}
