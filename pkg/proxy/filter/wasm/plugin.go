package wasm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// PluginConfig describes one plugin instance set.
type PluginConfig struct {
	Name string
	// RootID is the plugin's root_id (informational).
	RootID string
	// Configuration is returned to proxy_on_configure (plugin config).
	Configuration []byte
	// VMConfiguration is returned to proxy_on_vm_start.
	VMConfiguration []byte
	// FailOpen lets requests through when the plugin fails; otherwise they
	// get a 503.
	FailOpen bool
}

// FailedDetails is the local reply body and details header value when a
// fail-closed plugin fails.
const FailedDetails = "wasm_fail_stream"

// DetailsHeader carries the reason for a wasm local reply.
const DetailsHeader = "X-Weft-Wasm-Details"

// Plugin is a compiled module with its configuration and up to the
// engine's pool size of instances (VMs). A stream (one HTTP request) is
// bound to one instance for its whole life; instances serve many streams,
// one guest call at a time (as an Envoy worker thread's VM does). The first
// live instance also runs the root context's timer (proxy_on_tick).
// Plugin implements listener.ResponseFilter and io.Closer.
type Plugin struct {
	e   *Engine
	mod wazero.CompiledModule
	cfg PluginConfig
	key string

	ctx    context.Context // cancelled by Close: ticks, callouts
	cancel context.CancelFunc

	mu       sync.Mutex
	insts    []*instance // live instances, oldest first
	creating int         // instances being created by bind
	next     int         // round robin
	closed   bool
	tick     time.Duration // proxy_set_tick_period_milliseconds
	tickCh   chan time.Duration

	token atomic.Uint32 // proxy_http_call tokens
	// Failures counts failed guest calls (traps, timeouts).
	Failures atomic.Int64
	// Ticks counts proxy_on_tick calls.
	Ticks atomic.Int64
}

// instance is one VM. mu serialises guest calls; the fields below it are
// guarded by mu.
type instance struct {
	p     *Plugin
	mod   api.Module
	alloc api.Function
	fns   map[string]api.Function

	mu      sync.Mutex
	streams map[uint32]*stream
	nextID  uint32
	active  int  // streams bound (guarded by p.mu)
	broken  bool // guarded by p.mu
}

var (
	_ listener.ResponseFilter    = (*Plugin)(nil)
	_ interface{ Close() error } = (*Plugin)(nil)
)

// NewPlugin compiles (or reuses) code and creates one instance to check
// that the plugin starts and accepts its configuration. The same code and
// configuration return the same Plugin until it is closed.
func (e *Engine) NewPlugin(ctx context.Context, code []byte, cfg PluginConfig) (*Plugin, error) {
	mod, sum, err := e.compile(ctx, code)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%x|%q|%q|%q|%v", sum, cfg.Name, cfg.Configuration, cfg.VMConfiguration, cfg.FailOpen)
	e.mu.Lock()
	p := e.plugins[key]
	e.mu.Unlock()
	if p != nil {
		return p, nil
	}
	pctx, cancel := context.WithCancel(context.Background())
	p = &Plugin{e: e, mod: mod, cfg: cfg, key: key, ctx: pctx, cancel: cancel, tickCh: make(chan time.Duration, 1)}
	inst, err := p.newInstance(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	p.insts = []*instance{inst}
	e.mu.Lock()
	if q := e.plugins[key]; q != nil { // lost a race with the same config
		e.mu.Unlock()
		_ = p.Close()
		return q, nil
	}
	e.plugins[key] = p
	e.mu.Unlock()
	go p.tickLoop()
	return p, nil
}

// Close stops the plugin's timer and callouts and closes its instances
// (an instance still serving streams closes when the last one ends).
// Idempotent.
func (p *Plugin) Close() error {
	p.e.mu.Lock()
	if p.e.plugins[p.key] == p {
		delete(p.e.plugins, p.key)
	}
	p.e.mu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	insts := p.insts
	p.insts = nil
	var idle []*instance
	for _, in := range insts {
		in.broken = true // no new streams
		if in.active == 0 {
			idle = append(idle, in)
		}
	}
	p.mu.Unlock()
	p.cancel()
	for _, in := range idle {
		_ = in.mod.Close(context.Background())
	}
	return nil
}

// Instances reports the live instances.
func (p *Plugin) Instances() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.insts)
}

