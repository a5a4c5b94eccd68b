package wasm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// Errors a stream reports.
var (
	errPauseTimeout     = errors.New("paused stream not resumed in time")
	errRequestTooLarge  = errors.New("request body over the buffer limit")
	errResponseTooLarge = errors.New("response body over the buffer limit")
	errStreamFailed     = errors.New("plugin failed earlier on this stream")
)

// Local reply details for buffer overflows (Envoy's).
const (
	detailsRequestTooLarge  = "request_payload_too_large"
	detailsResponseTooLarge = "response_payload_too_large"
)

// stream is one HTTP context: a request bound to one instance from its
// request headers to proxy_on_delete.
//
// Concurrency: the handler goroutine drives the stream (phase callbacks,
// body reads and writes). Guest calls made for other reasons (an http call
// response, a tick) reach it through proxy_set_effective_context and may
// touch its headers, bodies, local reply or resume it only while waiting
// is set; waiting is guarded by in.mu and set in the same critical section
// as the guest call that paused the stream.
type stream struct {
	p     *Plugin
	in    *instance
	id    uint32
	r     *http.Request
	start time.Time

	resume  chan struct{} // continue_stream, send_local_response, close_stream
	waiting bool          // guarded by in.mu
	// mustWait: the last phase call paused the stream (handler goroutine only).
	mustWait bool
	local    *localReply
	reset    bool // proxy_close_stream
	dead     bool // a guest call failed: no more calls on this stream
	ended    bool

	// forwarded: the request headers went upstream; reqPairs is their
	// snapshot for later phases.
	forwarded bool
	reqPairs  [][2]string
	reqBuf    []byte // request body held for the plugin
	reqMod    bool   // the plugin rewrote request body bytes

	rw   *respWriter
	info *listener.StreamInfo // for the log phase
}

// hasLater reports whether the plugin has callbacks after request headers.
func (in *instance) hasLater() bool {
	for _, n := range []string{"proxy_on_request_body", "proxy_on_request_trailers", "proxy_on_response_headers",
		"proxy_on_response_body", "proxy_on_response_trailers"} {
		if in.has(n) {
			return true
		}
	}
	return false
}

// phase calls a stream callback; a non-zero (stop) result with mayWait
// marks the stream waiting in the same critical section.
func (s *stream) phase(name string, mayWait bool, args ...uint64) (uint64, error) {
	if s.dead {
		return 0, errStreamFailed
	}
	st := &callState{p: s.p, inst: s.in, s: s, origin: s}
	ctx, cancel := context.WithTimeout(context.Background(), s.p.e.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, stateKey{}, st)
	in := s.in
	in.mu.Lock()
	r, err := in.call(ctx, name, args...)
	s.mustWait = err == nil && r != 0 && mayWait && s.local == nil && !s.reset
	s.waiting = s.mustWait
	in.mu.Unlock()
	if err != nil {
		s.dead = true
		s.p.Failures.Add(1)
		s.p.breakInstance(in)
		return 0, err
	}
	return r, nil
}

// wait blocks a paused stream until the plugin continues it (directly or
// from an http call response), answers it, or the pause times out.
func (s *stream) wait(ctx context.Context) error {
	defer func() {
		s.in.mu.Lock()
		s.waiting = false
		s.in.mu.Unlock()
	}()
	t := time.NewTimer(s.p.e.pauseTimeout)
	defer t.Stop()
	select {
	case <-s.resume:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errPauseTimeout
	}
}

// signal resumes a waiting stream (from a guest call holding in.mu); a
// stream that is not paused ignores it.
func (s *stream) signal() {
	if !s.waiting {
		return
	}
	select {
	case s.resume <- struct{}{}:
	default:
	}
}

