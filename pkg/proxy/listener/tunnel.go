package listener

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// Tunnel is a tcp_proxy tunneling_config (Istio's DestinationRule
// trafficPolicy.tunnel): the connection to the cluster's host (a forward
// proxy or an egress gateway, after the cluster's TLS, if any) first
// carries an HTTP/1.1 CONNECT request for Hostname, or with UsePost a POST
// to PostPath whose chunked body and response body carry the bytes; a 2xx
// answer opens the tunnel. HTTP/2 tunnels (a cluster with
// http2_protocol_options) are not made: the request is HTTP/1.1 anyway.
type Tunnel struct {
	Hostname string // host:port the tunnel leads to
	UsePost  bool
	PostPath string // default "/"
	// Headers are headers_to_add with literal values.
	Headers http.Header
}

// CompileTunnel returns tp's tunneling_config, nil without one. Header
// values with Envoy's %...% substitutions are sent as written.
func CompileTunnel(tp *tcpv3.TcpProxy) *Tunnel {
	tc := tp.GetTunnelingConfig()
	if tc == nil {
		return nil
	}
	t := &Tunnel{Hostname: tc.GetHostname(), UsePost: tc.GetUsePost(), PostPath: tc.GetPostPath()}
	if t.PostPath == "" {
		t.PostPath = "/"
	}
	for _, h := range tc.GetHeadersToAdd() {
		if t.Headers == nil {
			t.Headers = http.Header{}
		}
		t.Headers.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	return t
}

// ErrTunnel marks a tunnel the upstream refused (a non-2xx answer) or an
// exchange that failed before the tunnel opened.
var ErrTunnel = errors.New("tunnel not established")

// Open sends the tunnel request on up and waits for the answer (bounded by
// ctx and 10 s). It returns the connection that carries the tunneled
// bytes: up itself for CONNECT (wrapped to replay bytes the proxy sent
// right after its answer, if any), a chunked request body and the
// response body for POST. On error
// up is left to the caller to close.
func (t *Tunnel) Open(ctx context.Context, up net.Conn) (net.Conn, error) {
	method, target := http.MethodConnect, t.Hostname
	if t.UsePost {
		method, target = http.MethodPost, t.PostPath
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, target, t.Hostname)
	if t.UsePost {
		b.WriteString("Transfer-Encoding: chunked\r\n")
	}
	for k, vs := range t.Headers {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	deadline := time.Now().Add(10 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = up.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = up.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := io.WriteString(up, b.String()); err != nil {
		return nil, fmt.Errorf("%w: send %s %s: %w", ErrTunnel, method, target, err)
	}
	br := bufio.NewReader(up)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		return nil, fmt.Errorf("%w: read the answer to %s %s: %w", ErrTunnel, method, target, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s %s answered %s", ErrTunnel, method, target, resp.Status)
	}
	if !stop() {
		return nil, fmt.Errorf("%w: %w", ErrTunnel, ctx.Err())
	}
	_ = up.SetDeadline(time.Time{})
	if t.UsePost {
		return &postTunnel{Conn: up, body: resp.Body}, nil
	}
	if br.Buffered() == 0 {
		return up, nil // nothing read past the answer: the connection itself
	}
	return &tunnelConn{Conn: up, r: br}, nil
}

// tunnelConn is an opened CONNECT tunnel: reads drain the bytes buffered
// while reading the answer first.
type tunnelConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *tunnelConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the upstream connection.
func (c *tunnelConn) CloseWrite() error { return closeWriteConn(c.Conn) }

// NetConn returns the upstream connection (its TLS state, for telemetry).
func (c *tunnelConn) NetConn() net.Conn { return c.Conn }

// postTunnel is an opened POST tunnel: writes are chunks of the request
// body, reads the response body; CloseWrite ends the request body.
type postTunnel struct {
	net.Conn
	body io.ReadCloser
}

func (c *postTunnel) Read(p []byte) (int, error) { return c.body.Read(p) }

func (c *postTunnel) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	buf := make([]byte, 0, len(p)+16)
	buf = strconv.AppendInt(buf, int64(len(p)), 16)
	buf = append(buf, "\r\n"...)
	buf = append(buf, p...)
	buf = append(buf, "\r\n"...)
	if _, err := c.Conn.Write(buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseWrite sends the last chunk: the request body ends, the response
// body goes on until the upstream ends it.
func (c *postTunnel) CloseWrite() error {
	_, err := io.WriteString(c.Conn, "0\r\n\r\n")
	return err
}

// NetConn returns the upstream connection.
func (c *postTunnel) NetConn() net.Conn { return c.Conn }

func closeWriteConn(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}
