package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Config is one benchmark run. Zero durations take the defaults below.
type Config struct {
	Weft    string // weft binary
	Fortio  string // fortio binary
	HAProxy string // haproxy binary; empty skips topology C
	// FloorRelay is the floorrelay binary (test/bench/cmd/floorrelay) of
	// topology E, the Go runtime's floor: empty builds it with `go build`
	// (skipped if that fails); "none" skips topology E.
	FloorRelay string
	// Duration of the constant-rate run per topology (default 60s).
	Duration time.Duration
	// QPS of the constant-rate run (default 1000) and its connections
	// (default 8). Its requests are evenly spaced (fortio -uniform: one
	// every 1/QPS s in all, the connections offset from each other),
	// which is what a constant rate means and how Istio's own benchmark
	// scripts de-synchronize fortio's connections (-jitter).
	QPS, Conns int
	// LockstepDuration is an extra constant-rate run with fortio's
	// default timing, in which every connection fires at the same
	// instant (8 requests together every 8 ms at 1000 rps over 8
	// connections): reported for comparison, no target. Default
	// Duration/3; negative skips it.
	LockstepDuration time.Duration
	// MaxDuration and MaxConns shape the -qps 0 run (default 20s, 16).
	MaxDuration time.Duration
	MaxConns    int
	// Rounds splits both runs into this many chunks per topology, run in
	// interleaved rounds (default 3; see measureRounds).
	Rounds int
	// Slices splits each round's constant-rate chunk further into this
	// many slices, run target after target (default 4: 12 slices of 5 s
	// per topology with the default 60 s and 3 rounds). A p99 is made of
	// rare stalls, and on a shared 2-core host their rate drifts within
	// a 20 s chunk; short alternating slices let every topology see the
	// same drift.
	Slices int
	// Services is how many extra ServiceEntries are applied before the
	// "RSS with N services" sample (default 100).
	Services int
	// BodySize is the upstream's response body in bytes (default 1024).
	BodySize int
	// WorkDir holds configs, logs and fortio output (default: a temp dir).
	WorkDir string
	// Perf, when set, records each proxy with `perf record -g` during the
	// max-throughput run into WorkDir/perf-NAME-PID.data (Linux perf needed).
	Perf bool
	// PProf, when set, fetches a Go CPU profile of each weft proxy over the
	// max-throughput run from its admin /debug/pprof/profile into
	// WorkDir/pprof-TAG-N.pb.gz (read with `go tool pprof`).
	PProf bool
	// ProxyEnv is added to the weft proxies' environment (e.g. GOMAXPROCS=1).
	ProxyEnv []string
	Logger   *slog.Logger
}

