package proxy

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Adaptive concurrency: a sidecar runs Go code on one P (GOMAXPROCS=1)
// while it is lightly loaded and on up to --concurrency Ps when it is
// busy. With two Ps and a request every millisecond, each request that
// wakes the process also wakes a second thread, which spins looking for
// work and goes back to sleep (the runtime's wakep/resetspinning): 7 % of
// the proxy's CPU at 1000 rps in the session-10 A/B, with no gain in
// latency or throughput at that load. A process already using a good part
// of a CPU gets its Ps back at once. The proxy starts with all its Ps
// (startup decodes and applies the first configuration) and drops to
// one once it has been quiet for two seconds.

// Scaling thresholds, in CPUs used by the whole process over one sample.
const (
	// ScaleUpCPU: at one P, a sample using at least this much raises
	// GOMAXPROCS to the maximum. One P saturates at ~1 CPU, and queueing
	// behind one P starts to show in the tail well before that.
	ScaleUpCPU = 0.4
	// ScaleDownCPU: at the maximum, scaleDownSamples samples in a row
	// below this lower GOMAXPROCS to one. The band between the two keeps
	// a steady load from flapping (spinning adds well under half).
	ScaleDownCPU = 0.2
	// scaleDownSamples at scaleInterval: two seconds of low load.
	scaleDownSamples = 8
	scaleInterval    = 250 * time.Millisecond
)

// scaleDecider decides GOMAXPROCS from one CPU-use sample at a time.
type scaleDecider struct {
	max   int // Ps when busy (>= 2)
	procs int // current Ps: 1 or max
	low   int // consecutive samples below ScaleDownCPU at max
}

// next takes the CPUs the process used over the last sample and returns
// the Ps to run with from now on.
func (d *scaleDecider) next(cpus float64) int {
	switch {
	case d.procs < d.max && cpus >= ScaleUpCPU:
		d.procs, d.low = d.max, 0
	case d.procs > 1 && cpus < ScaleDownCPU:
		if d.low++; d.low >= scaleDownSamples {
			d.procs, d.low = 1, 0
		}
	default:
		d.low = 0
	}
	return d.procs
}

// ConcurrencyScaler runs GOMAXPROCS between 1 and a maximum following
// the process's CPU use (see ScaleUpCPU, ScaleDownCPU). It reports the
// current value and the number of changes on /stats and
// /stats/prometheus (server.concurrency, like Envoy's stat of that name).
type ConcurrencyScaler struct {
	max     int
	procs   atomic.Int64
	changes atomic.Uint64

	// Test hooks: the process's CPU time, the clock and GOMAXPROCS.
	cpuTime  func() (time.Duration, error)
	now      func() time.Time
	set      func(int)
	interval time.Duration
}

// NewConcurrencyScaler returns a scaler for up to max Ps (max >= 2) that
// sets the runtime's GOMAXPROCS, starting from max.
func NewConcurrencyScaler(max int) *ConcurrencyScaler {
	return &ConcurrencyScaler{max: max, cpuTime: processCPUTime, now: time.Now,
		set: func(n int) { runtime.GOMAXPROCS(n) }, interval: scaleInterval}
}

// Run samples the process's CPU use every interval and sets GOMAXPROCS
// until ctx ends; it then leaves the maximum set.
func (s *ConcurrencyScaler) Run(ctx context.Context) error {
	d := scaleDecider{max: s.max, procs: s.max}
	s.apply(s.max)
	defer s.apply(s.max)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	last, err := s.cpuTime()
	if err != nil {
		return fmt.Errorf("adaptive concurrency: %w", err)
	}
	lastAt := s.now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cpu, err := s.cpuTime()
		if err != nil {
			return fmt.Errorf("adaptive concurrency: %w", err)
		}
		at := s.now()
		if wall := at.Sub(lastAt); wall > 0 {
			s.apply(d.next(float64(cpu-last) / float64(wall)))
		}
		last, lastAt = cpu, at
	}
}

func (s *ConcurrencyScaler) apply(n int) {
	if int(s.procs.Load()) == n {
		return
	}
	if s.procs.Swap(int64(n)) != 0 {
		s.changes.Add(1)
	}
	s.set(n)
}

// Procs is the GOMAXPROCS the scaler last set (0 before Run).
func (s *ConcurrencyScaler) Procs() int { return int(s.procs.Load()) }

// WriteText writes the scaler's stats for the admin /stats.
func (s *ConcurrencyScaler) WriteText(w io.Writer) error {
	_, err := fmt.Fprintf(w, "server.concurrency: %d\nserver.concurrency_max: %d\nserver.concurrency_changes: %d\n",
		s.Procs(), s.max, s.changes.Load())
	return err
}

// WritePrometheus writes the scaler's stats in the text exposition format.
func (s *ConcurrencyScaler) WritePrometheus(w io.Writer) error {
	_, err := fmt.Fprintf(w, "# TYPE weft_server_concurrency gauge\nweft_server_concurrency %d\n"+
		"# TYPE weft_server_concurrency_max gauge\nweft_server_concurrency_max %d\n"+
		"# TYPE weft_server_concurrency_changes_total counter\nweft_server_concurrency_changes_total %d\n",
		s.Procs(), s.max, s.changes.Load())
	return err
}

// processCPUTime is the user and system CPU time of the whole process.
func processCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
