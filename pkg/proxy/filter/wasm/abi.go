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
)

// proxy-wasm status codes.
const (
	statusOK              = 0
	statusNotFound        = 1
	statusBadArgument     = 2
	statusInvalidMemory   = 6
	statusEmpty           = 7
	statusCasMismatch     = 8
	statusUnimplemented   = 12
	mapRequestHeaders     = 0
	mapResponseHeaders    = 2
	bufVMConfiguration    = 6
	bufPluginConfiguraton = 7
)

var i32, i64 = api.ValueTypeI32, api.ValueTypeI64

type hostFn func(ctx context.Context, m api.Module, st *callState, a []uint64) uint32

func (e *Engine) instantiateHost(ctx context.Context) error {
	b := e.rt.NewHostModuleBuilder("env")
	def := func(name string, params []api.ValueType, fn hostFn) {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, m api.Module, stack []uint64) {
			st, _ := ctx.Value(stateKey{}).(*callState)
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
	def("proxy_add_header_map_value", n(5), func(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
		return setHeader(m, st, a, "add")
	})
	def("proxy_replace_header_map_value", n(5), func(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
		return setHeader(m, st, a, "replace")
	})
	def("proxy_remove_header_map_value", n(3), func(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
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
		return wr32(m, a[1], uint32(len(b)))
	})
	def("proxy_set_buffer_bytes", n(5), func(context.Context, api.Module, *callState, []uint64) uint32 { return statusUnimplemented })
	def("proxy_get_property", n(4), e.hGetProperty)
	def("proxy_set_property", n(4), func(context.Context, api.Module, *callState, []uint64) uint32 { return statusUnimplemented })
	def("proxy_send_local_response", n(8), e.hLocalResponse)
	def("proxy_set_effective_context", n(1), func(context.Context, api.Module, *callState, []uint64) uint32 { return statusOK })
	def("proxy_get_current_time_nanoseconds", n(1), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		if !m.Memory().WriteUint64Le(uint32(a[0]), uint64(time.Now().UnixNano())) {
			return statusInvalidMemory
		}
		return statusOK
	})
	def("proxy_set_tick_period_milliseconds", n(1), func(context.Context, api.Module, *callState, []uint64) uint32 { return statusOK })
	def("proxy_define_metric", n(4), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		name, ok := m.Memory().Read(uint32(a[1]), uint32(a[2]))
		if !ok {
			return statusInvalidMemory
		}
		return wr32(m, a[3], e.metrics.define(uint32(a[0]), string(name)))
	})
	def("proxy_increment_metric", []api.ValueType{i32, i64}, func(_ context.Context, _ api.Module, _ *callState, a []uint64) uint32 {
		if !e.metrics.update(uint32(a[0]), func(mt *metric) { mt.value += int64(a[1]) }) {
			return statusNotFound
		}
		return statusOK
	})
	def("proxy_record_metric", []api.ValueType{i32, i64}, func(_ context.Context, _ api.Module, _ *callState, a []uint64) uint32 {
		if !e.metrics.update(uint32(a[0]), func(mt *metric) { mt.value = int64(a[1]) }) {
			return statusNotFound
		}
		return statusOK
	})
	def("proxy_get_metric", n(2), func(_ context.Context, m api.Module, _ *callState, a []uint64) uint32 {
		var v int64
		if !e.metrics.update(uint32(a[0]), func(mt *metric) { v = mt.value }) {
			return statusNotFound
		}
		if !m.Memory().WriteUint64Le(uint32(a[1]), uint64(v)) {
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
	ok := func(context.Context, api.Module, *callState, []uint64) uint32 { return statusOK }
	def("proxy_continue_stream", n(1), ok)
	def("proxy_close_stream", n(1), ok)
	def("proxy_continue_request", nil, ok)
	def("proxy_continue_response", nil, ok)
	def("proxy_done", nil, ok)
	_, err := b.Instantiate(ctx)
	return err
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
	if st == nil || st.inst == nil || st.inst.alloc == nil {
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
	name := ""
	if st != nil {
		name = st.p.cfg.Name
	}
	e.log.Log(context.Background(), lvl, string(msg), "wasm_plugin", name)
	return statusOK
}

// requestPairs lists request headers with pseudo-headers, lowercase.
func requestPairs(r *http.Request) [][2]string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	ps := [][2]string{{":method", r.Method}, {":path", r.URL.RequestURI()}, {":authority", r.Host}, {":scheme", scheme}}
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range r.Header[k] {
			ps = append(ps, [2]string{strings.ToLower(k), v})
		}
	}
	return ps
}

func headerPairs(st *callState, mt uint32) ([][2]string, bool) {
	if st == nil || st.r == nil {
		return nil, false
	}
	switch mt {
	case mapRequestHeaders:
		return requestPairs(st.r), true
	case mapResponseHeaders:
		var ps [][2]string
		for k, vs := range st.w.Header() {
			for _, v := range vs {
				ps = append(ps, [2]string{strings.ToLower(k), v})
			}
		}
		return ps, true
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

// setHeader adds, replaces or removes a header (pseudo-headers :path,
// :method and :authority rewrite the request).
func setHeader(m api.Module, st *callState, a []uint64, op string) uint32 {
	if st == nil || st.r == nil || st.done {
		return statusNotFound
	}
	k, ok1 := m.Memory().Read(uint32(a[1]), uint32(a[2]))
	v, ok2 := m.Memory().Read(uint32(a[3]), uint32(a[4]))
	if !ok1 || !ok2 {
		return statusInvalidMemory
	}
	key, val := string(k), string(v)
	var h http.Header
	switch uint32(a[0]) {
	case mapRequestHeaders:
		h = st.r.Header
		switch key {
		case ":path":
			if op != "remove" {
				u, err := url.ParseRequestURI(val)
				if err != nil {
					return statusBadArgument
				}
				st.r.URL.Path, st.r.URL.RawPath, st.r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
			}
			return statusOK
		case ":method":
			if op != "remove" {
				st.r.Method = val
			}
			return statusOK
		case ":authority":
			if op != "remove" {
				st.r.Host = val
			}
			return statusOK
		}
	case mapResponseHeaders:
		h = st.w.Header()
	default:
		return statusNotFound
	}
	switch op {
	case "add":
		h.Add(key, val)
	case "replace":
		h.Set(key, val)
	default:
		h.Del(key)
	}
	return statusOK
}

func (e *Engine) hSetPairs(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	if st == nil || st.r == nil {
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
	var h http.Header
	switch uint32(a[0]) {
	case mapRequestHeaders:
		h = st.r.Header
	case mapResponseHeaders:
		h = st.w.Header()
	default:
		return statusNotFound
	}
	for k := range h {
		delete(h, k)
	}
	for _, p := range ps {
		if strings.HasPrefix(p[0], ":") {
			continue
		}
		h.Add(p[0], p[1])
	}
	return statusOK
}

func buffer(st *callState, t uint32) ([]byte, bool) {
	if st == nil {
		return nil, false
	}
	switch t {
	case bufVMConfiguration:
		return st.p.cfg.VMConfiguration, true
	case bufPluginConfiguraton:
		return st.p.cfg.Configuration, true
	}
	return nil, false
}

func (e *Engine) hGetBuffer(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
	b, ok := buffer(st, uint32(a[0]))
	if !ok {
		return statusNotFound
	}
	start, size := int(a[1]), int(a[2])
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

func (e *Engine) property(st *callState, path []string) ([]byte, bool) {
	joined := strings.Join(path, ".")
	switch joined {
	case "plugin_name":
		return []byte(st.p.cfg.Name), true
	case "plugin_root_id":
		return []byte(st.p.cfg.RootID), true
	case "node.id":
		return []byte(e.nodeID), true
	}
	if len(path) == 3 && path[0] == "node" && path[1] == "metadata" {
		v, ok := e.nodeMeta[path[2]]
		return []byte(v), ok
	}
	r := st.r
	if r == nil {
		return nil, false
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
		return []byte(r.Header.Get("X-Request-Id")), true
	case "request.headers":
		return serializePairs(requestPairs(r)), true
	case "source.address":
		return []byte(r.RemoteAddr), true
	case "source.port":
		if _, p, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			n, _ := strconv.Atoi(p)
			return binary.LittleEndian.AppendUint64(nil, uint64(n)), true
		}
	case "destination.address":
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			return []byte(a.String()), true
		}
	}
	if len(path) == 3 && path[0] == "request" && path[1] == "headers" {
		if v := r.Header.Values(path[2]); v != nil {
			return []byte(strings.Join(v, ",")), true
		}
	}
	return nil, false
}

func (e *Engine) hGetProperty(ctx context.Context, m api.Module, st *callState, a []uint64) uint32 {
	raw, ok := m.Memory().Read(uint32(a[0]), uint32(a[1]))
	if !ok {
		return statusInvalidMemory
	}
	if st == nil {
		return statusNotFound
	}
	v, ok := e.property(st, strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"))
	if !ok {
		return statusNotFound
	}
	return st.ret(ctx, m, v, a[2], a[3])
}

func (e *Engine) hLocalResponse(_ context.Context, m api.Module, st *callState, a []uint64) uint32 {
	if st == nil || st.r == nil || st.done {
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
	st.local = &localReply{status: status, details: string(details), body: append([]byte(nil), body...), headers: hs}
	return statusOK
}
