package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newReq(t *testing.T, ctx context.Context, method, addr, path string, body io.Reader, n int64) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	r.ContentLength = n
	return r
}

func do(t *testing.T, p *H1Pool, r *http.Request, addr string) (*http.Response, string) {
	t.Helper()
	resp, err := p.RoundTrip(r.Context(), r, addr, nil, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// connServer is a net/http server that reports the remote address of each request.
func connServer(t *testing.T, h http.HandlerFunc) (addr string) {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func TestH1PoolKeepAliveAndBodies(t *testing.T) {
	addr := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remote", r.RemoteAddr)
		switch r.URL.Path {
		case "/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		case "/echo":
			w.Header().Set("X-Te", strings.Join(r.TransferEncoding, ","))
			_, _ = io.Copy(w, r.Body)
		case "/sum":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	ctx := context.Background()
	first, body := do(t, p, newReq(t, ctx, "GET", addr, "/", nil, 0), addr)
	if body != "hello" || p.IdleCount(addr) != 1 {
		t.Fatalf("body %q, idle %d", body, p.IdleCount(addr))
	}
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/chunked", "part0;part1;part2;"},
		{"HEAD", "/", ""},
		{"GET", "/204", ""},
		{"GET", "/304", ""},
		{"GET", "/", "hello"},
	} {
		resp, got := do(t, p, newReq(t, ctx, tc.method, addr, tc.path, nil, 0), addr)
		if got != tc.want {
			t.Errorf("%s %s: body %q, want %q", tc.method, tc.path, got, tc.want)
		}
		if r := resp.Header.Get("X-Remote"); r != first.Header.Get("X-Remote") {
			t.Errorf("%s %s: came on connection %s, want the kept-alive %s", tc.method, tc.path, r, first.Header.Get("X-Remote"))
		}
	}
	// Chunked request body (unknown length) and a large known-length one.
	pr, pw := io.Pipe()
	go func() {
		for i := range 4 {
			fmt.Fprintf(pw, "chunk%d,", i)
		}
		pw.Close()
	}()
	resp, got := do(t, p, newReq(t, ctx, "POST", addr, "/echo", pr, -1), addr)
	if got != "chunk0,chunk1,chunk2,chunk3," || resp.Header.Get("X-Te") != "chunked" {
		t.Errorf("chunked upload: body %q, server saw transfer-encoding %q", got, resp.Header.Get("X-Te"))
	}
	if p.IdleCount(addr) != 1 {
		t.Errorf("idle connections = %d, want the one kept alive", p.IdleCount(addr))
	}
	// Small bodies at hand (Ready) are written inline, larger ones by
	// sendBody; both keep the connection.
	for _, n := range []int{1, inlineBody, inlineBody + 1} {
		b := bytes.Repeat([]byte("r"), n)
		resp, got := do(t, p, newReq(t, ctx, "POST", addr, "/sum", &readyReader{bytes.NewReader(b)}, int64(n)), addr)
		if want := fmt.Sprintf("%d %x", n, sha256.Sum256(b)); got != want {
			t.Errorf("%d-byte ready body: server saw %q, want %q", n, got, want)
		}
		if r := resp.Header.Get("X-Remote"); r != first.Header.Get("X-Remote") {
			t.Errorf("%d-byte ready body came on connection %s, want the kept-alive %s", n, r, first.Header.Get("X-Remote"))
		}
	}
	// A large body the server reads in full before it answers, and one it
	// echoes while the body still arrives: that deadlocked a pool that
	// wrote the whole body before reading (the body outgrows both socket
	// buffers while nobody reads the echo).
	big := bytes.Repeat([]byte("0123456789abcdef"), 512*1024) // 8 MiB
	_, got = do(t, p, newReq(t, ctx, "POST", addr, "/sum", bytes.NewReader(big), int64(len(big))), addr)
	if want := fmt.Sprintf("%d %x", len(big), sha256.Sum256(big)); got != want {
		t.Errorf("8 MiB upload: server saw %q, want %q", got, want)
	}
	// (net/http's server closes a connection whose answer began before
	// the body was read, so whether this one is kept is up to it.)
	_, got = do(t, p, newReq(t, ctx, "POST", addr, "/echo", bytes.NewReader(big), int64(len(big))), addr)
	if got != string(big) {
		t.Errorf("8 MiB echo: got %d bytes back, want %d", len(got), len(big))
	}
}

// readyReader is a body whose bytes are all at hand.
type readyReader struct{ *bytes.Reader }

func (r *readyReader) Ready() int64 { return int64(r.Len()) }
func (r *readyReader) Close() error { return nil }

// TestH1PoolEarlyAnswer: a server that answers before it has read the
// request body (an early 413) gets its answer through, and the connection,
// whose request was not all sent, is not reused.
func TestH1PoolEarlyAnswer(t *testing.T) {
	var conns atomic.Int32
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if r.URL.Path == "/small" {
			_, _ = io.Copy(io.Discard, r.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			readReq(t, br) // keep the connection until the pool closes it
			return
		}
		// Answer at once, read nothing of the body, keep the connection
		// open: the pool must neither hang nor pool it.
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\n\r\nbig")
		time.Sleep(500 * time.Millisecond)
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	ctx := context.Background()
	big := bytes.Repeat([]byte("x"), 16<<20) // outgrows the socket buffers
	done := make(chan struct{})
	var resp *http.Response
	var got string
	go func() {
		defer close(done)
		resp, got = do(t, p, newReq(t, ctx, "PUT", addr, "/big", bytes.NewReader(big), int64(len(big))), addr)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the early answer did not come through: the pool waits for its body write")
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || got != "big" {
		t.Fatalf("got %d %q, want the early 413", resp.StatusCode, got)
	}
	if n := p.IdleCount(addr); n != 0 {
		t.Fatalf("a connection whose request body was not all sent was pooled (%d idle)", n)
	}
	// A small body the server reads first: the connection is kept.
	if resp, got := do(t, p, newReq(t, ctx, "POST", addr, "/small", strings.NewReader("tiny"), 4), addr); resp.StatusCode != 200 || got != "ok" {
		t.Fatalf("small POST: %d %q", resp.StatusCode, got)
	}
	if n := p.IdleCount(addr); n != 1 {
		t.Errorf("after a small POST read before the answer: %d idle connections, want 1", n)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2 (the early-answered one is not reused)", n)
	}
}

// TestH1PoolBodyReadError: a request body that fails mid-way (the client
// went away) ends the exchange at once instead of leaving the upstream
// waiting for the rest.
func TestH1PoolBodyReadError(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		readReq(t, br) // waits for all 100 bytes, which never come
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("only ten.."))
		time.Sleep(50 * time.Millisecond)
		pw.CloseWithError(errors.New("client went away"))
	}()
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := p.RoundTrip(context.Background(), newReq(t, context.Background(), "POST", addr, "/", pr, 100), addr, nil, nil)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("no error for a request whose body failed")
		}
		t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("the exchange still waits for an answer after the request body failed")
	}
}

func TestH1Pool100Continue(t *testing.T) {
	addr := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body) // net/http sends "100 Continue" on this read
		fmt.Fprintf(w, "expect=%s body=%s", r.Header.Get("Expect"), b)
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	r := newReq(t, context.Background(), "PUT", addr, "/", strings.NewReader("data"), 4)
	r.Header.Set("Expect", "100-continue")
	resp, got := do(t, p, r, addr)
	if resp.StatusCode != 200 || got != "expect=100-continue body=data" {
		t.Fatalf("status %d body %q", resp.StatusCode, got)
	}
}

