package listener

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/sockio"
)

// echoHandler answers with what the server parsed, so the same bytes can
// be compared between Server and net/http's server.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "body error: %v", err)
		return
	}
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Uri", r.URL.String())
	w.Header().Set("X-Len", strconv.FormatInt(r.ContentLength, 10))
	w.Header().Set("X-Foo", strings.Join(r.Header["Foo"], "|"))
	if v := r.Trailer.Get("Tr"); v != "" {
		w.Header().Set("X-Trailer", v)
	}
	fmt.Fprintf(w, "body=%s", b)
}

// serveBoth starts Server and net/http's server with handler.
func serveBoth(t *testing.T, h http.Handler) (ours, std string) {
	t.Helper()
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s1 := &Server{Handler: h}
	s2 := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = s1.Serve(sockio.Listener{Listener: l1}) }() // sockio, as the proxy serves it
	go func() { _ = s2.Serve(l2) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s1.Shutdown(ctx)
		_ = s2.Shutdown(ctx)
	})
	return l1.Addr().String(), l2.Addr().String()
}

// rawExchange writes req on a new connection, half-closes, and returns
// every response read until the server closes (or 10 s).
func rawExchange(t *testing.T, addr, req string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(c)
	var out []*http.Response
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		out = append(out, resp)
		if resp.StatusCode >= 200 && resp.Close {
			return out
		}
	}
}

func statuses(rs []*http.Response) string {
	var s []string
	for _, r := range rs {
		s = append(s, strconv.Itoa(r.StatusCode))
	}
	return strings.Join(s, ",")
}

