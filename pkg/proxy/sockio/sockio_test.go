//go:build linux

package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
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