var exportNames = []string{
	"proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure",
	"proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
	"proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers",
	"proxy_on_log", "proxy_on_done", "proxy_on_delete", "proxy_on_tick", "proxy_on_http_call_response",
}

func (p *Plugin) newInstance(ctx context.Context) (*instance, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.e.timeout*5)
	defer cancel()
	in := &instance{p: p, fns: map[string]api.Function{}, streams: map[uint32]*stream{}, nextID: rootContextID}
	cctx = context.WithValue(cctx, stateKey{}, &callState{p: p, inst: in})
	mc := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize").
		WithSysWalltime().WithSysNanotime()
	m, err := p.e.rt.InstantiateModule(cctx, p.mod, mc)
	if err != nil {
		return nil, fmt.Errorf("wasm: plugin %q: instantiate: %w", p.cfg.Name, err)
	}
	in.mod = m
	if m.ExportedFunction("proxy_abi_version_0_2_1") == nil && m.ExportedFunction("proxy_abi_version_0_1_0") == nil {
		_ = m.Close(ctx)
		return nil, fmt.Errorf("wasm: plugin %q: no proxy_abi_version_0_2_1 or _0_1_0 export", p.cfg.Name)
	}
	in.alloc = m.ExportedFunction("proxy_on_memory_allocate")
	if in.alloc == nil {
		in.alloc = m.ExportedFunction("malloc")
	}
	for _, n := range exportNames {
		if f := m.ExportedFunction(n); f != nil {
			in.fns[n] = f
		}
	}
	fail := func(err error) (*instance, error) {
		_ = m.Close(ctx)
		return nil, fmt.Errorf("wasm: plugin %q: %w", p.cfg.Name, err)
	}
	if _, err := in.call(cctx, "proxy_on_context_create", rootContextID, 0); err != nil {
		return fail(err)
	}
	if r, err := in.call(cctx, "proxy_on_vm_start", rootContextID, uint64(len(p.cfg.VMConfiguration))); err != nil {
		return fail(err)
	} else if r == 0 {
		return fail(errors.New("proxy_on_vm_start returned false"))
	}
	if r, err := in.call(cctx, "proxy_on_configure", rootContextID, uint64(len(p.cfg.Configuration))); err != nil {
		return fail(err)
	} else if r == 0 {
		return fail(errors.New("proxy_on_configure returned false (configuration rejected)"))
	}
	return in, nil
}

const rootContextID = 1

// errPluginClosed: an update removed the plugin; a request that still
// reaches it goes on without it, as under the new configuration.
var errPluginClosed = errors.New("plugin closed")

// call calls an export. A missing optional export succeeds: boolean
// callbacks (vm_start, configure, done) return true, others 0 (Continue).
// The caller holds in.mu (or owns in exclusively).
func (in *instance) call(ctx context.Context, name string, args ...uint64) (uint64, error) {
	f := in.fns[name]
	if f == nil {
		if name == "proxy_on_vm_start" || name == "proxy_on_configure" || name == "proxy_on_done" {
			return 1, nil
		}
		return 0, nil
	}
	if n := len(f.Definition().ParamTypes()); n < len(args) {
		args = args[:n] // ABI 0.1.0 headers callbacks have no end_of_stream
	}
	res, err := f.Call(ctx, args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if len(res) > 0 {
		return res[0], nil
	}
	return 0, nil
}

func (in *instance) has(name string) bool { return in.fns[name] != nil }

// guest runs one guest call with the engine's call timeout and st as the
// host functions' state. A failure breaks the instance.
func (in *instance) guest(st *callState, name string, args ...uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), in.p.e.timeout)
	defer cancel()
	ctx = context.WithValue(ctx, stateKey{}, st)
	in.mu.Lock()
	r, err := in.call(ctx, name, args...)
	in.mu.Unlock()
	if err != nil {
		in.p.Failures.Add(1)
		in.p.breakInstance(in)
		return 0, err
	}
	return r, nil
}

// bind picks an instance for a new stream (round robin over the live
// ones, adding one while the pool has room and all are busy).
func (p *Plugin) bind(ctx context.Context) (*instance, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPluginClosed
	}
	var pick *instance
	for i := range p.insts {
		in := p.insts[(p.next+i)%len(p.insts)]
		if in.active == 0 {
			pick = in
			break
		}
	}
	if pick == nil && len(p.insts) > 0 && len(p.insts)+p.creating >= p.e.poolSize {
		pick = p.insts[p.next%len(p.insts)]
		p.next++
	}
	if pick != nil {
		pick.active++
		p.mu.Unlock()
		return pick, nil
	}
	p.creating++
	p.mu.Unlock()
	in, err := p.newInstance(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.creating--
	if err != nil {
		return nil, err
	}
	if p.closed {
		_ = in.mod.Close(context.Background())
		return nil, errPluginClosed
	}
	p.insts = append(p.insts, in)
	in.active++
	return in, nil
}