// TestH1MalformedVsNetHTTP sends the same bytes to Server and to
// net/http's server. std is net/http's answer where it differs on
// purpose (empty: the same as ours).
func TestH1MalformedVsNetHTTP(t *testing.T) {
	t.Parallel()
	ours, std := serveBoth(t, http.HandlerFunc(echoHandler))
	big := strings.Repeat("a", 1<<20+8192)
	cases := []struct {
		name, req string
		want, std string // comma-separated statuses of the responses
		check     func(t *testing.T, rs []*http.Response)
	}{
		{name: "valid", req: "GET /a?b=c HTTP/1.1\r\nHost: x\r\nFoo: 1\r\nFoo: 2\r\n\r\n", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if got := rs[0].Header.Get("X-Foo"); got != "1|2" {
				t.Errorf("Foo values %q", got)
			}
			if got := rs[0].Header.Get("X-Uri"); got != "/a?b=c" {
				t.Errorf("uri %q", got)
			}
		}},
		{name: "lowercase and odd-case names", req: "GET / HTTP/1.1\r\nhost: x\r\nfOO: 1\r\n\r\n", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if got := rs[0].Header.Get("X-Foo"); got != "1" {
				t.Errorf("Foo %q", got)
			}
		}},
		{name: "bare LF line ends", req: "GET / HTTP/1.1\nHost: x\n\n", want: "200"},
		// net/http unfolds obs-fold into one value; RFC 9112 §5.2 lets a
		// server reject it, which a proxy should (parsers disagree).
		{name: "obs-fold", req: "GET / HTTP/1.1\r\nHost: x\r\nFoo: a\r\n b\r\n\r\n", want: "400", std: "200"},
		{name: "obs-fold first field", req: "GET / HTTP/1.1\r\n Host: x\r\n\r\n", want: "400"},
		{name: "space before colon", req: "GET / HTTP/1.1\r\nHost : x\r\n\r\n", want: "400"},
		{name: "bad field name", req: "GET / HTTP/1.1\r\nHost: x\r\nFo@o: 1\r\n\r\n", want: "400"},
		{name: "empty field name", req: "GET / HTTP/1.1\r\nHost: x\r\n: 1\r\n\r\n", want: "400"},
		{name: "no colon", req: "GET / HTTP/1.1\r\nHost: x\r\nFoo\r\n\r\n", want: "400"},
		{name: "control char in value", req: "GET / HTTP/1.1\r\nHost: x\r\nFoo: a\x01b\r\n\r\n", want: "400"},
		{name: "bare CR in value", req: "GET / HTTP/1.1\r\nHost: x\r\nFoo: a\rb\r\n\r\n", want: "400"},
		{name: "NUL in target", req: "GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", want: "400"},
		{name: "space in target", req: "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", want: "400"},
		{name: "double space", req: "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", want: "400"},
		{name: "bad method", req: "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", want: "400"},
		{name: "bad version", req: "GET / HTTP/1.1x\r\nHost: x\r\n\r\n", want: "400"},
		{name: "lowercase version", req: "GET / http/1.1\r\nHost: x\r\n\r\n", want: "400"},
		{name: "HTTP/2.0 request line", req: "GET / HTTP/2.0\r\nHost: x\r\n\r\n", want: "505"},
		{name: "HTTP/3.0", req: "GET / HTTP/3.0\r\nHost: x\r\n\r\n", want: "505"},
		{name: "HTTP/1.2 as 1.1", req: "GET / HTTP/1.2\r\nHost: x\r\n\r\n", want: "200"},
		{name: "missing Host 1.1", req: "GET / HTTP/1.1\r\n\r\n", want: "400"},
		{name: "missing Host 1.0", req: "GET / HTTP/1.0\r\n\r\n", want: "200"},
		{name: "two Hosts", req: "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", want: "400"},
		{name: "bad Host", req: "GET / HTTP/1.1\r\nHost: x/y\r\n\r\n", want: "400"},
		{name: "absolute form", req: "GET http://svc:9080/p?q HTTP/1.1\r\nHost: other\r\n\r\n", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if got := rs[0].Header.Get("X-Host"); got != "svc:9080" {
				t.Errorf("host %q", got)
			}
		}},
		{name: "asterisk", req: "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", want: "200"},
		{name: "Content-Length body", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if b, _ := io.ReadAll(rs[0].Body); string(b) != "body=abc" {
				t.Errorf("body %q", b)
			}
		}},
		{name: "identical duplicate Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", want: "200"},
		{name: "conflicting Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", want: "400"},
		{name: "negative Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", want: "400"},
		{name: "signed Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", want: "400"},
		{name: "hex Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc", want: "400"},
		{name: "list Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", want: "400"},
		{name: "huge Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", want: "400"},
		{name: "chunked", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if b, _ := io.ReadAll(rs[0].Body); string(b) != "body=abc" {
				t.Errorf("body %q", b)
			}
			if got := rs[0].Header.Get("X-Len"); got != "-1" {
				t.Errorf("ContentLength %s", got)
			}
		}},
		{name: "chunked with trailer", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: Tr\r\n\r\n1\r\na\r\n0\r\nTr: yes\r\n\r\n", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if got := rs[0].Header.Get("X-Trailer"); got != "yes" {
				t.Errorf("trailer %q", got)
			}
		}},
		{name: "chunked case-insensitive", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", want: "200"},
		{name: "chunked bad size", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", want: "400"},
		{name: "chunked missing CRLF after data", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", want: "400"},
		{name: "chunked truncated", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", want: "400"},
		{name: "chunked size overflow", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\na\r\n0\r\n\r\n", want: "400"},
		// Smuggling: net/http drops Content-Length and reads chunked; a
		// proxy must not pass on a message two parsers may frame differently.
		{name: "Content-Length and chunked", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: "400", std: "200"},
		{name: "chunked then Content-Length", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", want: "400", std: "200"},
		{name: "two Transfer-Encoding fields", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", want: "501"},
		{name: "gzip, chunked", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", want: "501"},
		{name: "identity", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", want: "501"},
		{name: "space-padded chunked token", req: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", want: "501"},
		// net/http ignores Transfer-Encoding on HTTP/1.0 and frames by
		// Content-Length; refusing is the safe reading for a proxy.
		{name: "Transfer-Encoding on HTTP/1.0", req: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", want: "400", std: "200"},
		{name: "Expect 100-continue", req: "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", want: "100,200"},
		{name: "Expect unknown", req: "POST / HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\nContent-Length: 2\r\n\r\nhi", want: "417"},
		{name: "head too large", req: "GET / HTTP/1.1\r\nHost: x\r\nFoo: " + big + "\r\n\r\n", want: "431"},
		{name: "pipelined", req: "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nzGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", want: "200,200,200", check: func(t *testing.T, rs []*http.Response) {
			for i, r := range rs {
				if got, want := r.Header.Get("X-Uri"), "/"+strconv.Itoa(i+1); got != want {
					t.Errorf("response %d for %s", i, got)
				}
			}
		}},
		{name: "smuggled request after bad framing is not served", req: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", want: "400", std: "200,200"},
		{name: "HTTP/1.0 keep-alive", req: "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", want: "200,200"},
		{name: "HTTP/1.0 closes", req: "GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", want: "200"},
		{name: "Connection close", req: "GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", want: "200"},
		{name: "CONNECT authority", req: "CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n", want: "200", check: func(t *testing.T, rs []*http.Response) {
			if got := rs[0].Header.Get("X-Host"); got != "svc:443" {
				t.Errorf("host %q", got)
			}
		}},
		// RFC 9112 §2.2: a server SHOULD ignore empty lines before the
		// request line (clients add CRLF after a POST body).
		{name: "leading empty line", req: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", want: "200", std: "400"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := rawExchange(t, ours, tc.req)
			if s := statuses(got); s != tc.want {
				t.Errorf("Server answered %q, want %q", s, tc.want)
			} else if tc.check != nil {
				tc.check(t, got)
			}
			wantStd := tc.std
			if wantStd == "" {
				wantStd = tc.want
			}
			if s := statuses(rawExchange(t, std, tc.req)); s != wantStd {
				// The table documents where the two servers differ.
				t.Errorf("net/http answered %q, table says %q", s, wantStd)
			}
		})
	}
}

// TestH1ResponseFraming checks Content-Length computed for short
// bodies, chunked streaming with trailers, HEAD, 204 and flushes, read
// with net/http's client.
func TestH1ResponseFraming(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("/long", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		for range 100 {
			io.WriteString(w, strings.Repeat("x", 1000))
		}
		w.Header().Set("X-Sum", "100000")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first")
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // the client reads "first", then hangs up
	})
	mux.HandleFunc("/nocontent", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/cl", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5000")
		io.WriteString(w, strings.Repeat("y", 5000))
	})
	mux.HandleFunc("/split", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Foo", "a\r\nInjected: 1")
	})
	ours, _ := serveBoth(t, mux)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	get := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, "http://"+ours+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s body: %v", method, path, err)
		}
		return resp, string(b)
	}
	if resp, b := get("GET", "/short"); resp.ContentLength != 5 || b != "hello" || resp.Header.Get("Date") == "" {
		t.Errorf("short: len %d body %q header %v", resp.ContentLength, b, resp.Header)
	}
	resp, b := get("GET", "/long")
	if resp.ContentLength != -1 || len(b) != 100000 || resp.Trailer.Get("X-Sum") != "100000" || resp.Trailer.Get("X-Late") != "late" {
		t.Errorf("long: len %d body %d trailer %v", resp.ContentLength, len(b), resp.Trailer)
	}
	if resp, b := get("HEAD", "/short"); resp.StatusCode != 200 || b != "" {
		t.Errorf("head: %d %q", resp.StatusCode, b)
	}
	if resp, _ := get("GET", "/nocontent"); resp.StatusCode != 204 || resp.Header.Get("Content-Length") != "" {
		t.Errorf("204: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, b := get("GET", "/cl"); resp.ContentLength != 5000 || len(b) != 5000 {
		t.Errorf("cl: %d %d", resp.ContentLength, len(b))
	}
	if resp, _ := get("GET", "/split"); resp.Header.Get("Injected") != "" || resp.Header.Get("Foo") != "a  Injected: 1" {
		t.Errorf("response splitting: %v", resp.Header)
	}
	// Flush reaches the client before the handler returns.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ours+"/flush", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first" {
		t.Errorf("flush: %q %v", buf, err)
	}
	cancel()
	resp.Body.Close()
}

// TestH1HangupCancelsContext: a client closing its connection cancels
// the running request's context.
func TestH1HangupCancelsContext(t *testing.T) {
	t.Parallel()
	cancelled := make(chan struct{})
	started := make(chan struct{})
	ours, _ := serveBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(20 * time.Second):
		}
	}))
	c, err := net.Dial("tcp", ours)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(15 * time.Second):
		t.Fatal("request context not cancelled after the client closed")
	}
}