// FilterResponse runs the request phases (listener.ResponseFilter): request
// headers, and request body when the plugin wants it (buffered while the
// plugin pauses, up to the buffer limit: 413 beyond). Unless the plugin
// answered, the response goes through a writer that runs the response
// phases; done runs the log phase.
func (p *Plugin) FilterResponse(w http.ResponseWriter, r *http.Request) (func(http.ResponseWriter) http.ResponseWriter, func(listener.StreamInfo), bool) {
	in, err := p.bind(r.Context())
	if errors.Is(err, errPluginClosed) {
		return nil, nil, false
	}
	if err != nil {
		return nil, nil, p.fail(w, err)
	}
	s, err := p.openStream(in, r)
	if err != nil {
		return nil, nil, p.fail(w, err)
	}
	id := uint64(s.id)
	noBody := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	eos := uint64(0)
	if noBody {
		eos = 1
	}
	_, err = s.phase("proxy_on_request_headers", true, id, uint64(len(requestPairs(r))), eos)
	if s.mustWait {
		err = s.wait(r.Context())
	}
	switch {
	case err != nil && s.dead:
		s.abandon()
		return nil, nil, p.fail(w, err)
	case err != nil && p.fail(w, err): // e.g. the pause timed out
		return nil, s.done, true
	}
	if s.answered(w) {
		return nil, s.done, true
	}
	if !noBody && in.has("proxy_on_request_body") {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			// A gRPC stream may wait for the response before sending: its
			// body streams through the plugin once the request went up.
			r.Body = &bodyReader{s: s, src: r.Body, chunk: make([]byte, 32<<10)}
			r.ContentLength = -1
			r.Header.Del("Content-Length")
		} else if handled := s.requestBody(w); handled {
			return nil, s.done, true
		}
	}
	s.forwarded = true
	if in.hasLater() || in.has("proxy_on_log") {
		s.reqPairs = requestPairs(r)
	}
	var wrap func(http.ResponseWriter) http.ResponseWriter
	if (in.has("proxy_on_response_headers") || in.has("proxy_on_response_body") || in.has("proxy_on_response_trailers")) &&
		r.Method != http.MethodConnect && !strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
		wrap = func(inner http.ResponseWriter) http.ResponseWriter {
			s.rw = &respWriter{s: s, inner: inner}
			return s.rw
		}
	}
	return wrap, s.done, false
}

// LogOnly is the plugin's part in a request a filter before it answered:
// a stream context is created and, after the local reply, the log phase
// runs (proxy_on_done, proxy_on_log, proxy_on_delete), as Envoy creates a
// context for the log of a request whose filter chain was cut short. nil
// when the plugin exports no log phase.
func (p *Plugin) LogOnly(r *http.Request) func(listener.StreamInfo) {
	in, err := p.bind(r.Context())
	if err != nil {
		return nil
	}
	if !in.has("proxy_on_log") && !in.has("proxy_on_done") {
		p.unbind(in)
		return nil
	}
	s, err := p.openStream(in, r)
	if err != nil {
		p.e.log.Warn("wasm plugin failed", "plugin", p.cfg.Name, "phase", "proxy_on_context_create", "err", err)
		return nil
	}
	s.reqPairs = requestPairs(r)
	return s.finish
}

// openStream registers a stream for r on the bound instance in and runs
// proxy_on_context_create; on an error the stream is ended (and in
// released).
func (p *Plugin) openStream(in *instance, r *http.Request) (*stream, error) {
	s := &stream{p: p, in: in, r: r, start: time.Now(), resume: make(chan struct{}, 1)}
	in.mu.Lock()
	in.nextID++
	s.id = in.nextID
	in.streams[s.id] = s
	in.mu.Unlock()
	if _, err := s.phase("proxy_on_context_create", false, uint64(s.id), rootContextID); err != nil {
		s.end()
		return nil, err
	}
	return s, nil
}

var _ listener.LogFilter = (*Plugin)(nil)

// answered writes the plugin's local reply (or resets the stream for
// proxy_close_stream); true when the request is answered.
func (s *stream) answered(w http.ResponseWriter) bool {
	if s.reset {
		s.finish(listener.StreamInfo{ResponseFlags: "-"})
		panic(http.ErrAbortHandler)
	}
	if s.local == nil {
		return false
	}
	writeLocal(w, s.local)
	return true
}

func writeLocal(w http.ResponseWriter, lr *localReply) {
	h := w.Header()
	for _, kv := range lr.headers {
		h.Add(kv[0], kv[1])
	}
	if lr.details != "" {
		h.Set(DetailsHeader, lr.details)
	}
	if h.Get("Content-Type") == "" && len(lr.body) > 0 {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(lr.body)))
	w.WriteHeader(lr.status)
	_, _ = w.Write(lr.body)
}