// rawServer accepts connections and runs fn on each.
func rawServer(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

func readReq(t *testing.T, br *bufio.Reader) bool {
	r, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, r.Body)
	return true
}

func TestH1PoolEarlyCloseAndStaleReuse(t *testing.T) {
	// The server answers once per connection, then closes it without
	// saying so: the pooled connection is dead when reused.
	var conns atomic.Int32
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		if readReq(t, br) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	for i := range 3 {
		if _, got := do(t, p, newReq(t, context.Background(), "GET", addr, "/", nil, 0), addr); got != "ok" {
			t.Fatalf("request %d: %q", i, got)
		}
		if i == 0 {
			time.Sleep(10 * time.Millisecond) // the close arrives, but the peek is skipped: replay path
		} else {
			time.Sleep(80 * time.Millisecond) // stale enough to be peeked and dropped
		}
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("server saw %d connections, want 3", n)
	}

	// A server that closes without any answer is an error, not a hang.
	dead := rawServer(t, func(c net.Conn, br *bufio.Reader) { readReq(t, br) })
	if _, err := p.RoundTrip(context.Background(), newReq(t, context.Background(), "GET", dead, "/", nil, 0), dead, nil, nil); err == nil {
		t.Error("no error when the server closed without a response")
	}
	// A body that cannot be replayed is not sent twice.
	stale := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if readReq(t, br) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	do(t, p, newReq(t, context.Background(), "GET", stale, "/", nil, 0), stale)
	time.Sleep(10 * time.Millisecond)
	if _, err := p.RoundTrip(context.Background(), newReq(t, context.Background(), "POST", stale, "/", strings.NewReader("x"), 1), stale, nil, nil); err == nil {
		t.Error("a non-replayable POST on a dead connection succeeded")
	}
}

