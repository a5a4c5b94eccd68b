package lb

import (
	"math"
	"testing"
	"time"
)

type warmingHost struct {
	host
	start int64
}

func (h *warmingHost) SlowStartAt() int64 { return h.start }

func TestSlowStartFactor(t *testing.T) {
	const s = int64(time.Second)
	t0 := int64(1_000_000) * s // a fake clock's epoch
	cases := []struct {
		name       string
		cfg        SlowStart
		start, now int64
		want       float64
	}{
		{"present from the start", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10}, 0, t0, 1},
		{"just added: minimum percent", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10}, t0, t0, 0.1},
		{"linear below the minimum", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10}, t0, t0 + s/2, 0.1},
		{"linear at a quarter", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10, Aggression: 1}, t0, t0 + 5*s/2, 0.25},
		{"linear at half", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10}, t0, t0 + 5*s, 0.5},
		{"just before the end", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10}, t0, t0 + 10*s - int64(time.Millisecond), 0.9999},
		{"window over", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10}, t0, t0 + 10*s, 1},
		{"aggression 2 at a quarter: square root", SlowStart{Window: 10 * time.Second, MinWeightPercent: 10, Aggression: 2}, t0, t0 + 5*s/2, 0.5},
		{"aggression 0.5 at half: square", SlowStart{Window: 10 * time.Second, Aggression: 0.5}, t0, t0 + 5*s, 0.25},
		{"aggression 4, minimum 1 %", SlowStart{Window: 16 * time.Second, MinWeightPercent: 1, Aggression: 4}, t0, t0 + s, 0.5},
		{"invalid aggression counts as 1", SlowStart{Window: 10 * time.Second, Aggression: -3}, t0, t0 + 3*s, 0.3},
		{"age counted as at least 1 ms", SlowStart{Window: time.Second}, t0, t0 - s, 0.001},
		{"no window", SlowStart{}, t0, t0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cfg.Factor(tc.start, tc.now); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("Factor = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSlowStartRamp draws from two equal hosts, one added at t0, on a fake
// clock across the window: the new host's share follows
// f/(1+f) with f = max(10 %, age/window), then is half after the window.
func TestSlowStartRamp(t *testing.T) {
	const s = int64(time.Second)
	t0 := int64(1_000_000) * s
	old := &warmingHost{host: host{key: "a", healthy: true, weight: 1}}
	fresh := &warmingHost{host: host{key: "b", healthy: true, weight: 1}, start: t0}
	hs := []Host{old, fresh}
	cfg := SlowStart{Window: 10 * time.Second, MinWeightPercent: 10, Aggression: 1}
	for _, lr := range []bool{false, true} {
		var inner Picker = &RoundRobin{}
		if lr {
			inner = &LeastRequest{Rnd: rnd()}
		}
		p := &SlowStartPicker{Inner: inner, Config: cfg, Rnd: rnd(), LeastRequest: lr, Latest: t0}
		for _, at := range []int64{0, s, 5 * s, 8 * s, 10 * s, 60 * s} {
			const n = 40000
			got := 0
			for i := 0; i < n; i++ {
				if p.Pick(hs, t0+at, 0) == 1 {
					got++
				}
			}
			f := cfg.Factor(t0, t0+at)
			want := f / (1 + f) // least request: no request in flight, so the first draw wins
			share := float64(got) / n
			t.Logf("least_request=%v t=%ds: new host share %.3f (want %.3f)", lr, at/s, share, want)
			if math.Abs(share-want) > 0.02 {
				t.Errorf("least_request=%v t=%ds: new host share %.3f, want %.3f", lr, at/s, share, want)
			}
		}
	}
}

// TestSlowStartLeastRequestPrefersIdle: while warming, least request still
// compares active requests per unit of effective weight.
func TestSlowStartLeastRequestPrefersIdle(t *testing.T) {
	const s = int64(time.Second)
	t0 := int64(1_000_000) * s
	busy := &warmingHost{host: host{key: "a", healthy: true, weight: 1, active: 50}}
	fresh := &warmingHost{host: host{key: "b", healthy: true, weight: 1}, start: t0}
	p := &SlowStartPicker{Inner: &LeastRequest{Rnd: rnd()}, Config: SlowStart{Window: 10 * time.Second, MinWeightPercent: 10},
		Rnd: rnd(), LeastRequest: true, Latest: t0}
	got := 0
	for i := 0; i < 10000; i++ {
		if p.Pick([]Host{busy, fresh}, t0+s, 0) == 1 {
			got++
		}
	}
	// The fresh host wins whenever it is one of the two draws: 1-(1/1.1)^2.
	want := 1 - (1/1.1)*(1/1.1)
	if share := float64(got) / 10000; math.Abs(share-want) > 0.02 {
		t.Fatalf("idle warming host share %.3f, want %.3f", share, want)
	}
}

// warmingHosts is n equal hosts, the last of which joined at start.
func warmingHosts(n int, start int64) []Host {
	out := make([]Host, n)
	for i := range out {
		out[i] = &warmingHost{host: host{key: "10.0.0." + string(rune('a'+i)) + ":80", healthy: true, weight: 1}}
	}
	out[n-1].(*warmingHost).start = start
	return out
}

// BenchmarkSlowStart: 16 hosts, one warming (the effective-weight draws)
// or past its window (the plain picker behind the time check); compare
// with BenchmarkRoundRobin / BenchmarkLeastRequest in the same run.
func BenchmarkSlowStart(b *testing.B) {
	const t0 = int64(1_000_000) * int64(time.Second)
	cfg := SlowStart{Window: 10 * time.Second, MinWeightPercent: 10, Aggression: 1}
	for _, bc := range []struct {
		name string
		lr   bool
		now  int64
	}{
		{"round_robin/warming", false, t0 + int64(time.Second)},
		{"round_robin/warm", false, t0 + int64(time.Minute)},
		{"least_request/warming", true, t0 + int64(time.Second)},
		{"least_request/warm", true, t0 + int64(time.Minute)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var inner Picker = &RoundRobin{}
			if bc.lr {
				inner = &LeastRequest{Rnd: rnd()}
			}
			p := &SlowStartPicker{Inner: inner, Config: cfg, Rnd: rnd(), LeastRequest: bc.lr, Latest: t0}
			hs := warmingHosts(16, t0)
			b.ReportAllocs()
			for b.Loop() {
				if p.Pick(hs, bc.now, 0) < 0 {
					b.Fatal("no host")
				}
			}
		})
	}
}