// requestBody reads the request body through proxy_on_request_body until
// the plugin continues or the body ends, before the request goes upstream
// (so a body over the buffer limit gets a 413 and request trailers can
// still change headers or answer); the rest streams through bodyReader. It
// reports whether the request was answered.
func (s *stream) requestBody(w http.ResponseWriter) bool {
	r := s.r
	src := r.Body
	chunk := make([]byte, 32<<10)
	var out []byte
	eof := false
	for {
		n, err := src.Read(chunk)
		s.reqBuf = append(s.reqBuf, chunk[:n]...)
		if err != nil && !errors.Is(err, io.EOF) {
			s.local = &localReply{status: http.StatusBadRequest, details: "downstream_body_read_error", body: []byte("bad request body\n")}
			return s.answered(w)
		}
		eof = err != nil
		if len(s.reqBuf) > s.p.e.bufferLimit {
			s.local = &localReply{status: http.StatusRequestEntityTooLarge, details: detailsRequestTooLarge, body: []byte("Payload Too Large\n")}
			return s.answered(w)
		}
		if n == 0 && !eof {
			continue
		}
		act, perr := s.bodyPhase(eof)
		if perr != nil {
			if s.p.fail(w, perr) {
				return true
			}
			out, s.reqBuf = append(out, s.reqBuf...), nil // fail open: pass on what we hold
			break
		}
		if s.answered(w) {
			return true
		}
		if act == 0 || eof {
			out, s.reqBuf = append(out, s.reqBuf...), nil
			break
		}
	}
	br := &bodyReader{s: s, src: src, out: out, eof: eof, chunk: chunk}
	r.Body = br
	switch {
	case eof:
		r.ContentLength = int64(len(out))
		if r.Header.Get("Content-Length") != "" {
			r.Header.Set("Content-Length", strconv.Itoa(len(out)))
		}
	case s.reqMod:
		r.ContentLength = -1
		r.Header.Del("Content-Length")
	}
	return false
}

// bodyPhase calls proxy_on_request_body with what is held, and at the end
// of the body request trailers; a stop at the end waits for the plugin.
func (s *stream) bodyPhase(eof bool) (uint64, error) {
	eos := uint64(0)
	if eof {
		eos = 1
	}
	act, err := s.phase("proxy_on_request_body", eof, uint64(s.id), uint64(len(s.reqBuf)), eos)
	if err != nil {
		return 0, err
	}
	if eof && len(s.r.Trailer) > 0 && s.in.has("proxy_on_request_trailers") {
		if s.mustWait {
			if err := s.wait(s.r.Context()); err != nil {
				return 0, err
			}
			s.mustWait = false
		}
		if s.local != nil || s.reset {
			return act, nil
		}
		act, err = s.phase("proxy_on_request_trailers", true, uint64(s.id), uint64(len(headerList(s.r.Trailer, ""))))
		if err != nil {
			return 0, err
		}
	}
	if s.mustWait {
		if err := s.wait(s.r.Context()); err != nil {
			return 0, err
		}
	}
	return act, nil
}

// bodyReader streams the rest of the request body through
// proxy_on_request_body once the request went upstream.
type bodyReader struct {
	s     *stream
	src   io.ReadCloser
	out   []byte
	eof   bool
	err   error
	chunk []byte
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.out) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if b.eof {
			return 0, io.EOF
		}
		s := b.s
		n, err := b.src.Read(b.chunk)
		s.reqBuf = append(s.reqBuf, b.chunk[:n]...)
		if err != nil && !errors.Is(err, io.EOF) {
			b.err = err
			return 0, err
		}
		b.eof = err != nil
		if len(s.reqBuf) > s.p.e.bufferLimit {
			b.err = errRequestTooLarge
			return 0, b.err
		}
		if n == 0 && !b.eof {
			continue
		}
		act, perr := s.bodyPhase(b.eof)
		switch {
		case perr != nil && !s.p.cfg.FailOpen:
			b.err = fmt.Errorf("wasm plugin %q: %w", s.p.cfg.Name, perr)
			return 0, b.err
		case s.local != nil || s.reset: // too late to answer: reset
			b.err = fmt.Errorf("wasm plugin %q answered after the request went upstream", s.p.cfg.Name)
			return 0, b.err
		case perr != nil || act == 0 || b.eof:
			b.out, s.reqBuf = s.reqBuf, nil
		}
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

func (b *bodyReader) Close() error { return b.src.Close() }

