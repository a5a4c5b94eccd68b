package proxy

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestScaleDecider(t *testing.T) {
	d := scaleDecider{max: 4, procs: 1}
	steps := []struct {
		cpus float64
		want int
	}{
		{0.1, 1}, {0.39, 1}, // light load stays on one P
		{0.4, 4}, // busy: the maximum at once
		{0.3, 4}, // in the band: stays
		{0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4},
		{0.25, 4}, // a sample in the band restarts the count
		{0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4},
		{0.19, 1}, // the eighth low sample in a row
		{0.3, 1},  // in the band: stays low
		{2.5, 4},
	}
	for i, s := range steps {
		if got := d.next(s.cpus); got != s.want {
			t.Fatalf("step %d: next(%v) = %d, want %d", i, s.cpus, got, s.want)
		}
	}
}

// TestConcurrencyScalerSamples drives Run with a fake CPU clock: the CPU
// used per wall interval decides, and the changes are counted and shown.
func TestConcurrencyScalerSamples(t *testing.T) {
	var mu sync.Mutex
	var cpu time.Duration
	wall := time.Unix(0, 0)
	var sets []int
	s := NewConcurrencyScaler(2)
	s.interval = time.Millisecond
	s.cpuTime = func() (time.Duration, error) { mu.Lock(); defer mu.Unlock(); return cpu, nil }
	// Each sample is 100 ms of "wall time"; busy decides the CPU used in it.
	var busy atomic.Bool
	s.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		wall = wall.Add(100 * time.Millisecond)
		if busy.Load() {
			cpu += 90 * time.Millisecond
		} else {
			cpu += 5 * time.Millisecond
		}
		return wall
	}
	procs := make(chan int, 100)
	s.set = func(n int) { sets = append(sets, n); procs <- n }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	wait := func(want int) {
		t.Helper()
		select {
		case n := <-procs:
			if n != want {
				t.Fatalf("GOMAXPROCS set to %d, want %d", n, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("GOMAXPROCS never set to %d", want)
		}
	}
	wait(2) // the maximum to start with
	wait(1) // quiet
	busy.Store(true)
	wait(2)
	busy.Store(false)
	wait(1)
	var b bytes.Buffer
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "server.concurrency: 1\n") || !strings.Contains(b.String(), "server.concurrency_changes: 3\n") {
		t.Errorf("stats:\n%s", b.String())
	}
	b.Reset()
	if err := s.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "weft_server_concurrency 1\n") || !strings.Contains(b.String(), "weft_server_concurrency_max 2\n") {
		t.Errorf("prometheus:\n%s", b.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wait(2) // the maximum again once stopped
	if len(sets) != 5 {
		t.Errorf("GOMAXPROCS set %v, want [2 1 2 1 2]", sets)
	}
}

// TestConcurrencyScalerRuntime runs the scaler on this process: burning
// CPU raises GOMAXPROCS, idling lowers it again.
func TestConcurrencyScalerRuntime(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	s := NewConcurrencyScaler(2)
	s.interval = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	waitProcs := func(want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for runtime.GOMAXPROCS(0) != want || s.Procs() != want {
			if time.Now().After(deadline) {
				t.Fatalf("GOMAXPROCS %d, scaler %d; want %d", runtime.GOMAXPROCS(0), s.Procs(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitProcs(1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for x := 0; !stop.Load(); x++ {
				if x%1024 == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	waitProcs(2)
	stop.Store(true)
	wg.Wait()
	waitProcs(1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Errorf("GOMAXPROCS after Run = %d, want the maximum 2", got)
	}
}
