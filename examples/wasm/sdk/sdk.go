//go:build wasip1

// Package sdk is a minimal proxy-wasm (ABI 0.2.1) guest SDK for Go plugins
// built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared. A plugin calls
// SetPlugin from an init function; the SDK exports the proxy_on_* callbacks
// and wraps the host's proxy_* imports.
package sdk

import (
	"encoding/binary"
	"unsafe"
)

// Action is a proxy-wasm filter action.
type Action uint32

// Actions.
const (
	Continue Action = 0
	Pause    Action = 1
)

// MetricType is a proxy-wasm metric type.
type MetricType uint32

// Metric types.
const (
	Counter   MetricType = 0
	Gauge     MetricType = 1
	Histogram MetricType = 2
)

// Log levels.
const (
	LogTrace = 0
	LogDebug = 1
	LogInfo  = 2
	LogWarn  = 3
	LogError = 4
)

// Map and buffer types.
const (
	mapRequestHeaders          = 0
	mapRequestTrailers         = 1
	mapResponseHeaders         = 2
	mapResponseTrailers        = 3
	mapHTTPCallResponseHeaders = 6
	bufRequestBody             = 0
	bufResponseBody            = 1
	bufHTTPCallResponseBody    = 4
	bufPluginConfig            = 7
	bufVMConfig                = 6
)

// Stream types for Continue.
const (
	streamRequest  = 0
	streamResponse = 1
)

// HTTPContext receives one HTTP stream's callbacks.
type HTTPContext interface {
	OnRequestHeaders(numHeaders int, endOfStream bool) Action
	OnResponseHeaders(numHeaders int, endOfStream bool) Action
	OnDone()
}

// Optional HTTPContext callbacks: a context implementing one of these
// gets the phase; without it the SDK continues.
type (
	// RequestBodyHandler sees request body data: bodySize is what the
	// proxy holds (the bytes since the last Continue); Pause buffers more.
	RequestBodyHandler interface {
		OnRequestBody(bodySize int, endOfStream bool) Action
	}
	// RequestTrailersHandler sees request trailers.
	RequestTrailersHandler interface{ OnRequestTrailers(numTrailers int) Action }
	// ResponseBodyHandler sees response body data, as RequestBodyHandler.
	ResponseBodyHandler interface {
		OnResponseBody(bodySize int, endOfStream bool) Action
	}
	// ResponseTrailersHandler sees response trailers.
	ResponseTrailersHandler interface{ OnResponseTrailers(numTrailers int) Action }
	// LogHandler runs after the response (access-log phase); properties
	// such as response.code and request.duration are set.
	LogHandler interface{ OnLog() }
)

// Plugin is a root context: configuration and HTTP context factory.
type Plugin interface {
	OnConfigure(config []byte) bool
	NewHTTPContext(contextID uint32) HTTPContext
}

// TickHandler is an optional Plugin callback for SetTickPeriod's timer.
type TickHandler interface{ OnTick() }

// HTTPCallback receives a DispatchHTTPCall response (numHeaders 0: the
// call failed or timed out). HTTPCallResponseHeaders and
// HTTPCallResponseBody read it; the effective context is the caller's.
type HTTPCallback func(numHeaders, bodySize, numTrailers int)

var (
	plugin  Plugin
	streams = map[uint32]HTTPContext{}
	// allocs keeps host-filled buffers alive until the SDK copies them.
	allocs = map[uint32][]byte{}
	// current is the context whose callback runs (rootContextID for the
	// plugin's own callbacks).
	current uint32
	// callouts maps a DispatchHTTPCall token to its callback and caller.
	callouts = map[uint32]callout{}
)

type callout struct {
	cb      HTTPCallback
	context uint32
}

// SetPlugin registers the plugin; call it from init.
func SetPlugin(p Plugin) { plugin = p }