// unbind ends a stream's hold on in; a broken instance closes with its
// last stream.
func (p *Plugin) unbind(in *instance) {
	p.mu.Lock()
	in.active--
	closeIt := in.broken && in.active == 0
	p.mu.Unlock()
	if closeIt {
		_ = in.mod.Close(context.Background())
	}
}

// breakInstance takes a failed instance out of service.
func (p *Plugin) breakInstance(in *instance) {
	p.mu.Lock()
	if in.broken {
		p.mu.Unlock()
		return
	}
	in.broken = true
	for i, x := range p.insts {
		if x == in {
			p.insts = append(p.insts[:i:i], p.insts[i+1:]...)
			break
		}
	}
	closeIt := in.active == 0
	p.mu.Unlock()
	if closeIt {
		_ = in.mod.Close(context.Background())
	}
}

// rootInstance returns the instance that runs the root context's timer
// and callouts started outside a stream: the oldest live one.
func (p *Plugin) rootInstance() (*instance, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errors.New("plugin closed")
	}
	if len(p.insts) > 0 {
		in := p.insts[0]
		p.mu.Unlock()
		return in, nil
	}
	p.mu.Unlock()
	in, err := p.newInstance(p.ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = in.mod.Close(context.Background())
		return nil, errors.New("plugin closed")
	}
	p.insts = append([]*instance{in}, p.insts...)
	return in, nil
}

// setTick is proxy_set_tick_period_milliseconds (0 stops the timer).
func (p *Plugin) setTick(d time.Duration) {
	p.mu.Lock()
	changed := p.tick != d
	p.tick = d
	p.mu.Unlock()
	if !changed {
		return
	}
	select {
	case <-p.tickCh:
	default:
	}
	p.tickCh <- d
}

// tickLoop calls proxy_on_tick on the root instance every tick period
// until the plugin is closed.
func (p *Plugin) tickLoop() {
	var t *time.Ticker
	var c <-chan time.Time
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		select {
		case <-p.ctx.Done():
			return
		case d := <-p.tickCh:
			if t != nil {
				t.Stop()
				t, c = nil, nil
			}
			if d > 0 {
				t = time.NewTicker(d)
				c = t.C
			}
		case <-c:
			in, err := p.rootInstance()
			if err != nil {
				p.e.log.Warn("wasm tick: no instance", "plugin", p.cfg.Name, "err", err)
				continue
			}
			p.Ticks.Add(1)
			if _, err := in.guest(&callState{p: p, inst: in}, "proxy_on_tick", rootContextID); err != nil {
				p.e.log.Warn("wasm plugin failed in proxy_on_tick", "plugin", p.cfg.Name, "err", err)
			}
		}
	}
}

// Filter runs the plugin without the response phases (listener.HTTPFilter;
// the listener calls FilterResponse instead).
func (p *Plugin) Filter(w http.ResponseWriter, r *http.Request) bool {
	_, done, handled := p.FilterResponse(w, r)
	if done != nil {
		done(listener.StreamInfo{})
	}
	return handled
}

// fail answers a request whose plugin failed: nothing when fail-open,
// else a 503 with the wasm_fail_stream details. It reports whether it
// answered.
func (p *Plugin) fail(w http.ResponseWriter, err error) bool {
	p.e.log.Warn("wasm plugin failed", "plugin", p.cfg.Name, "fail_open", p.cfg.FailOpen, "err", err)
	if p.cfg.FailOpen {
		return false
	}
	w.Header().Set(DetailsHeader, FailedDetails)
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(FailedDetails + "\n"))
	return true
}

type stateKey struct{}

// callState is the host side of one guest call: the plugin, the instance,
// and the effective context (nil: the root context).
type callState struct {
	p    *Plugin
	inst *instance
	s    *stream
	// origin is the stream whose callback this is (nil for root calls).
	origin *stream
	// call is the http call response during proxy_on_http_call_response.
	call *calloutResponse
}

type localReply struct {
	status  int
	details string
	body    []byte
	headers [][2]string
}
