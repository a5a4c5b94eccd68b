package wasm

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"github.com/tetratelabs/wazero"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var (
	// compileCache shares compiled modules between the tests' engines.
	compileCache = wazero.NewCompilationCache()
	buildDir     string
	buildMu      sync.Mutex
	buildDone    = map[string]string{}
)

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "weft-wasm-*")
	if err != nil {
		panic(err)
	}
	buildDir = d
	code := m.Run()
	_ = os.RemoveAll(d)
	os.Exit(code)
}

// example builds examples/wasm/<name> once per test binary.
func example(tb testing.TB, name string) []byte {
	tb.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	out, ok := buildDone[name]
	if !ok {
		out = filepath.Join(buildDir, name+".wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./"+name)
		cmd.Dir = filepath.Join("..", "..", "..", "..", "examples", "wasm")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("build %s: %v\n%s", name, err, b)
		}
		buildDone[name] = out
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// testLogger discards logs unless WASM_TEST_LOG is set.
func testLogger() *slog.Logger {
	var lw io.Writer = io.Discard
	if os.Getenv("WASM_TEST_LOG") != "" {
		lw = os.Stderr
	}
	return slog.New(slog.NewTextHandler(lw, nil))
}

func newEngine(tb testing.TB, opts ...Option) *Engine {
	tb.Helper()
	opts = append([]Option{WithCompilationCache(compileCache)}, opts...)
	e, err := NewEngine(context.Background(), testLogger(), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func serve(p *Plugin, req *http.Request) (*httptest.ResponseRecorder, bool) {
	w := httptest.NewRecorder()
	return w, p.Filter(w, req)
}

func TestHeaderPlugin(t *testing.T) {
	e := newEngine(t)
	code := example(t, "go-header")
	tests := []struct {
		name, config, want string
	}{
		{"default", "", "Hello from WASM!"},
		{"configured", "custom value", "custom value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.NewPlugin(context.Background(), code, PluginConfig{Name: "hdr", Configuration: []byte(tt.config)})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				r := httptest.NewRequest("GET", "/x", nil)
				if _, handled := serve(p, r); handled {
					t.Fatal("header plugin answered the request")
				}
				if got := r.Header.Get("x-my-header"); got != tt.want {
					t.Fatalf("x-my-header = %q, want %q", got, tt.want)
				}
			}
		})
	}
	if e.Compiled() != 1 {
		t.Errorf("compiled modules = %d, want 1 (cache by sha256)", e.Compiled())
	}
}

func TestDenyPlugin(t *testing.T) {
	e := newEngine(t)
	p, err := e.NewPlugin(context.Background(), example(t, "go-deny"), PluginConfig{Name: "deny"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		allowed bool
		want    int // 0: passed through
	}{
		{"without header", false, 403},
		{"with header", true, 0},
		{"without header again", false, 403},
	}
	denied := int64(0)
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/secret", nil)
		if tt.allowed {
			r.Header.Set("x-allowed", "1")
		}
		w, handled := serve(p, r)
		if handled != (tt.want != 0) {
			t.Fatalf("%s: handled = %v", tt.name, handled)
		}
		if tt.want != 0 {
			denied++
			if w.Code != tt.want || w.Body.String() != "denied by wasm\n" || w.Header().Get("x-denied-by") != "go-deny" || w.Header().Get(DetailsHeader) != "go_deny" {
				t.Fatalf("%s: got %d %q %v", tt.name, w.Code, w.Body.String(), w.Header())
			}
		}
		if v, ok := e.Metric("wasm_go_deny_denied_total"); !ok || v != denied {
			t.Fatalf("%s: metric = %d, %v; want %d", tt.name, v, ok, denied)
		}
	}
	var sb stringsBuilder
	if err := e.WritePrometheus(&sb); err != nil || !contains(sb.s, "wasm_go_deny_denied_total 2") {
		t.Fatalf("prometheus: %q %v", sb.s, err)
	}
}

type stringsBuilder struct{ s string }

func (b *stringsBuilder) Write(p []byte) (int, error) { b.s += string(p); return len(p), nil }

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestTrapPlugin(t *testing.T) {
	e := newEngine(t, WithCallTimeout(300*time.Millisecond))
	code := example(t, "go-trap")
	tests := []struct {
		name     string
		config   string
		failOpen bool
		want     int
	}{
		{"panic fail-open", "", true, 0},
		{"panic fail-closed", "", false, 503},
		{"timeout fail-closed", "loop", false, 503},
		{"timeout fail-open", "loop", true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.NewPlugin(context.Background(), code, PluginConfig{Name: tt.name, Configuration: []byte(tt.config), FailOpen: tt.failOpen})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ { // a new instance replaces the broken one
				start := time.Now()
				w, handled := serve(p, httptest.NewRequest("GET", "/", nil))
				if handled != (tt.want != 0) {
					t.Fatalf("handled = %v", handled)
				}
				if tt.want != 0 && (w.Code != tt.want || w.Header().Get(DetailsHeader) != FailedDetails) {
					t.Fatalf("got %d %v", w.Code, w.Header())
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Fatalf("call took %v", d)
				}
			}
			if p.Failures.Load() != 2 {
				t.Fatalf("failures = %d, want 2", p.Failures.Load())
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	e := newEngine(t)
	f := e.Factory()
	wrap := func(pc *wasmv3.PluginConfig) *anypb.Any {
		a, err := anypb.New(&wasmhttpv3.Wasm{Config: pc})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "h.wasm")
	if err := os.WriteFile(file, example(t, "go-header"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _ := anypb.New(wrapperspb.String("from typed config"))
	local := func(ds *corev3.DataSource) *wasmv3.PluginConfig {
		return &wasmv3.PluginConfig{Name: "p", Configuration: cfg, Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{
			Code: &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{Local: ds}}}}}
	}
	tests := []struct {
		name string
		pc   *wasmv3.PluginConfig
		ok   bool
	}{
		{"file", local(&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: file}}), true},
		{"inline", local(&corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: example(t, "go-header")}}), true},
		{"missing file", local(&corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: filepath.Join(dir, "nope")}}), false},
		{"not wasm", local(&corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("garbage")}}), false},
		{"no vm", &wasmv3.PluginConfig{Name: "p"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hf, err := f(wrap(tt.pc))
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				return
			}
			r := httptest.NewRequest("GET", "/", nil)
			hf.Filter(httptest.NewRecorder(), r)
			if got := r.Header.Get("x-my-header"); got != "from typed config" {
				t.Fatalf("x-my-header = %q", got)
			}
		})
	}
}