// abandon ends a stream whose instance failed (no more guest calls).
func (s *stream) abandon() {
	s.dead = true
	s.end()
}

// end unregisters the stream and releases its instance.
func (s *stream) end() {
	if s.ended {
		return
	}
	s.ended = true
	s.in.mu.Lock()
	delete(s.in.streams, s.id)
	s.in.mu.Unlock()
	s.p.unbind(s.in)
}

// done finishes the response phases and runs the log phase (the
// listener calls it after the response).
func (s *stream) done(si listener.StreamInfo) {
	if s.ended {
		return
	}
	if s.rw != nil {
		s.rw.finish()
		if s.rw.status != 0 {
			si.ResponseCode = s.rw.status
		}
		if s.rw.details != "" {
			si.Details = s.rw.details
		}
	}
	s.finish(si)
	if s.reset {
		panic(http.ErrAbortHandler) // proxy_close_stream in a response phase
	}
}

// finish is the log phase: proxy_on_done, proxy_on_log, proxy_on_delete.
func (s *stream) finish(si listener.StreamInfo) {
	if s.ended {
		return
	}
	s.info = &si
	id := uint64(s.id)
	for _, fn := range []string{"proxy_on_done", "proxy_on_log", "proxy_on_delete"} {
		if _, err := s.phase(fn, false, id); err != nil {
			s.p.e.log.Warn("wasm plugin failed", "plugin", s.p.cfg.Name, "phase", fn, "err", err)
			break
		}
	}
	s.end()
}

// respWriter runs the response phases on what the handler writes.
// Headers go downstream at the first of: the first body chunk the plugin
// continues, a flush, the end; a plugin that stops response headers holds
// them until it continues. A body the plugin holds is buffered up to the
// buffer limit (beyond: 500 if the headers were not sent, else a reset).
type respWriter struct {
	s       *stream
	inner   http.ResponseWriter
	status  int // as the handler wrote it (0: nothing yet)
	sent    bool
	paused  bool // the plugin stopped the headers
	eos     bool // the response has no body
	fixed   bool // the handler sized the response (Content-Length)
	buf     []byte
	mod     bool // the plugin changed body bytes
	replace bool // a local reply replaced the response: drop the rest
	details string
	failed  bool // the plugin failed open: pass the rest through
}

func (rw *respWriter) Header() http.Header         { return rw.inner.Header() }
func (rw *respWriter) Unwrap() http.ResponseWriter { return rw.inner }

func (rw *respWriter) WriteHeader(code int) {
	if rw.status != 0 || rw.replace {
		return
	}
	if code < 200 { // informational: straight through
		rw.inner.WriteHeader(code)
		return
	}
	rw.status = code
	s := rw.s
	h := rw.inner.Header()
	rw.fixed = h.Get("Content-Length") != ""
	rw.eos = code == http.StatusNoContent || code == http.StatusNotModified || s.r.Method == http.MethodHead || h.Get("Content-Length") == "0"
	if !s.in.has("proxy_on_response_headers") {
		return
	}
	eos := uint64(0)
	if rw.eos {
		eos = 1
	}
	holdAll := rw.eos || !s.in.has("proxy_on_response_body") // a stop waits for the plugin now
	act, err := s.phase("proxy_on_response_headers", holdAll, uint64(s.id), uint64(len(responsePairs(rw.status, h))), eos)
	if s.mustWait {
		err = s.wait(s.r.Context())
	}
	if err != nil {
		rw.failure(err)
		return
	}
	if rw.answered() {
		return
	}
	rw.paused = act != 0 && !holdAll
	// Continued headers of a streamed (unsized) response go now; a sized
	// one waits for its first body chunk, so a plugin holding the whole
	// body gets an exact Content-Length.
	if !s.in.has("proxy_on_response_body") || !rw.paused && !rw.fixed && !rw.eos {
		rw.sendHeaders(false)
	}
}

// failure applies the fail policy to a response phase error.
func (rw *respWriter) failure(err error) {
	s := rw.s
	s.p.e.log.Warn("wasm plugin failed", "plugin", s.p.cfg.Name, "phase", "response", "fail_open", s.p.cfg.FailOpen, "err", err)
	if s.p.cfg.FailOpen || rw.sent {
		rw.failed = true
		rw.paused = false
		return
	}
	rw.replaceWith(&localReply{status: http.StatusServiceUnavailable, details: FailedDetails, body: []byte(FailedDetails + "\n")})
}

