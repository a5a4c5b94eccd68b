package listener

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
)

// h2cServer serves h on 127.0.0.1 with HTTP/1.1 and prior-knowledge
// HTTP/2 until the test ends and returns its address.
func h2cServer(t *testing.T, h http.Handler) string {
	t.Helper()
	pr := new(http.Protocols)
	pr.SetHTTP1(true)
	pr.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: pr}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// TestExtendedConnectSettings: the process's HTTP/2 servers advertise
// SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (package xconnect), and the
// environment no longer carries the switch once this package initialised.
func TestExtendedConnectSettings(t *testing.T) {
	if v := os.Getenv("GODEBUG"); strings.Contains(v, "http2xconnect=1") {
		t.Errorf("GODEBUG=%q still holds the switch children would inherit", v)
	}
	addr := h2cServer(t, http.NotFoundHandler())
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no SETTINGS from the server: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		if v, ok := sf.Value(http2.SettingEnableConnectProtocol); !ok || v != 1 {
			t.Fatalf("server SETTINGS: ENABLE_CONNECT_PROTOCOL %d (present %v), want 1", v, ok)
		}
		return
	}
}

func TestFromExtendedConnect(t *testing.T) {
	for _, tc := range []struct {
		name, protocol string
		hdr            http.Header
		wantKey        bool // the proxy made a Sec-WebSocket-Key
		wantVersion    string
	}{
		{name: "websocket without key", protocol: "websocket", hdr: http.Header{}, wantKey: true, wantVersion: "13"},
		{name: "websocket with the client's key", protocol: "websocket",
			hdr: http.Header{"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}, wantVersion: "13"},
		{name: "keeps the client's version", protocol: "WebSocket", hdr: http.Header{"Sec-Websocket-Version": {"8"}}, wantKey: true, wantVersion: "8"},
		{name: "other protocol", protocol: "connect-ip", hdr: http.Header{"X-Keep": {"1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := io.NopCloser(strings.NewReader("tunnel bytes"))
			r := &http.Request{Method: http.MethodConnect, ProtoMajor: 2, Header: tc.hdr, Body: body, ContentLength: -1, URL: &url.URL{Path: "/chat"}}
			r.Header[":protocol"] = []string{tc.protocol}
			ri := &reqInfo{body: &countingBody{ReadCloser: body}}
			fromExtendedConnect(r, ri, tc.protocol)
			if r.Method != http.MethodGet || r.Body != http.NoBody || r.ContentLength != 0 {
				t.Errorf("request %s body %v length %d, want GET without a body", r.Method, r.Body, r.ContentLength)
			}
			if _, ok := r.Header[":protocol"]; ok {
				t.Error(":protocol left in the header")
			}
			if !isUpgrade(r) || r.Header.Get("Upgrade") != tc.protocol {
				t.Errorf("not an Upgrade to %q: %v", tc.protocol, r.Header)
			}
			if ri.xconnect != tc.protocol {
				t.Errorf("ri.xconnect %q", ri.xconnect)
			}
			if (ri.wsKey != "") != tc.wantKey || (tc.wantKey && r.Header.Get("Sec-Websocket-Key") != ri.wsKey) {
				t.Errorf("key: made %q, header %q, want made %v", ri.wsKey, r.Header.Get("Sec-Websocket-Key"), tc.wantKey)
			}
			if got := r.Header.Get("Sec-Websocket-Version"); got != tc.wantVersion {
				t.Errorf("Sec-WebSocket-Version %q, want %q", got, tc.wantVersion)
			}
			if b, _ := io.ReadAll(ri.body); string(b) != "tunnel bytes" {
				t.Errorf("the stream's bytes are not kept for the tunnel: %q", b)
			}
		})
	}
	// RFC 6455 §1.3's example.
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("wsAccept: %q", got)
	}
}

// upgradeReq is an HTTP/1.1 WebSocket Upgrade as forward builds it for
// the upstream.
func upgradeReq(t *testing.T, addr, path string) *http.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "echo.example:8080"
	req.Header = http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Sec-Websocket-Version": {"13"}}
	return req
}

// echoUpgraded writes p through the upgraded body, half-closes it
// (closeWrite, else the body's CloseWrite) and returns everything read
// back.
func echoUpgraded(t *testing.T, resp *http.Response, p string, closeWrite func() error) string {
	t.Helper()
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not writable", resp.Body)
	}
	if _, err := io.WriteString(rw, p); err != nil {
		t.Fatal(err)
	}
	if closeWrite == nil {
		cw, ok := resp.Body.(interface{ CloseWrite() error })
		if !ok {
			t.Fatalf("101 body %T cannot half-close", resp.Body)
		}
		closeWrite = cw.CloseWrite
	}
	if err := closeWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rw)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	rw.Close()
	return string(b)
}