// TestH1HijackAndH2C: Hijack hands over the connection with what was
// buffered; a connection opening with the HTTP/2 preface is served as h2c.
func TestH1HijackAndH2C(t *testing.T) {
	t.Parallel()
	ours, _ := serveBoth(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/proto" {
			io.WriteString(w, r.Proto)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		line, _ := brw.ReadString('\n')
		io.WriteString(conn, "echo:"+line)
	}))
	c, err := net.Dial("tcp", ours)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The tunnel's first bytes arrive with the request (buffered by the server).
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nping\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if line, _ := br.ReadString('\n'); line != "echo:ping\n" {
		t.Errorf("tunnel got %q", line)
	}

	pr := new(http.Protocols)
	pr.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: pr}}
	defer hc.CloseIdleConnections()
	r2, err := hc.Get("http://" + ours + "/proto")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	if string(b) != "HTTP/2.0" {
		t.Errorf("h2c request served as %q", b)
	}
}

// TestH1ShutdownWaitsForActive: Shutdown closes idle connections and
// waits for a running request.
func TestH1ShutdownWaitsForActive(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var served atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		served.Add(1)
		io.WriteString(w, "ok")
	})}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(sockio.Listener{Listener: l}) }()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	if resp, err := c.Get("http://" + l.Addr().String() + "/fast"); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	slow := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{Transport: &http.Transport{}}).Get("http://" + l.Addr().String() + "/slow")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for { // wait until the slow request is in the handler
		s.mu.Lock()
		active := 0
		for c := range s.conns {
			if c.state.Load() == connActive {
				active++
			}
		}
		s.mu.Unlock()
		if active > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v before the active request finished", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("slow request: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-serveErr; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

// TestH1HangupInterruptsUpstream: an H1Pool exchange on the request's
// context (the connection's, a cluster.CancelHook the pool registers on
// instead of context.AfterFunc) fails soon after the client hangs up, and
// the interrupted upstream connection is not pooled again; a request that
// completes pools its connection.
func TestH1HangupInterruptsUpstream(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		io.WriteString(w, "ok")
	}))
	defer up.Close()
	defer close(release)
	upAddr := up.Listener.Addr().String()
	pool := cluster.NewH1Pool(nil, 0)
	defer pool.Close()
	started := make(chan struct{})
	result := make(chan error, 1)
	s := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().(cluster.CancelHook); !ok {
			t.Errorf("request context %T is not a cluster.CancelHook", r.Context())
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+upAddr+r.URL.Path, nil)
		resp, err := pool.RoundTrip(r.Context(), req, upAddr, nil, nil)
		if err != nil {
			result <- err
			return
		}
		if r.URL.Path == "/slow" {
			close(started)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if r.URL.Path == "/slow" {
			result <- err
		}
		io.WriteString(w, "done")
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(sockio.Listener{Listener: l}) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := pool.IdleCount(upAddr); n != 1 {
		t.Fatalf("after a complete exchange: %d idle upstream connections, want 1", n)
	}
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-started:
	case err := <-result:
		t.Fatalf("slow exchange failed early: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("slow exchange did not start")
	}
	c.Close()
	select {
	case err := <-result:
		if err == nil {
			t.Fatal("body read succeeded after the client hung up")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("upstream exchange not interrupted after the client hung up")
	}
	if n := pool.IdleCount(upAddr); n != 0 {
		t.Errorf("interrupted upstream connection pooled: %d idle", n)
	}
}

// AfterSend: the function runs once the response has gone out (it waits
// for the client to have read it), and before the connection's next
// request is served; on a closing connection and after a panic too.
func TestH1AfterSend(t *testing.T) {
	clientRead := make(chan string, 1)
	var done atomic.Int32
	var errs atomic.Value
	fail := func(format string, a ...any) { errs.CompareAndSwap(nil, fmt.Sprintf(format, a...)) }
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if got := int(done.Load()); got != n {
			fail("request %d served after %d AfterSend functions, want %d", n, got, n)
		}
		as, ok := w.(interface{ AfterSend(func()) bool })
		if !ok || !as.AfterSend(func() {
			select {
			case got := <-clientRead: // only once the client has the response
				if got != r.URL.Query().Get("n") {
					fail("AfterSend of request %s ran after the client read response %s", r.URL.Query().Get("n"), got)
				}
			case <-time.After(5 * time.Second):
				fail("AfterSend of request %d ran before its response was sent", n)
			}
			done.Add(1)
		}) {
			fail("AfterSend refused")
		}
		if r.URL.Path == "/panic" {
			panic(http.ErrAbortHandler)
		}
		_, _ = io.WriteString(w, r.URL.Query().Get("n"))
	})
	addr, _ := serveBoth(t, h)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	for n := range 3 {
		hdr := ""
		if n == 2 {
			hdr = "Connection: close\r\n"
		}
		fmt.Fprintf(conn, "GET /?n=%d HTTP/1.1\r\nHost: x\r\n%s\r\n", n, hdr)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", n, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		clientRead <- string(b)
	}
	waitDone := func(n int32) {
		deadline := time.Now().Add(10 * time.Second)
		for done.Load() != n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	waitDone(3) // the closing connection's function runs after its flush
	// A handler that panics: the connection closes, the function runs.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "GET /panic?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
	_, _ = io.ReadAll(c2)
	clientRead <- "3"
	waitDone(4)
	if e := errs.Load(); e != nil {
		t.Fatal(e)
	}
	if n := done.Load(); n != 4 {
		t.Fatalf("%d AfterSend functions ran, want 4", n)
	}
}