func (c *Config) defaults() {
	if c.Duration == 0 {
		c.Duration = 60 * time.Second
	}
	if c.QPS == 0 {
		c.QPS = 1000
	}
	if c.Conns == 0 {
		c.Conns = 8
	}
	if c.LockstepDuration == 0 {
		c.LockstepDuration = c.Duration / 3
	}
	if c.MaxDuration == 0 {
		c.MaxDuration = 20 * time.Second
	}
	if c.MaxConns == 0 {
		c.MaxConns = 16
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Slices <= 0 {
		c.Slices = 4
	}
	if c.Services == 0 {
		c.Services = 100
	}
	if c.BodySize == 0 {
		c.BodySize = 1024
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Topology is the measurement of one path.
type Topology struct {
	Name    string
	Skipped string  // why it was not measured, if it was not
	P50     float64 // seconds, constant-rate run
	P90     float64
	P99     float64
	// LockP50, LockP90 and LockP99 are the lockstep run's (seconds),
	// LockCPUPer1K its proxy CPU seconds per 1000 requests, summed.
	LockP50, LockP90, LockP99, LockCPUPer1K float64
	Requests                                int64 // constant-rate run
	Errors                                  int64 // non-200 answers in both runs
	MaxRPS                                  float64
	// RoundMaxRPS is each round's max-throughput chunk, in round order.
	RoundMaxRPS []float64
	Procs       int     // proxy processes on the path
	RSS         int64   // bytes, summed over the proxies, after the constant-rate run
	CPUPer1K    float64 // proxy CPU seconds per 1000 requests, summed, constant-rate run
	RSSMax      int64   // bytes, largest single proxy, after the extra services (weft only)
	RSSAnon     int64   // bytes, RssAnon part of RSS (the rest maps the binary), summed
	// RSSMaxAnon and RSSMaxFile split RSSMax (that proxy's
	// /proc/PID/smaps_rollup): anonymous (heap, stacks) and file-backed
	// (pages of the weft binary and libraries).
	RSSMaxAnon, RSSMaxFile int64
	// RSSMaxPSS is that proxy's proportional set size: pages shared with
	// other processes (the executable's, mapped by every weft proxy of
	// the run) count in part.
	RSSMaxPSS int64
	// ProxyExe is the executable the weft proxies ran (/proc/PID/exe):
	// `weft proxy` replaces itself with weft-proxy, the proxy-only build,
	// when it is next to weft.
	ProxyExe string
	// NewConns is how many connections the server sidecar accepted during
	// the measurement (mTLS topology only: each is a full handshake), and
	// NewConnsPerSec that count over the measurement's wall time.
	NewConns       int64
	NewConnsPerSec float64
}

// Report is the result of Run.
type Report struct {
	Config     Config
	Topologies []Topology
}

// Run starts the upstream, the proxies and the control plane, measures every
// topology in turn and stops everything before returning.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	if cfg.WorkDir == "" {
		d, err := os.MkdirTemp("", "weft-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		cfg.WorkDir = d
	}
	r := &runner{cfg: cfg, log: cfg.Logger}
	defer r.stopAll()

	upstream, err := r.startUpstream(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Config: cfg}
	direct := &Topology{Name: "A direct"}
	targets := []*target{{t: direct, tag: "direct", url: "http://" + upstream + "/"}}
	weft := &Topology{Name: "B weft→weft", Procs: 2}
	tg, err := r.startWeft(ctx, weft, upstream, false)
	if err != nil {
		return nil, fmt.Errorf("weft: %w", err)
	}
	targets = append(targets, tg)
	ha := &Topology{Name: "C haproxy→haproxy", Procs: 2}
	if cfg.HAProxy == "" {
		ha.Skipped = "haproxy not found"
	} else {
		tg, err := r.startHAProxy(ctx, ha, upstream)
		if err != nil {
			return nil, fmt.Errorf("haproxy: %w", err)
		}
		targets = append(targets, tg)
	}
	mt := &Topology{Name: "D weft→weft mTLS", Procs: 2}
	if tg, err = r.startWeft(ctx, mt, upstream, true); err != nil {
		return nil, fmt.Errorf("weft mTLS: %w", err)
	}
	targets = append(targets, tg)
	floor := &Topology{Name: "E Go floor relay", Procs: 2}
	if bin, why := r.floorRelay(ctx); bin == "" {
		floor.Skipped = why
	} else {
		tg, err := r.startFloorRelay(ctx, floor, bin, upstream)
		if err != nil {
			return nil, fmt.Errorf("floor relay: %w", err)
		}
		targets = append(targets, tg)
	}
	if err := r.measureRounds(ctx, targets); err != nil {
		return nil, err
	}
	for _, t := range []*Topology{direct, weft, ha, mt, floor} {
		rep.Topologies = append(rep.Topologies, *t)
	}
	return rep, nil
}

type runner struct {
	cfg   Config
	log   *slog.Logger
	procs []*exec.Cmd
	stops []func()
}

func (r *runner) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		_ = syscall.Kill(-r.procs[i].Process.Pid, syscall.SIGTERM)
	}
	for _, c := range r.procs {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	r.procs = nil
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
}

// spawn starts a long-running child in its own process group, logging to
// WorkDir/NAME.log.
func (r *runner) spawn(name, bin string, args ...string) (*exec.Cmd, error) {
	return r.spawnEnv(name, nil, bin, args...)
}

// spawnEnv is spawn with extra environment variables.
func (r *runner) spawnEnv(name string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(r.cfg.WorkDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r.stops = append(r.stops, func() { f.Close() })
	r.procs = append(r.procs, cmd)
	r.log.Info("started", "name", name, "pid", cmd.Process.Pid)
	return cmd, nil
}

func (r *runner) logTail(name string) string {
	b, _ := os.ReadFile(filepath.Join(r.cfg.WorkDir, name+".log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (r *runner) startUpstream(ctx context.Context) (string, error) {
	body := []byte(strings.Repeat("x", r.cfg.BodySize))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	r.stops = append(r.stops, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	return l.Addr().String(), nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func freeAddrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

// waitHTTP polls url (with an optional Host override) until it answers 200.
func waitHTTP(ctx context.Context, url, host string, timeout time.Duration, died <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	last := "no attempt"
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-died:
			return errors.New("process exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s (last: %s)", url, timeout, last)
}