//go:wasmimport env proxy_log
func proxyLog(level, ptr, size uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType, keyPtr, keySize, retPtr, retSize uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType, keyPtr, keySize, valPtr, valSize uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(mapType, keyPtr, keySize, valPtr, valSize uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(mapType, keyPtr, keySize uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(bufType, start, maxSize, retPtr, retSize uint32) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(bufType, start, size, dataPtr, dataSize uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(mapType, retPtr, retSize uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(streamType uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(contextID uint32) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxySetTickPeriodMilliseconds(ms uint32) uint32

//go:wasmimport env proxy_http_call
func proxyHTTPCall(upPtr, upSize, hPtr, hSize, bPtr, bSize, tPtr, tSize, timeoutMs, tokenPtr uint32) uint32

//go:wasmimport env proxy_record_metric
func proxyRecordMetric(id uint32, value uint64) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(pathPtr, pathSize, retPtr, retSize uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status, detailsPtr, detailsSize, bodyPtr, bodySize, headersPtr, headersSize, grpcStatus uint32) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(typ, namePtr, nameSize, retID uint32) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, offset int64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id, retPtr uint32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(keyPtr, keySize, retPtr, retSize, casPtr uint32) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(keyPtr, keySize, valPtr, valSize, cas uint32) uint32

func ptr(b []byte) uint32 {
	if len(b) == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&b[0])))
}

func u32ptr(v *uint32) uint32 { return uint32(uintptr(unsafe.Pointer(v))) }

// take copies and releases a host-filled buffer.
func take(p, n uint32) []byte {
	b, ok := allocs[p]
	if !ok {
		return nil
	}
	delete(allocs, p)
	out := make([]byte, n)
	copy(out, b[:n])
	return out
}

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion021() {}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	b := make([]byte, size)
	p := ptr(b)
	allocs[p] = b
	return p
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, rootID uint32) {
	if rootID != 0 && plugin != nil {
		streams[contextID] = plugin.NewHTTPContext(contextID)
	}
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, size uint32) uint32 {
	current = rootID
	if plugin == nil {
		return 0
	}
	var cfg []byte
	if size > 0 {
		var p, n uint32
		if proxyGetBufferBytes(bufPluginConfig, 0, size, u32ptr(&p), u32ptr(&n)) == 0 {
			cfg = take(p, n)
		}
	}
	if plugin.OnConfigure(cfg) {
		return 1
	}
	return 0
}

// stream returns the context's HTTPContext and makes it current.
func stream(contextID uint32) HTTPContext {
	current = contextID
	return streams[contextID]
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	if s := stream(contextID); s != nil {
		return uint32(s.OnRequestHeaders(int(numHeaders), endOfStream != 0))
	}
	return 0
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, size, endOfStream uint32) uint32 {
	if h, ok := stream(contextID).(RequestBodyHandler); ok {
		return uint32(h.OnRequestBody(int(size), endOfStream != 0))
	}
	return 0
}

//go:wasmexport proxy_on_request_trailers
func proxyOnRequestTrailers(contextID, n uint32) uint32 {
	if h, ok := stream(contextID).(RequestTrailersHandler); ok {
		return uint32(h.OnRequestTrailers(int(n)))
	}
	return 0
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	if s := stream(contextID); s != nil {
		return uint32(s.OnResponseHeaders(int(numHeaders), endOfStream != 0))
	}
	return 0
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, size, endOfStream uint32) uint32 {
	if h, ok := stream(contextID).(ResponseBodyHandler); ok {
		return uint32(h.OnResponseBody(int(size), endOfStream != 0))
	}
	return 0
}

//go:wasmexport proxy_on_response_trailers
func proxyOnResponseTrailers(contextID, n uint32) uint32 {
	if h, ok := stream(contextID).(ResponseTrailersHandler); ok {
		return uint32(h.OnResponseTrailers(int(n)))
	}
	return 0
}

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) {
	if h, ok := stream(contextID).(LogHandler); ok {
		h.OnLog()
	}
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 {
	if s := stream(contextID); s != nil {
		s.OnDone()
	}
	return 1
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) { delete(streams, contextID) }

//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	current = rootID
	if h, ok := plugin.(TickHandler); ok {
		h.OnTick()
	}
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(rootID, token, numHeaders, bodySize, numTrailers uint32) {
	c, ok := callouts[token]
	if !ok {
		return
	}
	delete(callouts, token)
	current = rootID
	if c.context != rootID {
		if proxySetEffectiveContext(c.context) != 0 {
			return // the stream is gone
		}
		current = c.context
	}
	c.cb(int(numHeaders), int(bodySize), int(numTrailers))
}

// Log writes a message to the host log.
func Log(level uint32, msg string) {
	b := []byte(msg)
	proxyLog(level, ptr(b), uint32(len(b)))
}

// RequestHeader returns a request header (or pseudo-header such as :path).
func RequestHeader(name string) (string, bool) {
	k := []byte(name)
	var p, n uint32
	if proxyGetHeaderMapValue(mapRequestHeaders, ptr(k), uint32(len(k)), u32ptr(&p), u32ptr(&n)) != 0 {
		return "", false
	}
	return string(take(p, n)), true
}

func setHeader(mapType uint32, name, value string, add bool) {
	k, v := []byte(name), []byte(value)
	if add {
		proxyAddHeaderMapValue(mapType, ptr(k), uint32(len(k)), ptr(v), uint32(len(v)))
		return
	}
	proxyReplaceHeaderMapValue(mapType, ptr(k), uint32(len(k)), ptr(v), uint32(len(v)))
}

// AddRequestHeader appends a request header value.
func AddRequestHeader(name, value string) { setHeader(mapRequestHeaders, name, value, true) }

// SetRequestHeader replaces a request header.
func SetRequestHeader(name, value string) { setHeader(mapRequestHeaders, name, value, false) }

// RemoveRequestHeader removes a request header.
func RemoveRequestHeader(name string) {
	k := []byte(name)
	proxyRemoveHeaderMapValue(mapRequestHeaders, ptr(k), uint32(len(k)))
}

// AddResponseHeader appends a response header value.
func AddResponseHeader(name, value string) { setHeader(mapResponseHeaders, name, value, true) }

// Property returns a host property; path segments are joined with NUL.
func Property(path ...string) ([]byte, bool) {
	var k []byte
	for i, s := range path {
		if i > 0 {
			k = append(k, 0)
		}
		k = append(k, s...)
	}
	var p, n uint32
	if proxyGetProperty(ptr(k), uint32(len(k)), u32ptr(&p), u32ptr(&n)) != 0 {
		return nil, false
	}
	return take(p, n), true
}

// SendLocalResponse answers the request from the proxy.
func SendLocalResponse(status uint32, details string, body []byte, headers [][2]string) {
	d := []byte(details)
	h := serializePairs(headers)
	proxySendLocalResponse(status, ptr(d), uint32(len(d)), ptr(body), uint32(len(body)), ptr(h), uint32(len(h)), ^uint32(0))
}

func serializePairs(pairs [][2]string) []byte {
	size := 4
	for _, p := range pairs {
		size += 8 + len(p[0]) + len(p[1]) + 2
	}
	b := make([]byte, 4, size)
	binary.LittleEndian.PutUint32(b, uint32(len(pairs)))
	for _, p := range pairs {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p[0])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p[1])))
	}
	for _, p := range pairs {
		b = append(b, p[0]...)
		b = append(b, 0)
		b = append(b, p[1]...)
		b = append(b, 0)
	}
	return b
}

