// Package wasm runs proxy-wasm (ABI 0.2.1, with the 0.1.0 continue calls)
// HTTP plugins in the sidecar on the wazero runtime. An Engine compiles each
// module once (cached by sha256) and a Plugin keeps a pool of instances,
// each serving one request at a time. A trap, a memory-limit hit or a
// per-call timeout discards the instance and fails the request open or
// closed (503) per the plugin's configuration; it never crashes the proxy.
//
// The filter is registered for the http_filters name
// "envoy.filters.http.wasm" (typed config
// envoy.extensions.filters.http.wasm.v3.Wasm) through Filters, to be merged
// into proxy.Options.HTTPFilters.
package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// FilterName is the http_filters name of the wasm filter.
const FilterName = "envoy.filters.http.wasm"

// Defaults.
const (
	DefaultMemoryLimitPages = 2048 // 128 MiB
	DefaultCallTimeout      = time.Second
	DefaultPoolSize         = 4
	// DefaultBufferLimit is Envoy's default per_connection_buffer_limit_bytes.
	DefaultBufferLimit  = 1 << 20
	DefaultPauseTimeout = 60 * time.Second
	// DefaultHTTPCallTimeout applies to a proxy_http_call with timeout 0.
	DefaultHTTPCallTimeout = 15 * time.Second
)

// Option configures an Engine.
type Option func(*Engine)

// WithMemoryLimitPages caps each instance's linear memory (64 KiB pages).
func WithMemoryLimitPages(n uint32) Option { return func(e *Engine) { e.memPages = n } }

// WithCallTimeout bounds each guest call (request callbacks, configure).
func WithCallTimeout(d time.Duration) Option { return func(e *Engine) { e.timeout = d } }

// WithPoolSize sets the maximum instances per plugin (concurrent requests).
func WithPoolSize(n int) Option { return func(e *Engine) { e.poolSize = n } }

// WithNodeMetadata sets node.metadata.* and node.id properties.
func WithNodeMetadata(id string, md map[string]string) Option {
	return func(e *Engine) { e.nodeID, e.nodeMeta = id, md }
}

// WithBufferLimit bounds a body the plugin holds (bytes, default
// DefaultBufferLimit): a request beyond it gets 413, a response 500 (or a
// reset once its headers went out).
func WithBufferLimit(n int) Option { return func(e *Engine) { e.bufferLimit = n } }

// WithPauseTimeout bounds how long a stream the plugin paused waits for it
// to continue (default DefaultPauseTimeout); then the plugin counts as
// failed (fail open, or 503).
func WithPauseTimeout(d time.Duration) Option { return func(e *Engine) { e.pauseTimeout = d } }

// HTTPCaller sends proxy_http_call requests to a cluster by name (the
// proxy's cluster manager: its load balancer and transport, mTLS
// included). req.URL has only the path and query; req.Host is the
// :authority.
type HTTPCaller func(ctx context.Context, cluster string, req *http.Request) (*http.Response, error)

// SetHTTPCaller sets the proxy_http_call transport; without one calls
// fail with NotFound (the proxy is built after the engine, so this is a
// setter). Safe to call at any time.
func (e *Engine) SetHTTPCaller(c HTTPCaller) { e.caller.Store(&c) }

// WithCompilationCache shares wazero's compiled code between engines (or,
// with wazero.NewCompilationCacheWithDir, across restarts).
func WithCompilationCache(c wazero.CompilationCache) Option { return func(e *Engine) { e.cache = c } }

// WithHTTPClient sets the client fetching remote modules.
func WithHTTPClient(c *http.Client) Option { return func(e *Engine) { e.client = c } }

// Engine owns the wazero runtime, the compiled module cache, plugin
// metrics and shared data. Safe for concurrent use.
type Engine struct {
	log      *slog.Logger
	rt       wazero.Runtime
	memPages uint32
	timeout  time.Duration
	poolSize int
	nodeID   string
	nodeMeta map[string]string
	client   *http.Client

	cache        wazero.CompilationCache
	bufferLimit  int
	pauseTimeout time.Duration
	caller       atomic.Pointer[HTTPCaller]

	mu       sync.Mutex
	compiled map[[32]byte]wazero.CompiledModule
	plugins  map[string]*Plugin
	remote   map[string][]byte
	ociDir   string // WithModuleCacheDir (oci.go)

	metrics *metrics
	shared  *sharedData
}

