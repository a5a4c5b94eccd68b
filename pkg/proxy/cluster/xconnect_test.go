package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestExtendedConnectUnsupportedPeer: a net/http h2c server without
// extended CONNECT (this test binary does not turn it on) gets no stream,
// and the error is ErrExtendedConnectUnsupported (this pins the text of
// golang.org/x/net/http2's unexported error that XConnect recognises).
func TestExtendedConnectUnsupportedPeer(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") {
		t.Skip("GODEBUG turns extended CONNECT on for this process's servers")
	}
	got := make(chan string, 1)
	pr := new(http.Protocols)
	pr.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: pr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Method
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })

	c := Static("x", l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+l.Addr().String()+"/ws", io.NopCloser(strings.NewReader("")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header[":protocol"] = []string{"websocket"}
	resp, err := c.XC.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("stream sent to a peer without extended CONNECT: %d", resp.StatusCode)
	}
	if !errors.Is(err, ErrExtendedConnectUnsupported) {
		t.Fatalf("error %v, want ErrExtendedConnectUnsupported", err)
	}
	select {
	case m := <-got:
		t.Fatalf("the server saw a %s request", m)
	default:
	}
}

// TestCloseWrite half-closes through the cluster's connection wrappers.
func TestCloseWrite(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	eof := make(chan error, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			eof <- err
			return
		}
		defer s.Close()
		_, err = io.ReadAll(s) // returns at the FIN
		if err == nil {
			_, err = s.Write([]byte("still open"))
		}
		eof <- err
	}()
	raw, err := RawDialer(&net.Dialer{})(context.Background(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := &CountedConn{Conn: &limitedConn{Conn: raw, release: func() {}}, limit: 1}
	defer conn.Close()
	if err := CloseWrite(conn); err != nil {
		t.Fatal(err)
	}
	if err := <-eof; err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn) // the read side is still open
	if string(b) != "still open" {
		t.Fatalf("after CloseWrite read %q", b)
	}
	a, b2 := net.Pipe()
	defer a.Close()
	defer b2.Close()
	if err := CloseWrite(a); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("CloseWrite on a pipe: %v", err)
	}
}