func TestH1PoolUnsolicitedAndClose(t *testing.T) {
	addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for readReq(t, br) {
			// One answer plus a pipelined one nobody asked for.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb")
		}
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	for i := range 2 {
		if _, got := do(t, p, newReq(t, context.Background(), "GET", addr, "/", nil, 0), addr); got != "a" {
			t.Fatalf("request %d got %q: an unsolicited response was taken as the answer", i, got)
		}
		if n := p.IdleCount(addr); n != 0 {
			t.Fatalf("connection with unsolicited bytes pooled (%d idle)", n)
		}
	}
	closer := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	do(t, p, newReq(t, context.Background(), "GET", closer, "/", nil, 0), closer)
	if n := p.IdleCount(closer); n != 0 {
		t.Errorf("Connection: close response left %d idle connections", n)
	}
}

func TestH1PoolMaxRequestsAndCancel(t *testing.T) {
	release := make(chan struct{})
	addr := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remote", r.RemoteAddr)
		if r.URL.Path == "/slow" {
			io.WriteString(w, "start")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	})
	t.Cleanup(func() { close(release) })
	p := NewH1Pool(nil, 2)
	t.Cleanup(p.Close)
	var remotes []string
	for range 3 {
		resp, _ := do(t, p, newReq(t, context.Background(), "GET", addr, "/", nil, 0), addr)
		remotes = append(remotes, resp.Header.Get("X-Remote"))
	}
	if remotes[0] != remotes[1] || remotes[1] == remotes[2] {
		t.Errorf("max 2 requests per connection: connections %v", remotes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := p.RoundTrip(ctx, newReq(t, ctx, "GET", addr, "/slow", nil, 0), addr, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "timeout") {
		t.Errorf("cancelled body read: err = %v", err)
	}
	var de *ErrDial
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if _, err := p.RoundTrip(context.Background(), newReq(t, context.Background(), "GET", closed, "/", nil, 0), closed, nil, nil); !errors.As(err, &de) {
		t.Errorf("dial to a closed port: %v, want *ErrDial", err)
	}
}

// TestH1PoolResponseReuse: a connection's response, header map and value
// array are reused by its next exchange, which can only start after the
// previous body was closed: each response, read before its Close, has its
// own fields only.
func TestH1PoolResponseReuse(t *testing.T) {
	t.Parallel()
	addr := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := r.URL.Query().Get("n")
		w.Header().Set("X-Remote", r.RemoteAddr)
		w.Header().Set("X-Only-"+n, n)
		w.Header().Add("X-Multi", "a"+n)
		w.Header().Add("X-Multi", "b"+n)
		for i, _ := strconv.Atoi(n); i > 0; i-- { // a varying number of fields
			w.Header().Set("X-Extra-"+strconv.Itoa(i), n)
		}
		io.WriteString(w, "body"+n)
	})
	p := NewH1Pool(nil, 0)
	t.Cleanup(p.Close)
	ctx := context.Background()
	remote := ""
	for i := range 8 {
		n := strconv.Itoa(i)
		resp, err := p.RoundTrip(ctx, newReq(t, ctx, "GET", addr, "/?n="+n, nil, 0), addr, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			remote = resp.Header.Get("X-Remote")
		} else if got := resp.Header.Get("X-Remote"); got != remote {
			t.Fatalf("response %d on another connection (%s, first %s): the test needs one", i, got, remote)
		}
		for k, vs := range resp.Header {
			if strings.HasPrefix(k, "X-Only-") && k != "X-Only-"+n || strings.HasPrefix(k, "X-Extra-") && vs[0] != n {
				t.Errorf("response %d has %s: %q (another response's field)", i, k, vs)
			}
		}
		if got := strings.Join(resp.Header.Values("X-Multi"), ","); got != "a"+n+",b"+n {
			t.Errorf("response %d: X-Multi %q", i, got)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "body"+n {
			t.Errorf("response %d: body %q, %v", i, b, err)
		}
	}
}