// NewEngine creates a runtime with WASI and the proxy-wasm host module.
func NewEngine(ctx context.Context, log *slog.Logger, opts ...Option) (*Engine, error) {
	e := &Engine{
		log: log, memPages: DefaultMemoryLimitPages, timeout: DefaultCallTimeout, poolSize: DefaultPoolSize,
		bufferLimit: DefaultBufferLimit, pauseTimeout: DefaultPauseTimeout,
		client:   &http.Client{Timeout: 30 * time.Second},
		compiled: map[[32]byte]wazero.CompiledModule{}, plugins: map[string]*Plugin{}, remote: map[string][]byte{},
		metrics: newMetrics(), shared: newSharedData(),
	}
	for _, o := range opts {
		o(e)
	}
	cfg := wazero.NewRuntimeConfig().WithMemoryLimitPages(e.memPages).WithCloseOnContextDone(true)
	if e.cache != nil {
		cfg = cfg.WithCompilationCache(e.cache)
	}
	e.rt = wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, e.rt); err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("wasm: wasi: %w", err)
	}
	if err := e.instantiateHost(ctx); err != nil {
		_ = e.rt.Close(ctx)
		return nil, fmt.Errorf("wasm: host module: %w", err)
	}
	return e, nil
}

// Close stops every plugin (timers, callouts) and releases the runtime
// and every instance.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	ps := make([]*Plugin, 0, len(e.plugins))
	for _, p := range e.plugins {
		ps = append(ps, p)
	}
	e.mu.Unlock()
	for _, p := range ps {
		_ = p.Close()
	}
	return e.rt.Close(ctx)
}

// compile returns the cached compiled module for code.
func (e *Engine) compile(ctx context.Context, code []byte) (wazero.CompiledModule, [32]byte, error) {
	sum := sha256.Sum256(code)
	e.mu.Lock()
	defer e.mu.Unlock()
	if m, ok := e.compiled[sum]; ok {
		return m, sum, nil
	}
	m, err := e.rt.CompileModule(ctx, code)
	if err != nil {
		return nil, sum, fmt.Errorf("wasm: compile: %w", err)
	}
	e.compiled[sum] = m
	return m, sum, nil
}

// Compiled reports how many distinct modules are compiled.
func (e *Engine) Compiled() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.compiled)
}

// fetch downloads a remote module and checks its sha256 (hex).
func (e *Engine) fetch(ctx context.Context, uri, sum string) ([]byte, error) {
	key := uri + "@" + sum
	e.mu.Lock()
	b, ok := e.remote[key]
	e.mu.Unlock()
	if ok {
		return b, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("wasm: remote %q: %w", uri, err)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("wasm: remote %q: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("wasm: remote %q: status %d", uri, resp.StatusCode)
	}
	b, err = io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("wasm: remote %q: %w", uri, err)
	}
	if sum != "" {
		got := sha256.Sum256(b)
		if hex.EncodeToString(got[:]) != sum {
			return nil, fmt.Errorf("wasm: remote %q: sha256 mismatch: got %x want %s", uri, got, sum)
		}
	}
	e.mu.Lock()
	e.remote[key] = b
	e.mu.Unlock()
	return b, nil
}

// sharedData is proxy_get/set_shared_data's store with CAS.
type sharedData struct {
	mu sync.Mutex
	m  map[string]sharedValue
}

type sharedValue struct {
	b   []byte
	cas uint32
}

func newSharedData() *sharedData { return &sharedData{m: map[string]sharedValue{}} }

func (s *sharedData) get(k string) (sharedValue, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok
}

func (s *sharedData) set(k string, b []byte, cas uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.m[k]
	if cas != 0 && cas != v.cas {
		return false
	}
	s.m[k] = sharedValue{b: append([]byte(nil), b...), cas: v.cas + 1}
	return true
}
