package lb

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

type host struct {
	key     string
	healthy bool
	active  int64
	weight  uint32
}

func (h *host) Healthy(int64) bool { return h.healthy }
func (h *host) Active() int64      { return h.active }
func (h *host) Weight() uint32     { return h.weight }
func (h *host) Key() string        { return h.key }

func hosts(n int) []Host {
	out := make([]Host, n)
	for i := range out {
		out[i] = &host{key: "10.0.0." + strconv.Itoa(i) + ":80", healthy: true, weight: 1}
	}
	return out
}

func rnd() Rand { return NewLockedRand(rand.New(rand.NewPCG(1, 2))) }

func TestPickersSkipUnhealthy(t *testing.T) {
	hs := hosts(5)
	hs[0].(*host).healthy = false
	hs[3].(*host).healthy = false
	pickers := map[string]Picker{
		"round_robin": &RoundRobin{}, "random": &Random{Rnd: rnd()}, "least_request": &LeastRequest{Rnd: rnd()},
		"ring_hash": NewRingHash(hs, 0), "maglev": NewMaglev(hs, 0),
	}
	for name, p := range pickers {
		t.Run(name, func(t *testing.T) {
			seen := map[int]int{}
			for i := 0; i < 300; i++ {
				idx := p.Pick(hs, 0, Hash64(strconv.Itoa(i)))
				if idx < 0 || !hs[idx].Healthy(0) {
					t.Fatalf("picked %d (unhealthy or none)", idx)
				}
				seen[idx]++
			}
			if len(seen) != 3 {
				t.Fatalf("picked hosts %v, want all 3 healthy ones", seen)
			}
		})
	}
}

func TestNoHealthyHost(t *testing.T) {
	hs := hosts(3)
	for _, h := range hs {
		h.(*host).healthy = false
	}
	for name, p := range map[string]Picker{"rr": &RoundRobin{}, "random": &Random{Rnd: rnd()}, "lr": &LeastRequest{Rnd: rnd()},
		"ring": NewRingHash(hs, 0), "maglev": NewMaglev(hs, 0)} {
		if idx := p.Pick(hs, 0, 1); idx != -1 {
			t.Errorf("%s picked %d with no healthy host", name, idx)
		}
		if idx := p.Pick(nil, 0, 1); idx != -1 && name != "ring" && name != "maglev" {
			t.Errorf("%s picked %d from no hosts", name, idx)
		}
	}
	// A single host: least request takes it without drawing, unless ejected.
	one := hosts(1)
	lr := &LeastRequest{Rnd: rnd()}
	if idx := lr.Pick(one, 0, 0); idx != 0 {
		t.Errorf("lr picked %d of one healthy host", idx)
	}
	one[0].(*host).healthy = false
	if idx := lr.Pick(one, 0, 0); idx != -1 {
		t.Errorf("lr picked %d of one ejected host", idx)
	}
}

func TestConsistentHashStable(t *testing.T) {
	hs := hosts(10)
	for name, p := range map[string]Picker{"ring": NewRingHash(hs, 0), "maglev": NewMaglev(hs, 0)} {
		for i := 0; i < 50; i++ {
			k := Hash64("user-" + strconv.Itoa(i))
			a, b := p.Pick(hs, 0, k), p.Pick(hs, 0, k)
			if a != b {
				t.Fatalf("%s: same key picked %d then %d", name, a, b)
			}
		}
	}
}

func TestLeastRequestPrefersIdle(t *testing.T) {
	hs := hosts(2)
	hs[0].(*host).active = 100
	p := &LeastRequest{Rnd: rnd()}
	n := 0
	for i := 0; i < 1000; i++ {
		if p.Pick(hs, 0, 0) == 1 {
			n++
		}
	}
	if n < 700 {
		t.Fatalf("idle host chosen %d/1000 times, want most", n)
	}
}

func TestRandomWeights(t *testing.T) {
	hs := hosts(2)
	hs[1].(*host).weight = 3
	p := &Random{Rnd: rnd()}
	n := 0
	for i := 0; i < 4000; i++ {
		if p.Pick(hs, 0, 0) == 1 {
			n++
		}
	}
	if n < 2800 || n > 3200 {
		t.Fatalf("weight-3 host chosen %d/4000, want about 3000", n)
	}
}

func benchPick(b *testing.B, p Picker, hs []Host) {
	b.ReportAllocs()
	var k uint64
	for b.Loop() {
		k++
		if p.Pick(hs, 0, k*0x9e3779b97f4a7c15) < 0 {
			b.Fatal("no host")
		}
	}
}

func BenchmarkRoundRobin(b *testing.B)   { benchPick(b, &RoundRobin{}, hosts(16)) }
func BenchmarkLeastRequest(b *testing.B) { benchPick(b, &LeastRequest{Rnd: rnd()}, hosts(16)) }
func BenchmarkRandom(b *testing.B)       { benchPick(b, &Random{Rnd: rnd()}, hosts(16)) }
func BenchmarkRingHash(b *testing.B)     { hs := hosts(16); benchPick(b, NewRingHash(hs, 0), hs) }
func BenchmarkMaglev(b *testing.B)       { hs := hosts(16); benchPick(b, NewMaglev(hs, 0), hs) }

// Weighted least request: idle hosts share traffic by weight; under load
// the host with fewer requests per unit of weight wins, and ejected hosts
// are never picked.
func TestLeastRequestWeighted(t *testing.T) {
	hs := hosts(3)
	hs[1].(*host).weight = 3
	hs[2].(*host).healthy = false
	p := &LeastRequest{Rnd: rnd(), Weighted: true}
	counts := [3]int{}
	for range 4000 {
		counts[p.Pick(hs, 0, 0)]++
	}
	if counts[2] != 0 || counts[1] < 2800 || counts[1] > 3200 {
		t.Fatalf("idle: picks %v, want ~1000/3000/0", counts)
	}
	// 30 in flight on the weight-3 host (10 per unit) vs 2 on the other:
	// whenever both are sampled the lighter one wins.
	hs[1].(*host).active, hs[0].(*host).active = 30, 2
	counts = [3]int{}
	for range 4000 {
		counts[p.Pick(hs, 0, 0)]++
	}
	if counts[0] < 1500 {
		t.Fatalf("loaded: picks %v, want host 0 (2 per weight unit) preferred over host 1 (10)", counts)
	}
}

func BenchmarkLeastRequestWeighted(b *testing.B) {
	hs := hosts(8)
	hs[3].(*host).weight = 4
	benchPick(b, &LeastRequest{Rnd: rnd(), Weighted: true}, hs)
}