func TestPoolConcurrency(t *testing.T) {
	e := newEngine(t, WithPoolSize(3))
	p, err := e.NewPlugin(context.Background(), example(t, "go-deny"), PluginConfig{Name: "deny-pool"})
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 10
	var wg sync.WaitGroup
	errs := make(chan string, workers*per)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < per; j++ {
				r := httptest.NewRequest("GET", "/", nil)
				allowed := (i+j)%2 == 0
				if allowed {
					r.Header.Set("x-allowed", "yes")
				}
				w, handled := serve(p, r)
				if handled == allowed || (!allowed && w.Code != 403) {
					errs <- "wrong outcome"
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if v, _ := e.Metric("wasm_go_deny_denied_total"); v != workers*per/2 {
		t.Fatalf("denied = %d, want %d", v, workers*per/2)
	}
	if n := p.Instances(); n > 3 || n < 1 {
		t.Fatalf("idle instances = %d, want 1..3", n)
	}
}

func BenchmarkHeaderPlugin(b *testing.B) {
	e := newEngine(b, WithPoolSize(1))
	p, err := e.NewPlugin(context.Background(), example(b, "go-header"), PluginConfig{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	in, err := p.newInstance(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	guest, host := float64(in.mod.Memory().Size()), float64(int64(ms.HeapAlloc)-int64(before))
	_ = in.mod.Close(context.Background())
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/bench", nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Header.Del("x-my-header")
		p.Filter(w, r)
	}
	b.StopTimer()
	if r.Header.Get("x-my-header") == "" {
		b.Fatal("header not added")
	}
	b.ReportMetric(guest, "guest-mem-B/instance")
	b.ReportMetric(host, "host-heap-B/instance")
}

// TestAssemblyScriptHeader runs the seed's plugin built from AssemblyScript
// (examples/wasm/assemblyscript, `make wasm-examples`; the committed build
// is the fallback when npm is missing).
func TestAssemblyScriptHeader(t *testing.T) {
	code, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "examples", "wasm", "assemblyscript", "build", "header.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t)
	for _, tt := range []struct{ config, want string }{{"", "Hello from WASM!"}, {"from config", "from config"}} {
		p, err := e.NewPlugin(context.Background(), code, PluginConfig{Name: "as-header", Configuration: []byte(tt.config)})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ { // enough requests for the AssemblyScript GC to run
			r := httptest.NewRequest("GET", "/x", nil)
			if _, handled := serve(p, r); handled {
				t.Fatal("header plugin answered the request")
			}
			if got := r.Header.Get("x-my-header"); got != tt.want {
				t.Fatalf("request %d: x-my-header = %q, want %q", i, got, tt.want)
			}
		}
	}
}
