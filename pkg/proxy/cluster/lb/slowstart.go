package lb

import (
	"math"
	"time"
)

// SlowStart is Envoy's slow_start_config (Istio's loadBalancer.warmup): a
// host that joined the cluster less than Window ago takes traffic in
// proportion to weight × max(MinWeightPercent/100,
// (age/Window)^(1/Aggression)), age counted in milliseconds and at least
// 1 ms, as Envoy's EdfLoadBalancerBase::applySlowStartFactor does.
type SlowStart struct {
	// Window is slow_start_window; 0 disables slow start.
	Window time.Duration
	// Aggression shapes the ramp (1.0, the default, is linear; larger
	// values ramp up faster at first). Values <= 0 or NaN count as 1, as
	// in Envoy.
	Aggression float64
	// MinWeightPercent is min_weight_percent (default 10): the share of
	// its weight a host gets at least while warming up.
	MinWeightPercent float64
}

// Factor is the multiplier of the weight of a host that joined at start
// (unix ns; 0: it was there from the start and never warms up) at now.
// Outside the window it is 1.
func (s *SlowStart) Factor(start, now int64) float64 {
	if start == 0 || s.Window <= 0 {
		return 1
	}
	age := now - start
	if age >= int64(s.Window) {
		return 1
	}
	ms := max(age/int64(time.Millisecond), 1)
	tf := float64(ms) / float64(s.Window.Milliseconds())
	if a := s.Aggression; a > 0 && a != 1 && !math.IsNaN(a) {
		tf = math.Pow(tf, 1/a)
	}
	return max(tf, s.MinWeightPercent/100)
}

// Warming is a Host that may be in slow start.
type Warming interface {
	// SlowStartAt is when the host joined the cluster (unix ns), 0 when
	// it was there from the start and never warms up.
	SlowStartAt() int64
}

// SlowStartPicker is a ROUND_ROBIN or LEAST_REQUEST picker with Envoy's
// slow start. While no host of the level is within the window (Latest is
// the latest SlowStartAt among them) Inner picks as usual; otherwise hosts
// are drawn in proportion to weight × Factor (Envoy switches such a level
// to its weighted schedule), and LeastRequest compares two weighted draws
// by active requests per unit of effective weight.
type SlowStartPicker struct {
	Inner        Picker
	Config       SlowStart
	Rnd          Rand
	LeastRequest bool
	Latest       int64
}

// Pick implements Picker.
func (p *SlowStartPicker) Pick(hosts []Host, now int64, hash uint64) int {
	if p.Latest == 0 || now-p.Latest >= int64(p.Config.Window) || len(hosts) < 2 {
		return p.Inner.Pick(hosts, now, hash)
	}
	// Effective weights, computed once per pick (on the stack for levels
	// of up to 64 hosts); 0 for unhealthy hosts.
	var buf [64]float64
	ws := buf[:0]
	if len(hosts) > len(buf) {
		ws = make([]float64, 0, len(hosts))
	}
	var total float64
	for _, h := range hosts {
		w := 0.0
		if h.Healthy(now) {
			w = p.weight(h, now)
		}
		ws = append(ws, w)
		total += w
	}
	a := p.draw(ws, total)
	if !p.LeastRequest || a < 0 {
		return a
	}
	b := p.draw(ws, total)
	if b >= 0 && float64(hosts[b].Active())*ws[a] < float64(hosts[a].Active())*ws[b] {
		return b
	}
	return a
}

// weight is h's effective weight at now.
func (p *SlowStartPicker) weight(h Host, now int64) float64 {
	w := float64(h.Weight())
	if s, ok := h.(Warming); ok {
		w *= p.Config.Factor(s.SlowStartAt(), now)
	}
	return w
}

// draw picks index i with probability ws[i]/total, or -1 when total is 0.
func (p *SlowStartPicker) draw(ws []float64, total float64) int {
	if total <= 0 {
		return -1
	}
	x := float64(p.Rnd.Uint64()>>11) / (1 << 53) * total
	last := -1
	for i, w := range ws {
		if w <= 0 {
			continue
		}
		last = i
		if x < w {
			return i
		}
		x -= w
	}
	return last // rounding
}

var _ Picker = (*SlowStartPicker)(nil)
