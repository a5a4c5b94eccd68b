package listener

import (
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 6455 §4.2.2 defines Sec-WebSocket-Accept with SHA-1
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/internal/xconnect"
)

// RFC 8441 extended CONNECT, the HTTP/2 form of an HTTP/1.1 Upgrade (e.g.
// WebSocket): `:method CONNECT` with `:protocol websocket`, answered 200
// where HTTP/1.1 answers 101, the tunnel's bytes in the stream's DATA
// frames. The proxy's HTTP/2 servers accept it (package xconnect turns it
// on in net/http); a request is turned into the HTTP/1.1 Upgrade it stands
// for when it arrives (fromExtendedConnect), routed and filtered as one,
// and forwarded as an HTTP/1.1 Upgrade or, to an HTTP/2 cluster, as an
// extended CONNECT again (see attemptXConnect). Envoy does the same
// (http2_protocol_options.allow_connect, "WebSocket over HTTP/2 hops").

func init() {
	// net/http and x/net/http2 read the switch in their initialisers,
	// which ran before this package's: the environment can go back to
	// what the process was given.
	xconnect.Restore()
}

// fromExtendedConnect turns an extended CONNECT request (RFC 8441 §4) into
// the HTTP/1.1 Upgrade request it stands for, as Envoy's
// transformUpgradeRequestFromH2toH1: method GET, `Upgrade: PROTOCOL`,
// `Connection: Upgrade`. The stream's DATA frames are the tunnel, not a
// request body: they stay in ri.body (the counting wrapper) for
// upgradeStream, and the request itself has none. A WebSocket request
// without Sec-WebSocket-Key (RFC 8441 §5 drops the key/accept exchange) gets
// one, checked against the answer's Sec-WebSocket-Accept in upgradeStream,
// so that an HTTP/1.1 server completes its handshake.
func fromExtendedConnect(r *http.Request, ri *reqInfo, protocol string) {
	r.Method = http.MethodGet
	delete(r.Header, ":protocol")
	r.Header["Upgrade"] = []string{protocol}
	r.Header["Connection"] = []string{"Upgrade"}
	delete(r.Header, "Content-Length")
	r.ContentLength = 0
	if ri.body == nil {
		ri.body = &countingBody{ReadCloser: http.NoBody}
	}
	r.Body = http.NoBody
	ri.xconnect = protocol
	if strings.EqualFold(protocol, "websocket") && len(r.Header["Sec-Websocket-Key"]) == 0 {
		var k [16]byte
		_, _ = rand.Read(k[:])
		ri.wsKey = base64.StdEncoding.EncodeToString(k[:])
		r.Header["Sec-Websocket-Key"] = []string{ri.wsKey}
		if len(r.Header["Sec-Websocket-Version"]) == 0 {
			r.Header["Sec-Websocket-Version"] = []string{"13"}
		}
	}
}

// wsAccept is the Sec-WebSocket-Accept value for key (RFC 6455 §4.2.2).
func wsAccept(key string) string {
	h := sha1.New() //nolint:gosec // defined by RFC 6455
	_, _ = io.WriteString(h, key)
	_, _ = io.WriteString(h, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// upgradeStream completes an extended CONNECT stream whose upstream
// answered 101: the client gets 200 (RFC 8441 §5, Envoy's
// transformUpgradeResponseFromH1toH2: Upgrade and Connection dropped), then
// the stream's DATA frames go upstream and the upstream bytes come back as
// flushed DATA frames. The client's END_STREAM half-closes the upstream
// connection; the upstream closing ends the stream (the handler returns).
func (h *Handler) upgradeStream(w *countingWriter, r *http.Request, ri *reqInfo, resp *http.Response, up io.ReadWriteCloser) {
	hdr := w.Header()
	delete(hdr, "Upgrade")
	delete(hdr, "Connection")
	if ri.wsKey != "" { // the proxy's own key: its answer is the proxy's to check
		if v := resp.Header["Sec-Websocket-Accept"]; len(v) != 1 || v[0] != wsAccept(ri.wsKey) {
			clear(hdr)
			h.localReply(w, r, ri, http.StatusBadGateway, "", "upgrade_failed: invalid Sec-WebSocket-Accept")
			return
		}
		delete(hdr, "Sec-Websocket-Accept")
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	// The stream's bytes count in ri.body (countingBody); the response's
	// in w.
	pipe(r.Context(), &h2Stream{body: ri.body, w: w, rc: rc}, up, nil)
}

// roundTripXConnect sends req, an HTTP/1.1 Upgrade request for an
// HTTP/2 upstream, as the extended CONNECT stream it maps to (RFC 8441 §5,
// Envoy's transformUpgradeRequestFromH1toH2): `:method CONNECT`,
// `:protocol` the Upgrade value, without Upgrade and Connection; the
// other fields (Sec-WebSocket-Key, -Version, -Protocol, ...) as they are.
// A 200 answer comes back as the 101 it stands for (Upgrade and
// Connection set again, Envoy's transformUpgradeResponseFromH2toH1),
// whose body reads the stream's DATA frames and writes the request's
// (CloseWrite ends the request side); any other answer comes back as it
// is.
//
// An upstream connection that did not enable extended CONNECT
// (SETTINGS_ENABLE_CONNECT_PROTOCOL) gets nothing: the request goes as the
// HTTP/1.1 Upgrade it is through h1 instead, on a connection of its own.
// Envoy sends the stream anyway and fails it (503) when the peer refuses
// it; an Istio sidecar's inbound listener, which does not allow extended
// CONNECT but accepts HTTP/1.1, gets the WebSocket this way.
func roundTripXConnect(xc *cluster.XConnect, h1 http.RoundTripper, req *http.Request) (*http.Response, error) {
	hdr := req.Header
	upg := hdr["Upgrade"]
	if len(upg) == 0 {
		return h1.RoundTrip(req)
	}
	protocol := upg[0]
	pr, pw := io.Pipe()
	x := *req
	x.Method = http.MethodConnect
	x.Body, x.GetBody, x.ContentLength = pr, nil, 0
	xh := make(http.Header, len(hdr)+1)
	for k, v := range hdr {
		if k != "Upgrade" && k != "Connection" {
			xh[k] = v
		}
	}
	xh[":protocol"] = []string{protocol}
	x.Header = xh
	resp, err := xc.RoundTrip(&x)
	if errors.Is(err, cluster.ErrExtendedConnectUnsupported) {
		pw.Close()
		return h1.RoundTrip(req) // req still has its Upgrade and Connection

	}
	if err != nil {
		pw.CloseWithError(err)
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		pw.Close() // nothing to tunnel
		return resp, nil
	}
	resp.StatusCode, resp.Status = http.StatusSwitchingProtocols, "101 Switching Protocols"
	resp.Header["Upgrade"] = []string{protocol}
	resp.Header["Connection"] = []string{"Upgrade"}
	resp.ContentLength = -1
	resp.Body = &xStream{ReadCloser: resp.Body, pw: pw}
	return resp, nil
}

// xStream is an established extended CONNECT stream as the body of the
// 101 response it was mapped to: reads are the response's DATA frames,
// writes the request's.
type xStream struct {
	io.ReadCloser
	pw *io.PipeWriter
}

func (s *xStream) Write(p []byte) (int, error) { return s.pw.Write(p) }

// CloseWrite ends the request side of the stream (END_STREAM).
func (s *xStream) CloseWrite() error { return s.pw.Close() }

// Close ends both sides (RST_STREAM when the server's side is still open).
func (s *xStream) Close() error {
	_ = s.pw.Close()
	return s.ReadCloser.Close()
}
