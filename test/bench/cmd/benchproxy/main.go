// Command benchproxy runs the data-plane benchmark (`make bench-proxy`) and
// prints its table. Environment: BENCH_DURATION (constant-rate run per
// topology, evenly spaced requests, default 60s), BENCH_LOCKSTEP_DURATION
// (the same rate in fortio's default lockstep timing, for comparison;
// default a third of BENCH_DURATION, negative: skip),
// BENCH_MAX_DURATION (max-throughput run, default 20s), BENCH_ROUNDS (interleaved rounds the runs are split into, default
// 3), BENCH_QPS (default 1000), WEFT_BIN, FORTIO_BIN, HAPROXY_BIN,
// BENCH_FLOOR_RELAY (a prebuilt test/bench/cmd/floorrelay for topology E,
// the Go floor; "none" skips it; unset builds it),
// BENCH_PROXY_GOMAXPROCS (GOMAXPROCS of the weft proxies), BENCH_PROXY_ENV
// (more proxy environment, e.g. "GOGC=50 GOMEMLIMIT=16MiB"), BENCH_WORKDIR
// (keep configs, logs and fortio JSON there), BENCH_PERF=1 (record the
// proxies with perf during the max-throughput runs) and BENCH_PPROF=1 (Go
// CPU profiles of the weft proxies over the same runs); set BENCH_WORKDIR
// to keep the recordings.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftmesh/weft/test/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchproxy:", err)
		os.Exit(1)
	}
}

func envDuration(name string) (time.Duration, error) {
	v := os.Getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func lookBin(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	for _, c := range []string{def, "/usr/sbin/" + def} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	return ""
}

func run() error {
	cfg := bench.Config{
		Weft:       lookBin("WEFT_BIN", "weft"),
		Fortio:     lookBin("FORTIO_BIN", "fortio"),
		HAProxy:    lookBin("HAPROXY_BIN", "haproxy"),
		FloorRelay: os.Getenv("BENCH_FLOOR_RELAY"),
		WorkDir:    os.Getenv("BENCH_WORKDIR"),
		Perf:       os.Getenv("BENCH_PERF") == "1",
		PProf:      os.Getenv("BENCH_PPROF") == "1",
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if cfg.Weft == "" || cfg.Fortio == "" {
		return fmt.Errorf("need weft and fortio binaries (WEFT_BIN, FORTIO_BIN or PATH)")
	}
	var err error
	if cfg.Duration, err = envDuration("BENCH_DURATION"); err != nil {
		return err
	}
	if cfg.LockstepDuration, err = envDuration("BENCH_LOCKSTEP_DURATION"); err != nil {
		return err
	}
	if cfg.MaxDuration, err = envDuration("BENCH_MAX_DURATION"); err != nil {
		return err
	}
	if v := os.Getenv("BENCH_QPS"); v != "" {
		if cfg.QPS, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("BENCH_QPS: %w", err)
		}
	}
	if v := os.Getenv("BENCH_ROUNDS"); v != "" {
		if cfg.Rounds, err = strconv.Atoi(v); err != nil || cfg.Rounds < 1 {
			return fmt.Errorf("BENCH_ROUNDS: want a positive integer, got %q", v)
		}
	}
	if v := os.Getenv("BENCH_SLICES"); v != "" {
		if cfg.Slices, err = strconv.Atoi(v); err != nil || cfg.Slices < 1 {
			return fmt.Errorf("BENCH_SLICES: want a positive integer, got %q", v)
		}
	}
	if v := os.Getenv("BENCH_PROXY_GOMAXPROCS"); v != "" {
		cfg.ProxyEnv = append(cfg.ProxyEnv, "GOMAXPROCS="+v)
	}
	// BENCH_PROXY_ENV: more environment for the weft proxies, space
	// separated, e.g. "GOGC=50 GOMEMLIMIT=16MiB".
	cfg.ProxyEnv = append(cfg.ProxyEnv, strings.Fields(os.Getenv("BENCH_PROXY_ENV"))...)
	if cfg.WorkDir != "" {
		if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Bound the whole run: five topologies × (warm-up + both runs), fortio's
	// start per chunk, start-up.
	d, md := cfg.Duration, cfg.MaxDuration
	if d == 0 {
		d = 60 * time.Second
	}
	if md == 0 {
		md = 20 * time.Second
	}
	rounds, slices := max(cfg.Rounds, 3), max(cfg.Slices, 4)
	ctx, cancel := context.WithTimeout(ctx, 5*(d+md+10*time.Second)+time.Duration(rounds*(slices+2))*5*5*time.Second+3*time.Minute)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	return nil
}
