package wasm

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// proxy-wasm status codes.
const (
	statusOK            = 0
	statusNotFound      = 1
	statusBadArgument   = 2
	statusInvalidMemory = 6
	statusEmpty         = 7
	statusCasMismatch   = 8
	statusUnimplemented = 12
)

// Header map types (ABI 0.2.1).
const (
	mapRequestHeaders           = 0
	mapRequestTrailers          = 1
	mapResponseHeaders          = 2
	mapResponseTrailers         = 3
	mapHTTPCallResponseHeaders  = 6
	mapHTTPCallResponseTrailers = 7
)

// Buffer types (ABI 0.2.1).
const (
	bufRequestBody          = 0
	bufResponseBody         = 1
	bufHTTPCallResponseBody = 4
	bufVMConfiguration      = 6
	bufPluginConfiguration  = 7
)

var i32, i64 = api.ValueTypeI32, api.ValueTypeI64

type hostFn func(ctx context.Context, m api.Module, st *callState, a []uint64) uint32

func (e *Engine) instantiateHost(ctx context.Context) error {
	b := e.rt.NewHostModuleBuilder("env")
	def := func(name string, params []api.ValueType, fn hostFn) {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, stack []uint64) {
			st, _ := ctx.Value(stateKey{}).(*callState)
			if st == nil {
				stack[0] = statusNotFound
				return
			}
			stack[0] = uint64(fn(ctx, m, st, stack))
		}), params, []api.ValueType{i32}).Export(name)
	}
	n := func(k int) []api.ValueType {
		p := make([]api.ValueType, k)
		for i := range p {
			p[i] = i32
		}
		return p
	}
	unimplemented := func(context.Context, api.Module, *callState, []uint64) uint32 { return statusUnimplemented }
	def("proxy_log", n(3), e.hLog)
	def("proxy_get_log_level", n(1), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		return wr32(m, a[0], 1)
	})
	def("proxy_get_header_map_pairs", n(3), e.hGetPairs)
	def("proxy_get_header_map_size", n(2), func(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
		ps, ok := headerPairs(st, uint32(a[0]))
		if !ok {
			return statusNotFound
		}
		return wr32(m, a[1], uint32(len(serializePairs(ps))))
	})
	def("proxy_get_header_map_value", n(5), e.hGetValue)
	def("proxy_add_header_map_value", n(5), func(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
		return setHeader(m, st, a, "add")
	})
	def("proxy_replace_header_map_value", n(5), func(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
		return setHeader(m, st, a, "replace")
	})
	def("proxy_remove_header_map_value", n(3), func(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
		return setHeader(m, st, []uint64{a[0], a[1], a[2], 0, 0}, "remove")
	})
	def("proxy_set_header_map_pairs", n(3), e.hSetPairs)
	def("proxy_get_buffer_bytes", n(5), e.hGetBuffer)
	def("proxy_get_buffer_status", n(3), func(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
		b, ok := buffer(st, uint32(a[0]))
		if !ok {
			return statusNotFound
		}
		wr32(m, a[2], 1)
		return wr32(m, a[1], uint32(len(*b)))
	})
	def("proxy_set_buffer_bytes", n(5), e.hSetBuffer)
	def("proxy_get_property", n(4), e.hGetProperty)
	def("proxy_set_property", n(4), unimplemented)
	def("proxy_send_local_response", n(8), e.hLocalResponse)
	def("proxy_set_effective_context", n(1), func(_ context.Context, _ api.Module, st *callState, a []uint64) uint32 {
		id := uint32(a[0])
		if id == rootContextID {
			st.s = nil
			return statusOK
		}
		s := st.inst.streams[id] // in.mu is held during guest calls
		if s == nil {
			return statusBadArgument
		}
		st.s = s
		return statusOK
	})
	def("proxy_get_current_time_nanoseconds", n(1), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		if !m.Memory().WriteUint64Le(uint32(a[0]), uint64(time.Now().UnixNano())) {
			return statusInvalidMemory
		}
		return statusOK
	})
	def("proxy_set_tick_period_milliseconds", n(1), func(_ context.Context, _ api.Module, st *callState, a []uint64) uint32 {
		st.p.setTick(time.Duration(uint32(a[0])) * time.Millisecond)
		return statusOK
	})
	def("proxy_define_metric", n(4), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		name, ok := m.Memory().Read(uint32(a[1]), uint32(a[2]))
		if !ok {
			return statusInvalidMemory
		}
		id, ok := e.metrics.define(uint32(a[0]), string(name))
		if !ok {
			return statusBadArgument
		}
		return wr32(m, a[3], id)
	})
	def("proxy_increment_metric", []api.ValueType{i32, i64}, func(_ context.Context, _ api.Module, _ *callState, a []uint64) uint32 {
		return e.metrics.increment(uint32(a[0]), int64(a[1]))
	})
	def("proxy_record_metric", []api.ValueType{i32, i64}, func(_ context.Context, _ api.Module, _ *callState, a []uint64) uint32 {
		return e.metrics.record(uint32(a[0]), a[1])
	})
	def("proxy_get_metric", n(2), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		v, s := e.metrics.get(uint32(a[0]))
		if s != statusOK {
			return s
		}
		if !m.Memory().WriteUint64Le(uint32(a[1]), v) {
			return statusInvalidMemory
		}
		return statusOK
	})
	def("proxy_get_shared_data", n(5), func(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
		k, ok := m.Memory().Read(uint32(a[0]), uint32(a[1]))
		if !ok {
			return statusInvalidMemory
		}
		v, ok := e.shared.get(string(k))
		if !ok {
			return statusNotFound
		}
		if s := st.ret(ctx, m, v.b, a[2], a[3]); s != statusOK {
			return s
		}
		return wr32(m, a[4], v.cas)
	})
	def("proxy_set_shared_data", n(5), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		k, ok1 := m.Memory().Read(uint32(a[0]), uint32(a[1]))
		v, ok2 := m.Memory().Read(uint32(a[2]), uint32(a[3]))
		if !ok1 || !ok2 {
			return statusInvalidMemory
		}
		if !e.shared.set(string(k), v, uint32(a[4])) {
			return statusCasMismatch
		}
		return statusOK
	})
	resume := func(_ context.Context, _ api.Module, st *callState, _ []uint64) uint32 {
		s := st.stream()
		if s == nil {
			return statusNotFound
		}
		s.signal()
		return statusOK
	}
	def("proxy_continue_stream", n(1), resume)
	def("proxy_continue_request", nil, resume)
	def("proxy_continue_response", nil, resume)
	def("proxy_resume_http_request", nil, resume)
	def("proxy_resume_http_response", nil, resume)
	def("proxy_close_stream", n(1), func(_ context.Context, _ api.Module, st *callState, _ []uint64) uint32 {
		s := st.stream()
		if s == nil {
			return statusNotFound
		}
		s.reset = true
		s.signal()
		return statusOK
	})
	def("proxy_done", nil, func(context.Context, api.Module, *callState, []uint64) uint32 { return statusOK })
	def("proxy_http_call", n(10), e.hHTTPCall)
	// Not implemented, defined so modules importing them instantiate.
	def("proxy_grpc_call", n(12), unimplemented)
	def("proxy_grpc_stream", n(9), unimplemented)
	def("proxy_grpc_send", n(4), unimplemented)
	def("proxy_grpc_cancel", n(1), unimplemented)
	def("proxy_grpc_close", n(1), unimplemented)
	def("proxy_register_shared_queue", n(3), unimplemented)
	def("proxy_resolve_shared_queue", n(5), unimplemented)
	def("proxy_enqueue_shared_queue", n(3), unimplemented)
	def("proxy_dequeue_shared_queue", n(3), unimplemented)
	def("proxy_call_foreign_function", n(6), unimplemented)
	_, err := b.Instantiate(ctx)
	return err
}

