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
	"sort"
	"sync"
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

	mu       sync.Mutex
	compiled map[[32]byte]wazero.CompiledModule
	plugins  map[string]*Plugin
	remote   map[string][]byte

	metrics *metrics
	shared  *sharedData
}

// NewEngine creates a runtime with WASI and the proxy-wasm host module.
func NewEngine(ctx context.Context, log *slog.Logger, opts ...Option) (*Engine, error) {
	e := &Engine{
		log: log, memPages: DefaultMemoryLimitPages, timeout: DefaultCallTimeout, poolSize: DefaultPoolSize,
		client:   &http.Client{Timeout: 30 * time.Second},
		compiled: map[[32]byte]wazero.CompiledModule{}, plugins: map[string]*Plugin{}, remote: map[string][]byte{},
		metrics: newMetrics(), shared: newSharedData(),
	}
	for _, o := range opts {
		o(e)
	}
	cfg := wazero.NewRuntimeConfig().WithMemoryLimitPages(e.memPages).WithCloseOnContextDone(true)
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

// Close releases the runtime and every instance.
func (e *Engine) Close(ctx context.Context) error { return e.rt.Close(ctx) }

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

// metrics holds plugin-defined metrics by name (shared by all plugins).
type metrics struct {
	mu    sync.Mutex
	byID  []*metric
	byNam map[string]uint32
}

type metric struct {
	name  string
	typ   uint32
	value int64
}

func newMetrics() *metrics { return &metrics{byNam: map[string]uint32{}} }

func (m *metrics) define(typ uint32, name string) uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, ok := m.byNam[name]; ok {
		return id
	}
	m.byID = append(m.byID, &metric{name: name, typ: typ})
	id := uint32(len(m.byID)) // ids start at 1
	m.byNam[name] = id
	return id
}

func (m *metrics) update(id uint32, fn func(*metric)) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id == 0 || int(id) > len(m.byID) {
		return false
	}
	fn(m.byID[id-1])
	return true
}

// Metric returns a plugin metric's value by name.
func (e *Engine) Metric(name string) (int64, bool) {
	e.metrics.mu.Lock()
	defer e.metrics.mu.Unlock()
	id, ok := e.metrics.byNam[name]
	if !ok {
		return 0, false
	}
	return e.metrics.byID[id-1].value, true
}

// WritePrometheus writes plugin metrics in Prometheus text format (for the
// proxy's stats endpoint).
func (e *Engine) WritePrometheus(w io.Writer) error {
	e.metrics.mu.Lock()
	ms := make([]metric, 0, len(e.metrics.byID))
	for _, m := range e.metrics.byID {
		ms = append(ms, *m)
	}
	e.metrics.mu.Unlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	for _, m := range ms {
		typ := "counter"
		if m.typ != 0 {
			typ = "gauge"
		}
		if _, err := fmt.Fprintf(w, "# TYPE %s %s\n%s %d\n", m.name, typ, m.name, m.value); err != nil {
			return err
		}
	}
	return nil
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
