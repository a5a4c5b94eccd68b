package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/weftmesh/weft/pkg/proxy/sockio"
)

// TestRelayKeepAlive relays keep-alive requests from net/http's client to
// a net/http server: every answer arrives whole, over one upstream
// connection per downstream connection.
func TestRelayKeepAlive(t *testing.T) {
	var upConns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "answer to "+r.URL.Path)
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			upConns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go relay(sockio.Wrap(c), up.Listener.Addr().String())
		}
	}()
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	// Answers stay under 2 KiB, so net/http gives them a Content-Length.
	for _, path := range []string{"/a", "/b", "/" + strings.Repeat("c", 1500)} {
		resp, err := c.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "answer to "+path {
			t.Fatalf("GET %.20s: %q %v", path, b, err)
		}
	}
	if n := upConns.Load(); n != 1 {
		t.Errorf("upstream connections = %d, want 1", n)
	}
}

// TestReadMessageRefuses: what the relay cannot frame fails instead of
// being relayed wrong.
func TestReadMessageRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		body      bool
	}{
		{"answer without Content-Length", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true},
		{"pipelined request", "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"larger than the buffer", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() { io.WriteString(b, tc.msg); b.Close() }()
			if n, err := readMessage(a, make([]byte, 4096), tc.body); err == nil {
				t.Errorf("read %d bytes, want an error", n)
			}
		})
	}
	a, b := net.Pipe()
	defer a.Close()
	msg := "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
	go func() { io.WriteString(b, msg); b.Close() }()
	if n, err := readMessage(a, make([]byte, 4096), true); err != nil || n != len(msg) {
		t.Errorf("Content-Length answer: %d %v, want %d", n, err, len(msg))
	}
}