// stream returns the effective context's stream if this call may touch
// it: its own callback, or a stream paused waiting for the plugin.
func (st *callState) stream() *stream {
	if st.s == nil {
		return nil
	}
	if st.s == st.origin || st.s.waiting {
		return st.s
	}
	return nil
}

func wr32(m api.Module, p uint64, v uint32) uint32 {
	if !m.Memory().WriteUint32Le(uint32(p), v) {
		return statusInvalidMemory
	}
	return statusOK
}

// ret copies b into guest memory allocated by the guest and writes its
// address and size to the guest pointers pp and sp.
func (st *callState) ret(ctx context.Context, m api.Module, b []byte, pp, sp uint64) uint32 {
	if st.inst == nil || st.inst.alloc == nil {
		return statusUnimplemented
	}
	res, err := st.inst.alloc.Call(ctx, uint64(len(b)))
	if err != nil || len(res) == 0 {
		panic(err) // a trap in the allocator: abort the guest call
	}
	addr := uint32(res[0])
	if !m.Memory().Write(addr, b) {
		return statusInvalidMemory
	}
	if s := wr32(m, pp, addr); s != statusOK {
		return s
	}
	return wr32(m, sp, uint32(len(b)))
}

func (e *Engine) hLog(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	msg, ok := m.Memory().Read(uint32(a[1]), uint32(a[2]))
	if !ok {
		return statusInvalidMemory
	}
	lvl := slog.LevelInfo
	switch a[0] {
	case 0, 1:
		lvl = slog.LevelDebug
	case 3:
		lvl = slog.LevelWarn
	case 4, 5:
		lvl = slog.LevelError
	}
	e.log.Log(context.Background(), lvl, string(msg), "wasm_plugin", st.p.cfg.Name)
	return statusOK
}