// answered replaces the response with the plugin's local reply.
func (rw *respWriter) answered() bool {
	s := rw.s
	if s.reset { // proxy_close_stream: drop the rest, abort in done
		rw.replace, rw.sent = true, true
		return true
	}
	if s.local == nil {
		return false
	}
	lr := s.local
	s.local = nil
	if rw.sent {
		s.p.e.log.Warn("wasm plugin sent a local reply after the response headers", "plugin", s.p.cfg.Name)
		return false
	}
	rw.replaceWith(lr)
	return true
}

func (rw *respWriter) replaceWith(lr *localReply) {
	h := rw.inner.Header()
	for k := range h {
		delete(h, k)
	}
	rw.status, rw.details = lr.status, lr.details
	writeLocal(rw.inner, lr)
	rw.sent, rw.replace, rw.buf = true, true, nil
}

func (rw *respWriter) sendHeaders(final bool) {
	if rw.sent {
		return
	}
	rw.sent = true
	h := rw.inner.Header()
	switch {
	case final && !rw.eos:
		h.Set("Content-Length", strconv.Itoa(len(rw.buf)))
	case rw.mod:
		h.Del("Content-Length")
	}
	rw.inner.WriteHeader(rw.status)
}

func (rw *respWriter) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.replace {
		return len(p), nil
	}
	s := rw.s
	if rw.failed || !s.in.has("proxy_on_response_body") {
		rw.sendHeaders(false)
		return rw.inner.Write(p)
	}
	rw.buf = append(rw.buf, p...)
	if len(rw.buf) > s.p.e.bufferLimit {
		if !rw.sent {
			rw.replaceWith(&localReply{status: http.StatusInternalServerError, details: detailsResponseTooLarge, body: []byte("Internal Server Error\n")})
		} else { // too late for a 500: drop the rest and reset the stream in done
			rw.replace, rw.buf, rw.details = true, nil, detailsResponseTooLarge
			s.reset = true
		}
		return 0, errResponseTooLarge
	}
	act, err := s.phase("proxy_on_response_body", false, uint64(s.id), uint64(len(rw.buf)), 0)
	if err != nil {
		rw.failure(err)
		if rw.replace {
			return len(p), nil
		}
		return len(p), rw.flushBody(false)
	}
	if rw.answered() {
		return len(p), nil
	}
	if act == 0 {
		rw.paused = false
		return len(p), rw.flushBody(false)
	}
	return len(p), nil
}

func (rw *respWriter) flushBody(final bool) error {
	rw.sendHeaders(final)
	if len(rw.buf) == 0 {
		return nil
	}
	b := rw.buf
	rw.buf = nil
	_, err := rw.inner.Write(b)
	return err
}

// FlushError sends what may go (for streaming responses); held headers
// and a held body stay.
func (rw *respWriter) FlushError() error {
	if rw.replace || rw.paused || len(rw.buf) > 0 || rw.status == 0 {
		return nil
	}
	rw.sendHeaders(false)
	return http.NewResponseController(rw.inner).Flush()
}

// finish delivers the end of the response: proxy_on_response_body with
// end_of_stream, response trailers, then what is held goes downstream.
func (rw *respWriter) finish() {
	if rw.replace || rw.status == 0 {
		return
	}
	s := rw.s
	if !rw.failed && !rw.eos && s.in.has("proxy_on_response_body") {
		_, err := s.phase("proxy_on_response_body", true, uint64(s.id), uint64(len(rw.buf)), 1)
		if s.mustWait {
			err = s.wait(s.r.Context())
		}
		if err != nil {
			rw.failure(err)
		} else if rw.answered() {
			return
		}
	}
	if !rw.failed && s.in.has("proxy_on_response_trailers") {
		if n := len(headerList(rw.inner.Header(), http.TrailerPrefix)); n > 0 {
			_, err := s.phase("proxy_on_response_trailers", true, uint64(s.id), uint64(n))
			if s.mustWait {
				err = s.wait(s.r.Context())
			}
			if err != nil {
				rw.failure(err)
			} else if rw.answered() {
				return
			}
		}
	}
	if rw.replace {
		return
	}
	_ = rw.flushBody(true)
}