// DefineMetric defines (or looks up) a host metric and returns its id.
func DefineMetric(t MetricType, name string) uint32 {
	k := []byte(name)
	var id uint32
	proxyDefineMetric(uint32(t), ptr(k), uint32(len(k)), u32ptr(&id))
	return id
}

// IncrementMetric adds offset to a metric.
func IncrementMetric(id uint32, offset int64) { proxyIncrementMetric(id, offset) }

// Metric returns a metric's value.
func Metric(id uint32) uint64 {
	var v uint64
	proxyGetMetric(id, uint32(uintptr(unsafe.Pointer(&v))))
	return v
}

// SharedData returns a value shared across the plugin's VMs and its CAS.
func SharedData(key string) ([]byte, uint32, bool) {
	k := []byte(key)
	var p, n, cas uint32
	if proxyGetSharedData(ptr(k), uint32(len(k)), u32ptr(&p), u32ptr(&n), u32ptr(&cas)) != 0 {
		return nil, 0, false
	}
	return take(p, n), cas, true
}

// SetSharedData stores a shared value (cas 0: unconditional).
func SetSharedData(key string, value []byte, cas uint32) bool {
	k := []byte(key)
	return proxySetSharedData(ptr(k), uint32(len(k)), ptr(value), uint32(len(value)), cas) == 0
}

// DefaultHTTPContext implements HTTPContext with no-ops.
type DefaultHTTPContext struct{}

// OnRequestHeaders continues.
func (DefaultHTTPContext) OnRequestHeaders(int, bool) Action { return Continue }

// OnResponseHeaders continues.
func (DefaultHTTPContext) OnResponseHeaders(int, bool) Action { return Continue }

// OnDone does nothing.
func (DefaultHTTPContext) OnDone() {}

// ResponseHeader returns a response header (or :status).
func ResponseHeader(name string) (string, bool) {
	k := []byte(name)
	var p, n uint32
	if proxyGetHeaderMapValue(mapResponseHeaders, ptr(k), uint32(len(k)), u32ptr(&p), u32ptr(&n)) != 0 {
		return "", false
	}
	return string(take(p, n)), true
}

// SetResponseHeader replaces a response header.
func SetResponseHeader(name, value string) { setHeader(mapResponseHeaders, name, value, false) }

// RemoveResponseHeader removes a response header.
func RemoveResponseHeader(name string) {
	k := []byte(name)
	proxyRemoveHeaderMapValue(mapResponseHeaders, ptr(k), uint32(len(k)))
}