// requestPairs lists request headers with pseudo-headers, lowercase.
func requestPairs(r *http.Request) [][2]string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	ps := [][2]string{{":method", r.Method}, {":path", r.URL.RequestURI()}, {":authority", r.Host}, {":scheme", scheme}}
	return append(ps, headerList(r.Header, "")...)
}

// responsePairs lists response headers after ":status", without trailers.
func responsePairs(status int, h http.Header) [][2]string {
	return append([][2]string{{":status", strconv.Itoa(status)}}, headerList(h, "")...)
}

// headerList lists h's headers, lowercase and sorted; with a prefix only
// the keys carrying it (stripped), otherwise those without
// http.TrailerPrefix.
func headerList(h http.Header, prefix string) [][2]string {
	keys := make([]string, 0, len(h))
	for k := range h {
		if prefix != "" && strings.HasPrefix(k, prefix) || prefix == "" && !strings.HasPrefix(k, http.TrailerPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var ps [][2]string
	for _, k := range keys {
		name := strings.ToLower(strings.TrimPrefix(k, prefix))
		for _, v := range h[k] {
			ps = append(ps, [2]string{name, v})
		}
	}
	return ps
}

// headerPairs returns a header map for reading.
func headerPairs(st *callState, mt uint32) ([][2]string, bool) {
	switch mt {
	case mapHTTPCallResponseHeaders:
		if st.call == nil {
			return nil, false
		}
		return st.call.headers, true
	case mapHTTPCallResponseTrailers:
		if st.call == nil {
			return nil, false
		}
		return st.call.trailers, true
	}
	s := st.stream()
	if s == nil {
		return nil, false
	}
	switch mt {
	case mapRequestHeaders:
		if s.forwarded {
			return s.reqPairs, true
		}
		return requestPairs(s.r), true
	case mapRequestTrailers:
		if s.forwarded {
			return nil, false
		}
		return headerList(s.r.Trailer, ""), true
	case mapResponseHeaders:
		if s.rw == nil || s.rw.status == 0 {
			return nil, false
		}
		return responsePairs(s.rw.status, s.rw.inner.Header()), true
	case mapResponseTrailers:
		if s.rw == nil || s.rw.status == 0 {
			return nil, false
		}
		return headerList(s.rw.inner.Header(), http.TrailerPrefix), true
	}
	return nil, false
}

func serializePairs(ps [][2]string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(ps)))
	for _, p := range ps {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p[0])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p[1])))
	}
	for _, p := range ps {
		b = append(append(append(append(b, p[0]...), 0), p[1]...), 0)
	}
	return b
}

