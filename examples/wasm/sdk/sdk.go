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
	mapRequestHeaders  = 0
	mapResponseHeaders = 2
	bufPluginConfig    = 7
	bufVMConfig        = 6
)

// HTTPContext receives one HTTP stream's callbacks.
type HTTPContext interface {
	OnRequestHeaders(numHeaders int, endOfStream bool) Action
	OnResponseHeaders(numHeaders int, endOfStream bool) Action
	OnDone()
}

// Plugin is a root context: configuration and HTTP context factory.
type Plugin interface {
	OnConfigure(config []byte) bool
	NewHTTPContext(contextID uint32) HTTPContext
}

var (
	plugin  Plugin
	streams = map[uint32]HTTPContext{}
	// allocs keeps host-filled buffers alive until the SDK copies them.
	allocs = map[uint32][]byte{}
)

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

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	if s := streams[contextID]; s != nil {
		return uint32(s.OnRequestHeaders(int(numHeaders), endOfStream != 0))
	}
	return 0
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(contextID, size, endOfStream uint32) uint32 { return 0 }

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	if s := streams[contextID]; s != nil {
		return uint32(s.OnResponseHeaders(int(numHeaders), endOfStream != 0))
	}
	return 0
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(contextID, size, endOfStream uint32) uint32 { return 0 }

//go:wasmexport proxy_on_log
func proxyOnLog(contextID uint32) {}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 {
	if s := streams[contextID]; s != nil {
		s.OnDone()
	}
	return 1
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) { delete(streams, contextID) }

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
