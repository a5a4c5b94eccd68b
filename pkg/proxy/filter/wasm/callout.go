package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// calloutResponse is what proxy_on_http_call_response may read: the
// HttpCallResponseHeaders/Trailers maps and the HttpCallResponseBody
// buffer (all empty when the call failed).
type calloutResponse struct {
	headers, trailers [][2]string
	body              []byte
}

// hHTTPCall is proxy_http_call(upstream, headers, body, trailers,
// timeout_ms, token_ptr): it starts the request to the named cluster and
// returns a token; proxy_on_http_call_response(root context, token, ...)
// follows on the same instance, with no headers when the call failed or
// timed out.
func (e *Engine) hHTTPCall(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	mem := m.Memory()
	up, ok1 := mem.Read(uint32(a[0]), uint32(a[1]))
	hb, ok2 := mem.Read(uint32(a[2]), uint32(a[3]))
	body, ok3 := mem.Read(uint32(a[4]), uint32(a[5]))
	tb, ok4 := mem.Read(uint32(a[6]), uint32(a[7]))
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return statusInvalidMemory
	}
	hs, ok := parsePairs(hb)
	if !ok {
		return statusBadArgument
	}
	ts, ok := parsePairs(tb)
	if !ok {
		return statusBadArgument
	}
	caller := e.caller.Load()
	if caller == nil || len(up) == 0 {
		return statusBadArgument
	}
	req, err := calloutRequest(hs, ts, body)
	if err != nil {
		e.log.Warn("wasm proxy_http_call refused", "plugin", st.p.cfg.Name, "err", err)
		return statusBadArgument
	}
	timeout := time.Duration(uint32(a[8])) * time.Millisecond
	if timeout == 0 {
		timeout = DefaultHTTPCallTimeout
	}
	token := st.p.token.Add(1)
	if s := wr32(m, a[9], token); s != statusOK {
		return s
	}
	go st.p.httpCall(st.inst, *caller, token, string(up), req, timeout)
	return statusOK
}

// calloutRequest builds the request from the call's pairs (:method, :path
// and :authority are required, as in Envoy).
func calloutRequest(hs, ts [][2]string, body []byte) (*http.Request, error) {
	var method, path, authority string
	h := http.Header{}
	for _, p := range hs {
		switch strings.ToLower(p[0]) {
		case ":method":
			method = p[1]
		case ":path":
			path = p[1]
		case ":authority":
			authority = p[1]
		case ":scheme":
		default:
			h.Add(p[0], p[1])
		}
	}
	if method == "" || path == "" || authority == "" {
		return nil, errors.New("headers need :method, :path and :authority")
	}
	req, err := http.NewRequest(method, path, bytes.NewReader(append([]byte(nil), body...)))
	if err != nil {
		return nil, fmt.Errorf(":path %q: %w", path, err)
	}
	req.Header, req.Host, req.ContentLength = h, authority, int64(len(body))
	if len(body) == 0 {
		req.Body = http.NoBody
	}
	if len(ts) > 0 {
		req.Trailer = http.Header{}
		for _, p := range ts {
			req.Trailer.Add(p[0], p[1])
		}
	}
	return req, nil
}

// httpCall runs one callout and delivers its response to the root context
// of the instance that made it.
func (p *Plugin) httpCall(in *instance, caller HTTPCaller, token uint32, cluster string, req *http.Request, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	cr := &calloutResponse{}
	resp, err := caller(ctx, cluster, req)
	if err == nil {
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, int64(p.e.bufferLimit)+1))
		resp.Body.Close()
		switch {
		case rerr != nil:
			err = rerr
		case len(b) > p.e.bufferLimit:
			err = errors.New("response body over the buffer limit")
		default:
			cr.headers = append([][2]string{{":status", strconv.Itoa(resp.StatusCode)}}, headerList(resp.Header, "")...)
			cr.trailers = headerList(resp.Trailer, "")
			cr.body = b
		}
	}
	if err != nil {
		p.e.log.Info("wasm http call failed", "plugin", p.cfg.Name, "cluster", cluster, "err", err)
	}
	if p.ctx.Err() != nil { // plugin closed
		return
	}
	p.mu.Lock()
	broken := in.broken
	p.mu.Unlock()
	if broken {
		return
	}
	_, err = in.guest(&callState{p: p, inst: in, call: cr}, "proxy_on_http_call_response",
		rootContextID, uint64(token), uint64(len(cr.headers)), uint64(len(cr.body)), uint64(len(cr.trailers)))
	if err != nil {
		p.e.log.Warn("wasm plugin failed in proxy_on_http_call_response", "plugin", p.cfg.Name, "err", err)
	}
}
