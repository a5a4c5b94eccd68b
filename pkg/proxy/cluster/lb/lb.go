// Package lb holds the load-balancing policies of the proxy, each a small
// type behind the Picker interface. Pickers are safe for concurrent use and
// do not allocate on Pick.
package lb

import (
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
)

// Host is what a picker needs to know about an upstream host.
type Host interface {
	// Healthy reports whether the host may receive traffic at now (unix ns).
	Healthy(now int64) bool
	// Active is the number of requests in flight.
	Active() int64
	// Weight is the endpoint's load-balancing weight (>= 1).
	Weight() uint32
	// Key identifies the host for consistent hashing (its address).
	Key() string
}

// Picker chooses one healthy host from hosts, or returns -1.
// hash is the request's hash for consistent-hash policies (ignored by others).
// Implementations must be safe for concurrent use.
type Picker interface {
	Pick(hosts []Host, now int64, hash uint64) int
}

// Rand is the randomness a picker uses; *rand.Rand from math/rand/v2 fits.
type Rand interface {
	Uint64() uint64
}

// LockedRand makes a Rand safe for concurrent use.
type LockedRand struct {
	mu sync.Mutex
	r  Rand
}

// NewLockedRand wraps r; a nil r uses math/rand/v2's runtime source,
// which is safe for concurrent use without a lock.
func NewLockedRand(r Rand) *LockedRand {
	return &LockedRand{r: r}
}

// Uint64 returns the next random number.
func (l *LockedRand) Uint64() uint64 {
	if l.r == nil {
		return rand.Uint64()
	}
	l.mu.Lock()
	v := l.r.Uint64()
	l.mu.Unlock()
	return v
}

// RoundRobin cycles through healthy hosts.
type RoundRobin struct{ next atomic.Uint64 }

// Pick implements Picker.
func (p *RoundRobin) Pick(hosts []Host, now int64, _ uint64) int {
	n := len(hosts)
	if n == 0 {
		return -1
	}
	start := p.next.Add(1)
	for i := 0; i < n; i++ {
		idx := int((start + uint64(i)) % uint64(n))
		if hosts[idx].Healthy(now) {
			return idx
		}
	}
	return -1
}

// Random picks a healthy host at random, honouring weights.
type Random struct{ Rnd Rand }

// Pick implements Picker.
func (p *Random) Pick(hosts []Host, now int64, _ uint64) int {
	return weightedDraw(hosts, now, p.Rnd, healthyWeight(hosts, now))
}

// healthyWeight is the summed weight of the hosts healthy at now.
func healthyWeight(hosts []Host, now int64) uint64 {
	var total uint64
	for _, h := range hosts {
		if h.Healthy(now) {
			total += uint64(h.Weight())
		}
	}
	return total
}

// weightedDraw picks a healthy host with probability weight/total (total
// from healthyWeight), or -1 when total is 0.
func weightedDraw(hosts []Host, now int64, rnd Rand, total uint64) int {
	if total == 0 {
		return -1
	}
	x := rnd.Uint64() % total
	for i, h := range hosts {
		if !h.Healthy(now) {
			continue
		}
		w := uint64(h.Weight())
		if x < w {
			return i
		}
		x -= w
	}
	return -1
}

// LeastRequest is power-of-two-choices on active requests. Weighted (the
// hosts' weights differ) samples the two candidates in proportion to
// their weights and compares active requests per unit of weight, so that
// with no requests in flight traffic follows the weights (Envoy switches
// to a weighted schedule in that case, to the same effect).
type LeastRequest struct {
	Rnd      Rand
	Weighted bool
}

// Pick implements Picker.
func (p *LeastRequest) Pick(hosts []Host, now int64, _ uint64) int {
	n := uint64(len(hosts))
	switch {
	case n == 0:
		return -1
	case n == 1: // no choice to make: skip the random draws
		if hosts[0].Healthy(now) {
			return 0
		}
		return -1
	}
	if p.Weighted {
		return p.pickWeighted(hosts, now)
	}
	best := -1
	for tries := 0; tries < 2; tries++ {
		for k := 0; k < 4; k++ { // a few attempts to land on a healthy host
			i := int(p.Rnd.Uint64() % n)
			if hosts[i].Healthy(now) {
				if best < 0 || hosts[i].Active() < hosts[best].Active() {
					best = i
				}
				break
			}
		}
	}
	if best >= 0 {
		return best
	}
	for i, h := range hosts { // all random tries hit ejected hosts
		if h.Healthy(now) {
			return i
		}
	}
	return -1
}