func parsePairs(b []byte) ([][2]string, bool) {
	if len(b) < 4 {
		return nil, len(b) == 0
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > len(b)/8 {
		return nil, false
	}
	off := 4 + 8*n
	ps := make([][2]string, 0, n)
	for i := 0; i < n; i++ {
		kl := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vl := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if off+kl+vl+2 > len(b) {
			return nil, false
		}
		k := string(b[off : off+kl])
		off += kl + 1
		v := string(b[off : off+vl])
		off += vl + 1
		ps = append(ps, [2]string{k, v})
	}
	return ps, true
}

func (e *Engine) hGetPairs(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
	ps, ok := headerPairs(st, uint32(a[0]))
	if !ok {
		return statusNotFound
	}
	return st.ret(ctx, m, serializePairs(ps), a[1], a[2])
}

func (e *Engine) hGetValue(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
	k, ok := m.Memory().Read(uint32(a[1]), uint32(a[2]))
	if !ok {
		return statusInvalidMemory
	}
	ps, ok := headerPairs(st, uint32(a[0]))
	if !ok {
		return statusNotFound
	}
	key := strings.ToLower(string(k))
	var vals []string
	for _, p := range ps {
		if p[0] == key {
			vals = append(vals, p[1])
		}
	}
	if vals == nil {
		return statusNotFound
	}
	return st.ret(ctx, m, []byte(strings.Join(vals, ",")), a[3], a[4])
}

// writableMap returns the http.Header behind a header map the plugin may
// change now, and the key prefix of its entries (trailers).
func writableMap(s *stream, mt uint32) (http.Header, string, bool) {
	switch mt {
	case mapRequestHeaders:
		if !s.forwarded {
			return s.r.Header, "", true
		}
	case mapRequestTrailers:
		if s.r.Trailer == nil {
			s.r.Trailer = http.Header{}
		}
		return s.r.Trailer, "", true
	case mapResponseHeaders:
		if s.rw != nil && s.rw.status != 0 && !s.rw.sent {
			return s.rw.inner.Header(), "", true
		}
	case mapResponseTrailers:
		if s.rw != nil && s.rw.status != 0 {
			return s.rw.inner.Header(), http.TrailerPrefix, true
		}
	}
	return nil, "", false
}

// setHeader adds, replaces or removes a header (pseudo-headers :path,
// :method and :authority rewrite the request, :status the response).
func setHeader(m api.Module, st *callState, a []uint64, op string) uint32 {
	s := st.stream()
	if s == nil {
		return statusNotFound
	}
	k, ok1 := m.Memory().Read(uint32(a[1]), uint32(a[2]))
	v, ok2 := m.Memory().Read(uint32(a[3]), uint32(a[4]))
	if !ok1 || !ok2 {
		return statusInvalidMemory
	}
	mt := uint32(a[0])
	h, prefix, ok := writableMap(s, mt)
	if !ok {
		return statusNotFound
	}
	key, val := strings.ToLower(string(k)), string(v)
	if strings.HasPrefix(key, ":") {
		if op == "remove" {
			return statusOK
		}
		return setPseudo(s, mt, key, val)
	}
	key = prefix + http.CanonicalHeaderKey(key)
	switch op {
	case "add":
		h[key] = append(h[key], val)
	case "replace":
		h[key] = []string{val}
	default:
		delete(h, key)
	}
	return statusOK
}

func setPseudo(s *stream, mt uint32, key, val string) uint32 {
	r := s.r
	switch {
	case mt == mapRequestHeaders && key == ":path":
		u, err := url.ParseRequestURI(val)
		if err != nil {
			return statusBadArgument
		}
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	case mt == mapRequestHeaders && key == ":method":
		r.Method = val
	case mt == mapRequestHeaders && key == ":authority":
		r.Host = val
	case mt == mapResponseHeaders && key == ":status":
		code, err := strconv.Atoi(val)
		if err != nil || code < 200 || code > 999 {
			return statusBadArgument
		}
		s.rw.status = code
	}
	return statusOK
}

func (e *Engine) hSetPairs(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	s := st.stream()
	if s == nil {
		return statusNotFound
	}
	b, ok := m.Memory().Read(uint32(a[1]), uint32(a[2]))
	if !ok {
		return statusInvalidMemory
	}
	ps, ok := parsePairs(b)
	if !ok {
		return statusBadArgument
	}
	mt := uint32(a[0])
	h, prefix, ok := writableMap(s, mt)
	if !ok {
		return statusNotFound
	}
	for k := range h {
		if prefix != "" && strings.HasPrefix(k, prefix) || prefix == "" && !strings.HasPrefix(k, http.TrailerPrefix) {
			delete(h, k)
		}
	}
	for _, p := range ps {
		if strings.HasPrefix(p[0], ":") {
			if st := setPseudo(s, mt, strings.ToLower(p[0]), p[1]); st != statusOK {
				return st
			}
			continue
		}
		k := prefix + http.CanonicalHeaderKey(p[0])
		h[k] = append(h[k], p[1])
	}
	return statusOK
}

// buffer returns the buffer of type t this call may use.
func buffer(st *callState, t uint32) (*[]byte, bool) {
	switch t {
	case bufVMConfiguration:
		return &st.p.cfg.VMConfiguration, true
	case bufPluginConfiguration:
		return &st.p.cfg.Configuration, true
	case bufHTTPCallResponseBody:
		if st.call == nil {
			return nil, false
		}
		return &st.call.body, true
	}
	s := st.stream()
	if s == nil {
		return nil, false
	}
	switch t {
	case bufRequestBody:
		return &s.reqBuf, true
	case bufResponseBody:
		if s.rw == nil {
			return nil, false
		}
		return &s.rw.buf, true
	}
	return nil, false
}

func (e *Engine) hGetBuffer(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
	bp, ok := buffer(st, uint32(a[0]))
	if !ok {
		return statusNotFound
	}
	b := *bp
	start, size := int(uint32(a[1])), int(uint32(a[2]))
	if start > len(b) {
		return statusBadArgument
	}
	b = b[start:]
	if size < len(b) {
		b = b[:size]
	}
	if len(b) == 0 {
		return statusEmpty
	}
	return st.ret(ctx, m, b, a[3], a[4])
}

// hSetBuffer replaces size bytes at start of a body buffer with the given
// bytes (start 0, size ≥ length replaces it all; start ≥ length appends;
// size 0 inserts).
func (e *Engine) hSetBuffer(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	t := uint32(a[0])
	if t != bufRequestBody && t != bufResponseBody {
		return statusBadArgument
	}
	bp, ok := buffer(st, t)
	if !ok {
		return statusNotFound
	}
	data, ok := m.Memory().Read(uint32(a[3]), uint32(a[4]))
	if !ok {
		return statusInvalidMemory
	}
	b := *bp
	start, size := int(uint32(a[1])), int(uint32(a[2]))
	start = min(start, len(b))
	end := len(b)
	if size < end-start {
		end = start + size
	}
	nb := make([]byte, 0, len(b)-(end-start)+len(data))
	nb = append(append(append(nb, b[:start]...), data...), b[end:]...)
	*bp = nb
	s := st.stream()
	if t == bufRequestBody {
		s.reqMod = true
	} else {
		s.rw.mod = true
	}
	return statusOK
}

func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func (e *Engine) property(st *callState, path []string) ([]byte, bool) {
	joined := strings.Join(path, ".")
	switch joined {
	case "plugin_name":
		return []byte(st.p.cfg.Name), true
	case "plugin_root_id":
		return []byte(st.p.cfg.RootID), true
	case "plugin_vm_id":
		return []byte(""), true
	case "node.id":
		return []byte(e.nodeID), true
	}
	if len(path) == 3 && path[0] == "node" && path[1] == "metadata" {
		v, ok := e.nodeMeta[path[2]]
		return []byte(v), ok
	}
	s := st.stream()
	if s == nil {
		return nil, false
	}
	r := s.r
	reqPairs := func() [][2]string {
		if s.forwarded {
			return s.reqPairs
		}
		return requestPairs(r)
	}
	switch joined {
	case "request.path":
		return []byte(r.URL.RequestURI()), true
	case "request.url_path":
		return []byte(r.URL.Path), true
	case "request.query":
		return []byte(r.URL.RawQuery), true
	case "request.method":
		return []byte(r.Method), true
	case "request.host":
		return []byte(r.Host), true
	case "request.scheme":
		if r.TLS != nil {
			return []byte("https"), true
		}
		return []byte("http"), true
	case "request.protocol":
		return []byte(r.Proto), true
	case "request.useragent":
		return []byte(r.UserAgent()), true
	case "request.id":
		return []byte(pairValue(reqPairs(), "x-request-id")), true
	case "request.headers":
		return serializePairs(reqPairs()[4:]), true
	case "request.time":
		return le64(uint64(s.start.UnixNano())), true
	case "request.duration":
		if s.info == nil {
			return nil, false
		}
		return le64(uint64(s.info.Duration.Nanoseconds())), true
	case "request.size":
		if s.info == nil {
			return nil, false
		}
		return le64(uint64(s.info.BytesReceived)), true
	case "source.address":
		return []byte(r.RemoteAddr), true
	case "source.port":
		if _, p, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			n, _ := strconv.Atoi(p)
			return le64(uint64(n)), true
		}
	case "source.principal", "connection.uri_san_peer_certificate":
		if p := listener.PeerPrincipal(r.TLS); p != "" {
			return []byte(p), true
		}
	case "connection.mtls":
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			return []byte{1}, true
		}
		return []byte{0}, true
	case "connection.requested_server_name":
		if r.TLS != nil {
			return []byte(r.TLS.ServerName), true
		}
	case "destination.address":
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			return []byte(a.String()), true
		}
	case "response.code":
		if code := s.responseCode(); code != 0 {
			return le64(uint64(code)), true
		}
	case "response.code_details":
		if s.info != nil {
			if s.info.Details != "" {
				return []byte(strings.ReplaceAll(s.info.Details, " ", "_")), true
			}
			if s.info.UpstreamHost != "" {
				return []byte("via_upstream"), true
			}
		}
	case "response.size":
		if s.info != nil {
			return le64(uint64(s.info.BytesSent)), true
		}
	case "response.headers":
		if ps, ok := headerPairs(st, mapResponseHeaders); ok {
			return serializePairs(ps[1:]), true
		}
	case "response.trailers":
		if ps, ok := headerPairs(st, mapResponseTrailers); ok {
			return serializePairs(ps), true
		}
	case "upstream.address":
		if s.info != nil && s.info.UpstreamHost != "" {
			return []byte(s.info.UpstreamHost), true
		}
	case "xds.cluster_name", "cluster_name":
		if s.info != nil && s.info.Cluster != "" {
			return []byte(s.info.Cluster), true
		}
	case "xds.route_name", "route_name":
		if s.info != nil && s.info.RouteName != "" {
			return []byte(s.info.RouteName), true
		}
	}
	if len(path) == 3 && path[0] == "request" && path[1] == "headers" {
		if v := pairValue(reqPairs(), strings.ToLower(path[2])); v != "" {
			return []byte(v), true
		}
	}
	if len(path) == 3 && path[0] == "response" && path[1] == "headers" {
		if ps, ok := headerPairs(st, mapResponseHeaders); ok {
			if v := pairValue(ps, strings.ToLower(path[2])); v != "" {
				return []byte(v), true
			}
		}
	}
	return nil, false
}