// AddResponseTrailer appends a response trailer (in OnResponseTrailers or
// at the end of the body).
func AddResponseTrailer(name, value string) { setHeader(mapResponseTrailers, name, value, true) }

func headerMap(mapType uint32) [][2]string {
	var p, n uint32
	if proxyGetHeaderMapPairs(mapType, u32ptr(&p), u32ptr(&n)) != 0 {
		return nil
	}
	return parsePairs(take(p, n))
}

// RequestHeaders returns all request headers, pseudo-headers first.
func RequestHeaders() [][2]string { return headerMap(mapRequestHeaders) }

// ResponseHeaders returns all response headers, ":status" first.
func ResponseHeaders() [][2]string { return headerMap(mapResponseHeaders) }

// RequestTrailers returns the request trailers (in OnRequestTrailers).
func RequestTrailers() [][2]string { return headerMap(mapRequestTrailers) }

// HTTPCallResponseHeaders returns the headers of the response an
// HTTPCallback is handling, ":status" first.
func HTTPCallResponseHeaders() [][2]string { return headerMap(mapHTTPCallResponseHeaders) }

func parsePairs(b []byte) [][2]string {
	if len(b) < 4 {
		return nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	if 4+8*n > len(b) {
		return nil
	}
	off := 4 + 8*n
	out := make([][2]string, 0, n)
	for i := 0; i < n; i++ {
		kl := int(binary.LittleEndian.Uint32(b[4+8*i:]))
		vl := int(binary.LittleEndian.Uint32(b[8+8*i:]))
		if off+kl+vl+2 > len(b) {
			return out
		}
		k := string(b[off : off+kl])
		off += kl + 1
		v := string(b[off : off+vl])
		off += vl + 1
		out = append(out, [2]string{k, v})
	}
	return out
}

func bufferBytes(t uint32, size int) []byte {
	var p, n uint32
	if size == 0 || proxyGetBufferBytes(t, 0, uint32(size), u32ptr(&p), u32ptr(&n)) != 0 {
		return nil
	}
	return take(p, n)
}

func setBuffer(t uint32, b []byte) bool {
	return proxySetBufferBytes(t, 0, ^uint32(0), ptr(b), uint32(len(b))) == 0
}

// RequestBody returns the first size bytes of the request body the proxy
// holds (size: OnRequestBody's bodySize).
func RequestBody(size int) []byte { return bufferBytes(bufRequestBody, size) }

// SetRequestBody replaces the held request body.
func SetRequestBody(b []byte) bool { return setBuffer(bufRequestBody, b) }

// ResponseBody returns the first size bytes of the held response body.
func ResponseBody(size int) []byte { return bufferBytes(bufResponseBody, size) }

// SetResponseBody replaces the held response body.
func SetResponseBody(b []byte) bool { return setBuffer(bufResponseBody, b) }

// HTTPCallResponseBody returns the body of the response an HTTPCallback
// is handling.
func HTTPCallResponseBody(size int) []byte { return bufferBytes(bufHTTPCallResponseBody, size) }

// ContinueRequest resumes a request the plugin paused (e.g. from an
// HTTPCallback).
func ContinueRequest() { proxyContinueStream(streamRequest) }

// ContinueResponse resumes a paused response.
func ContinueResponse() { proxyContinueStream(streamResponse) }

// SetTickPeriod starts (ms > 0) or stops the plugin's OnTick timer.
func SetTickPeriod(ms uint32) { proxySetTickPeriodMilliseconds(ms) }

// RecordMetric sets a gauge, adds to a counter, or records a histogram
// value.
func RecordMetric(id uint32, value uint64) { proxyRecordMetric(id, value) }

// PropertyUint64 returns an integer property (response.code,
// request.duration in nanoseconds, ...).
func PropertyUint64(path ...string) (uint64, bool) {
	b, ok := Property(path...)
	if !ok || len(b) != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b), true
}

// DispatchHTTPCall sends a request to the proxy cluster named cluster
// (headers must include :method, :path and :authority); cb runs with the
// response in the calling context. It returns false when the host
// refused the call.
func DispatchHTTPCall(cluster string, headers [][2]string, body []byte, timeoutMs uint32, cb HTTPCallback) bool {
	up := []byte(cluster)
	h := serializePairs(headers)
	t := serializePairs(nil)
	var token uint32
	if proxyHTTPCall(ptr(up), uint32(len(up)), ptr(h), uint32(len(h)), ptr(body), uint32(len(body)), ptr(t), uint32(len(t)), timeoutMs, u32ptr(&token)) != 0 {
		return false
	}
	callouts[token] = callout{cb: cb, context: current}
	return true
}