func (p *LeastRequest) pickWeighted(hosts []Host, now int64) int {
	total := healthyWeight(hosts, now)
	a, b := weightedDraw(hosts, now, p.Rnd, total), weightedDraw(hosts, now, p.Rnd, total)
	if a < 0 || b < 0 {
		return max(a, b)
	}
	// active/weight, compared without division.
	if uint64(hosts[b].Active())*uint64(hosts[a].Weight()) < uint64(hosts[a].Active())*uint64(hosts[b].Weight()) {
		return b
	}
	return a
}

// RingHash is Ketama-style consistent hashing. Build it with NewRingHash
// for a fixed host list; Pick must be given the same list.
type RingHash struct {
	ring []ringEntry
}

type ringEntry struct {
	hash uint64
	idx  int
}

// NewRingHash builds a ring with about minSize entries (default 1024).
func NewRingHash(hosts []Host, minSize int) *RingHash {
	if minSize <= 0 {
		minSize = 1024
	}
	r := &RingHash{}
	if len(hosts) == 0 {
		return r
	}
	var total uint64
	for _, h := range hosts {
		total += uint64(h.Weight())
	}
	perWeight := (uint64(minSize) + total - 1) / total
	for i, h := range hosts {
		n := perWeight * uint64(h.Weight())
		for j := uint64(0); j < n; j++ {
			r.ring = append(r.ring, ringEntry{hash: Hash64(h.Key() + "_" + itoa(j)), idx: i})
		}
	}
	sort.Slice(r.ring, func(a, b int) bool { return r.ring[a].hash < r.ring[b].hash })
	return r
}

// Pick implements Picker.
func (r *RingHash) Pick(hosts []Host, now int64, hash uint64) int {
	n := len(r.ring)
	if n == 0 {
		return -1
	}
	i := sort.Search(n, func(k int) bool { return r.ring[k].hash >= hash })
	for k := 0; k < n; k++ {
		e := r.ring[(i+k)%n]
		if e.idx < len(hosts) && hosts[e.idx].Healthy(now) {
			return e.idx
		}
	}
	return -1
}

// Maglev is a Maglev lookup table (prime size 65537 by default).
type Maglev struct {
	table []int32
}

// NewMaglev builds a table for hosts.
func NewMaglev(hosts []Host, size int) *Maglev {
	if size <= 0 {
		size = 65537
	}
	m := &Maglev{}
	if len(hosts) == 0 {
		return m
	}
	m.table = make([]int32, size)
	for i := range m.table {
		m.table[i] = -1
	}
	M := uint64(size)
	offset := make([]uint64, len(hosts))
	skip := make([]uint64, len(hosts))
	next := make([]uint64, len(hosts))
	var maxW uint32
	for i, h := range hosts {
		k := h.Key()
		offset[i] = Hash64(k) % M
		skip[i] = Hash64(k+"#skip")%(M-1) + 1
		maxW = max(maxW, h.Weight())
	}
	filled := 0
	for round := uint32(1); filled < size; round++ {
		for i, h := range hosts {
			if h.Weight() < round%maxW+1 && h.Weight() != maxW {
				continue // weighted: lighter hosts skip some rounds
			}
			for {
				c := (offset[i] + next[i]*skip[i]) % M
				next[i]++
				if m.table[c] < 0 {
					m.table[c] = int32(i)
					filled++
					break
				}
			}
			if filled == size {
				break
			}
		}
	}
	return m
}

// Pick implements Picker. Ejected hosts fall back to a linear probe.
func (m *Maglev) Pick(hosts []Host, now int64, hash uint64) int {
	n := len(m.table)
	if n == 0 {
		return -1
	}
	start := int(hash % uint64(n))
	for k := 0; k < n && k < 4096; k++ {
		idx := int(m.table[(start+k)%n])
		if idx < len(hosts) && hosts[idx].Healthy(now) {
			return idx
		}
	}
	return -1
}

// Hash64 is FNV-1a 64 followed by a mixer; it does not allocate.
func Hash64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Interface guards.
var (
	_ Picker = (*RoundRobin)(nil)
	_ Picker = (*Random)(nil)
	_ Picker = (*LeastRequest)(nil)
	_ Picker = (*RingHash)(nil)
	_ Picker = (*Maglev)(nil)
)