func pairValue(ps [][2]string, key string) string {
	var vals []string
	for _, p := range ps {
		if p[0] == key {
			vals = append(vals, p[1])
		}
	}
	return strings.Join(vals, ",")
}

// responseCode is the status the client got (or gets): the plugin's
// view, else the proxy's.
func (s *stream) responseCode() int {
	if s.rw != nil && s.rw.status != 0 {
		return s.rw.status
	}
	if s.info != nil {
		return s.info.ResponseCode
	}
	return 0
}

func (e *Engine) hGetProperty(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
	raw, ok := m.Memory().Read(uint32(a[0]), uint32(a[1]))
	if !ok {
		return statusInvalidMemory
	}
	v, ok := e.property(st, strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"))
	if !ok {
		return statusNotFound
	}
	return st.ret(ctx, m, v, a[2], a[3])
}

func (e *Engine) hLocalResponse(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	s := st.stream()
	if s == nil || s.ended {
		return statusNotFound
	}
	mem := m.Memory()
	details, ok1 := mem.Read(uint32(a[1]), uint32(a[2]))
	body, ok2 := mem.Read(uint32(a[3]), uint32(a[4]))
	hb, ok3 := mem.Read(uint32(a[5]), uint32(a[6]))
	if !ok1 || !ok2 || !ok3 {
		return statusInvalidMemory
	}
	hs, ok := parsePairs(hb)
	if !ok {
		return statusBadArgument
	}
	status := int(uint32(a[0]))
	if status < 100 || status > 999 {
		return statusBadArgument
	}
	s.local = &localReply{status: status, details: string(details), body: append([]byte(nil), body...), headers: hs}
	s.signal()
	return statusOK
}