// TestRoundTripXConnect sends an HTTP/1.1 Upgrade to an HTTP/2 upstream
// (a net/http h2c server, extended CONNECT on): it arrives as CONNECT with
// :protocol, without Upgrade/Connection, with the WebSocket fields and
// authority kept; the 200 comes back as 101 whose body is the stream, and
// CloseWrite is the END_STREAM the server reads as EOF. Other answers
// come back as they are.
func TestRoundTripXConnect(t *testing.T) {
	t.Parallel()
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.ProtoMajor != 2 || r.Method != http.MethodConnect || r.Header.Get(":protocol") != "websocket":
			http.Error(w, fmt.Sprintf("%s %s :protocol=%q", r.Proto, r.Method, r.Header.Get(":protocol")), http.StatusBadRequest)
		case len(r.Header["Upgrade"]) > 0 || len(r.Header["Connection"]) > 0:
			http.Error(w, "connection-specific fields", http.StatusBadRequest)
		case r.Host != "echo.example:8080" || r.Header.Get("Sec-WebSocket-Key") == "" || r.URL.Path == "/missing":
			http.NotFound(w, r)
		default:
			w.Header().Set("Sec-WebSocket-Accept", wsAccept(r.Header.Get("Sec-WebSocket-Key")))
			w.WriteHeader(http.StatusOK)
			_ = http.NewResponseController(w).Flush()
			all, _ := io.ReadAll(r.Body) // to END_STREAM
			_, _ = w.Write(bytes.ToUpper(all))
		}
	}))
	c := cluster.Static("outbound|8080||echo.example", addr)
	resp, err := roundTripXConnect(c.XC, c.Transport, upgradeReq(t, addr, "/ws"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("Connection") != "Upgrade" ||
		resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || resp.ProtoMajor != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("mapped answer: %d %s %v %q", resp.StatusCode, resp.Proto, resp.Header, b)
	}
	if got := echoUpgraded(t, resp, "ping over h2", nil); got != "PING OVER H2" {
		t.Fatalf("through the stream: %q", got)
	}

	resp, err = roundTripXConnect(c.XC, c.Transport, upgradeReq(t, addr, "/missing"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a refused stream: %d, want the upstream's 404", resp.StatusCode)
	}
}

// TestRoundTripXConnectFallback: an HTTP/2 upstream whose SETTINGS do not
// enable extended CONNECT gets no stream; the Upgrade goes as HTTP/1.1
// on a connection of its own.
func TestRoundTripXConnectFallback(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h2Conns := make(chan struct{}, 4)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveNoXConnect(conn, h2Conns)
		}
	}()
	addr := l.Addr().String()
	c := cluster.Static("outbound|8080||echo.example", addr)
	req := upgradeReq(t, addr, "/ws")
	var conn net.Conn // the HTTP/1.1 connection, half-closed as attemptState does
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conn = i.Conn }}))
	resp, err := roundTripXConnect(c.XC, c.Transport, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.ProtoMajor != 1 {
		t.Fatalf("fallback: %d %s", resp.StatusCode, resp.Proto)
	}
	if got := echoUpgraded(t, resp, "over h1", func() error { return cluster.CloseWrite(conn) }); got != "OVER H1" {
		t.Fatalf("through the HTTP/1.1 upgrade: %q", got)
	}
	select {
	case <-h2Conns:
	default:
		t.Fatal("the HTTP/2 connection was never tried")
	}
}

// serveNoXConnect is an upstream that speaks HTTP/2 without enabling
// extended CONNECT (empty SETTINGS, nothing else) and answers an HTTP/1.1
// WebSocket Upgrade by echoing upper-cased what it reads to EOF.
func serveNoXConnect(conn net.Conn, h2Conns chan<- struct{}) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	if p, err := br.Peek(len(http2.ClientPreface)); err == nil && string(p) == http2.ClientPreface {
		h2Conns <- struct{}{}
		_, _ = br.Discard(len(p))
		fr := http2.NewFramer(conn, br)
		if fr.WriteSettings() != nil {
			return
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				_ = fr.WriteSettingsAck()
			}
			if _, ok := f.(*http2.HeadersFrame); ok {
				return // a stream it never allowed
			}
		}
	}
	req, err := http.ReadRequest(br)
	if err != nil || req.Header.Get("Upgrade") != "websocket" {
		_, _ = io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
		return
	}
	fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		wsAccept(req.Header.Get("Sec-WebSocket-Key")))
	all, _ := io.ReadAll(br)
	_, _ = conn.Write(bytes.ToUpper(all))
}
