package wasm

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
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

// Plugin is a compiled module with its configuration and instance pool.
type Plugin struct {
	e     *Engine
	mod   wazero.CompiledModule
	cfg   PluginConfig
	slots chan struct{}
	idle  chan *instance
	ctxID atomic.Uint32
	// Failures counts failed guest calls (traps, timeouts).
	Failures atomic.Int64
}

type instance struct {
	mod   api.Module
	alloc api.Function
	fns   map[string]api.Function
}

// NewPlugin compiles (or reuses) code and creates one instance to check
// that the plugin starts and accepts its configuration.
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
	p = &Plugin{e: e, mod: mod, cfg: cfg, slots: make(chan struct{}, e.poolSize), idle: make(chan *instance, e.poolSize)}
	inst, err := p.newInstance(ctx)
	if err != nil {
		return nil, err
	}
	p.idle <- inst
	e.mu.Lock()
	e.plugins[key] = p
	e.mu.Unlock()
	return p, nil
}

var exportNames = []string{
	"proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure",
	"proxy_on_request_headers", "proxy_on_request_body", "proxy_on_response_headers",
	"proxy_on_response_body", "proxy_on_log", "proxy_on_done", "proxy_on_delete",
}

func (p *Plugin) newInstance(ctx context.Context) (*instance, error) {
	cctx, cancel := context.WithTimeout(ctx, p.e.timeout*5)
	defer cancel()
	st := &callState{p: p}
	cctx = context.WithValue(cctx, stateKey{}, st)
	mc := wazero.NewModuleConfig().WithName("").WithStartFunctions("_initialize").
		WithSysWalltime().WithSysNanotime()
	m, err := p.e.rt.InstantiateModule(cctx, p.mod, mc)
	if err != nil {
		return nil, fmt.Errorf("wasm: plugin %q: instantiate: %w", p.cfg.Name, err)
	}
	in := &instance{mod: m, fns: map[string]api.Function{}}
	st.inst = in
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

// call calls an export. A missing optional export succeeds: boolean
// callbacks (vm_start, configure, done) return true, others 0 (Continue).
func (in *instance) call(ctx context.Context, name string, args ...uint64) (uint64, error) {
	f := in.fns[name]
	if f == nil {
		if name == "proxy_on_vm_start" || name == "proxy_on_configure" || name == "proxy_on_done" {
			return 1, nil
		}
		return 0, nil
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

// acquire returns an idle instance or creates one, waiting while the pool
// is at capacity.
func (p *Plugin) acquire(ctx context.Context) (*instance, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case in := <-p.idle:
		return in, nil
	default:
	}
	in, err := p.newInstance(ctx)
	if err != nil {
		<-p.slots
		return nil, err
	}
	return in, nil
}

// release returns an instance to the pool, or closes it when broken.
func (p *Plugin) release(ctx context.Context, in *instance, broken bool) {
	if broken {
		_ = in.mod.Close(context.WithoutCancel(ctx))
	} else {
		select {
		case p.idle <- in:
		default:
			_ = in.mod.Close(context.WithoutCancel(ctx))
		}
	}
	<-p.slots
}

// Filter runs the plugin's request-header phase (listener.HTTPFilter). A
// local response from the plugin is written and ends the request.
func (p *Plugin) Filter(w http.ResponseWriter, r *http.Request) bool {
	st, err := p.run(r.Context(), w, r)
	if err != nil {
		p.Failures.Add(1)
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
	if lr := st.local; lr != nil {
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
		return true
	}
	return false
}

func (p *Plugin) run(ctx context.Context, w http.ResponseWriter, r *http.Request) (*callState, error) {
	in, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	broken := true
	defer func() { p.release(ctx, in, broken) }()
	cctx, cancel := context.WithTimeout(ctx, p.e.timeout)
	defer cancel()
	st := &callState{p: p, inst: in, r: r, w: w}
	cctx = context.WithValue(cctx, stateKey{}, st)
	id := uint64(p.ctxID.Add(1)) + rootContextID
	if _, err := in.call(cctx, "proxy_on_context_create", id, rootContextID); err != nil {
		return nil, err
	}
	eos := uint64(0)
	if r.ContentLength == 0 && r.Body == http.NoBody || r.Body == nil {
		eos = 1
	}
	if _, err := in.call(cctx, "proxy_on_request_headers", id, uint64(len(requestPairs(r))), eos); err != nil {
		return nil, err
	}
	// The hook has no later phases: the stream ends here for the plugin.
	st.done = true
	if _, err := in.call(cctx, "proxy_on_done", id); err != nil {
		return nil, err
	}
	if _, err := in.call(cctx, "proxy_on_log", id); err != nil {
		return nil, err
	}
	if _, err := in.call(cctx, "proxy_on_delete", id); err != nil {
		return nil, err
	}
	broken = false
	return st, nil
}

type stateKey struct{}

// callState is the host side of one guest call sequence.
type callState struct {
	p     *Plugin
	inst  *instance
	r     *http.Request
	w     http.ResponseWriter
	local *localReply
	done  bool
}

type localReply struct {
	status  int
	details string
	body    []byte
	headers [][2]string
}
