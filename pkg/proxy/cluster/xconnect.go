package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/http2"
)

// ErrExtendedConnectUnsupported means the upstream's HTTP/2 connection did
// not enable RFC 8441 extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL=1
// in its first SETTINGS frame), so the stream was not sent.
var ErrExtendedConnectUnsupported = errors.New("upstream HTTP/2 peer does not enable extended CONNECT")

// xnetNotSupported is the text of golang.org/x/net/http2's unexported
// error for that case (TestExtendedConnectUnsupportedPeer pins it).
const xnetNotSupported = "net/http: extended connect not supported by peer"

// XConnect sends RFC 8441 extended CONNECT requests (`:method CONNECT`,
// `:protocol` from the request's ":protocol" header) over prior-knowledge
// HTTP/2 connections of its own, dialed as the cluster's h2c transport
// dials (circuit-breaker connection limit, PROXY protocol header, mutual
// TLS or TLS origination). net/http's Transport refuses a ":protocol"
// field, so these streams use golang.org/x/net/http2's client; its
// connections are pooled and shared by the streams to one host. It is
// safe for concurrent use.
type XConnect struct {
	t *http2.Transport
}

func newXConnect(dial dialFunc) *XConnect {
	return &XConnect{t: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
		IdleConnTimeout: 90 * time.Second,
	}}
}

// RoundTrip sends req, an extended CONNECT request whose Body is the
// tunnel's client-to-server bytes, and returns the response, whose Body
// is the server-to-client bytes. An upstream connection that does not
// enable extended CONNECT fails with ErrExtendedConnectUnsupported before
// anything is sent on it.
func (x *XConnect) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := x.t.RoundTrip(req)
	if err != nil && err.Error() == xnetNotSupported {
		return nil, fmt.Errorf("%s: %w", req.URL.Host, ErrExtendedConnectUnsupported)
	}
	return resp, err
}

// CloseIdleConnections closes the pooled connections no stream uses.
func (x *XConnect) CloseIdleConnections() {
	if x != nil {
		x.t.CloseIdleConnections()
	}
}

// XConnectPool returns the extended CONNECT transport for r, the
// cluster's own or, for a PROXY protocol cluster, that of r's downstream
// connection (as Pools).
func (c *Cluster) XConnectPool(r *http.Request) *XConnect {
	if c.pp == nil {
		return c.XC
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	ds, ok := downstreamOf(r.RemoteAddr, local)
	if !ok {
		return c.XC
	}
	return c.pp.get(ds).xc
}

// CloseWrite half-closes conn for writing (TCP FIN, or a TLS close_notify
// inside mutual TLS), looking through the cluster's connection wrappers;
// errors.ErrUnsupported when conn cannot be half-closed.
func CloseWrite(conn net.Conn) error {
	for conn != nil {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		switch c := conn.(type) {
		case *CountedConn:
			conn = c.Conn
		case *limitedConn:
			conn = c.Conn
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return errors.ErrUnsupported
		}
	}
	return errors.ErrUnsupported
}
