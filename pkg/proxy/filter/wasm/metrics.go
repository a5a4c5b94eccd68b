package wasm

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/weftmesh/weft/pkg/proxy/stats"
)

// Metric types (proxy_define_metric).
const (
	metricCounter   = 0
	metricGauge     = 1
	metricHistogram = 2
)

// histogramBounds are Envoy's default histogram buckets.
var histogramBounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// metrics holds plugin-defined metrics by name, shared by all plugins of
// the engine (as Envoy's stats store is). Safe for concurrent use.
type metrics struct {
	mu    sync.Mutex
	byID  []*metric
	byNam map[string]uint32
}

type metric struct {
	name  string
	typ   uint32
	value int64 // counter, gauge
	// histogram
	counts []uint64
	count  uint64
	sum    float64
}

func newMetrics() *metrics { return &metrics{byNam: map[string]uint32{}} }

// define returns the id of the metric name, defining it; redefining a
// name with another type fails.
func (m *metrics) define(typ uint32, name string) (uint32, bool) {
	if typ > metricHistogram || name == "" {
		return 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if id, ok := m.byNam[name]; ok {
		return id, m.byID[id-1].typ == typ
	}
	mt := &metric{name: name, typ: typ}
	if typ == metricHistogram {
		mt.counts = make([]uint64, len(histogramBounds))
	}
	m.byID = append(m.byID, mt)
	id := uint32(len(m.byID)) // ids start at 1
	m.byNam[name] = id
	return id, true
}

func (m *metrics) lookup(id uint32) *metric {
	if id == 0 || int(id) > len(m.byID) {
		return nil
	}
	return m.byID[id-1]
}

// increment adds offset to a counter (offset ≥ 0) or gauge.
func (m *metrics) increment(id uint32, offset int64) uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.lookup(id)
	switch {
	case mt == nil:
		return statusNotFound
	case mt.typ == metricCounter && offset < 0, mt.typ == metricHistogram:
		return statusBadArgument
	}
	mt.value += offset
	return statusOK
}

// record sets a gauge, adds to a counter, or observes a histogram value.
func (m *metrics) record(id uint32, v uint64) uint32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.lookup(id)
	if mt == nil {
		return statusNotFound
	}
	switch mt.typ {
	case metricCounter:
		mt.value += int64(v)
	case metricGauge:
		mt.value = int64(v)
	default:
		f := float64(v)
		for i, b := range histogramBounds {
			if f <= b {
				mt.counts[i]++
				break
			}
		}
		mt.count++
		mt.sum += f
	}
	return statusOK
}

// get reads a counter or gauge (histograms have no single value).
func (m *metrics) get(id uint32) (uint64, uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mt := m.lookup(id)
	switch {
	case mt == nil:
		return 0, statusNotFound
	case mt.typ == metricHistogram:
		return 0, statusBadArgument
	}
	return uint64(mt.value), statusOK
}

func (m *metrics) snapshot() []metric {
	m.mu.Lock()
	ms := make([]metric, 0, len(m.byID))
	for _, mt := range m.byID {
		c := *mt
		c.counts = append([]uint64(nil), mt.counts...)
		ms = append(ms, c)
	}
	m.mu.Unlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	return ms
}

// Metric returns a plugin counter's or gauge's value (a histogram's
// count) by name.
func (e *Engine) Metric(name string) (int64, bool) {
	e.metrics.mu.Lock()
	defer e.metrics.mu.Unlock()
	id, ok := e.metrics.byNam[name]
	if !ok {
		return 0, false
	}
	mt := e.metrics.byID[id-1]
	if mt.typ == metricHistogram {
		return int64(mt.count), true
	}
	return mt.value, true
}

var _ stats.Collector = (*Engine)(nil)

// promName makes a metric name a valid Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*);
// plugin metric names are exported as given, other characters become '_'.
func promName(s string) string {
	var b strings.Builder
	for i, r := range s {
		ok := r == '_' || r == ':' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9'
		if !ok {
			r = '_'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// WritePrometheus writes plugin metrics in the Prometheus text format
// (stats.Collector: the proxy's /stats/prometheus on 15090).
func (e *Engine) WritePrometheus(w io.Writer) error {
	var b strings.Builder
	for _, m := range e.metrics.snapshot() {
		name := promName(m.name)
		switch m.typ {
		case metricCounter:
			fmt.Fprintf(&b, "# TYPE %s counter\n%s %d\n", name, name, m.value)
		case metricGauge:
			fmt.Fprintf(&b, "# TYPE %s gauge\n%s %d\n", name, name, m.value)
		default:
			fmt.Fprintf(&b, "# TYPE %s histogram\n", name)
			var cum uint64
			for i, bound := range histogramBounds {
				cum += m.counts[i]
				fmt.Fprintf(&b, "%s_bucket{le=\"%s\"} %d\n", name, strconv.FormatFloat(bound, 'g', -1, 64), cum)
			}
			fmt.Fprintf(&b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n", name, m.count, name,
				strconv.FormatFloat(m.sum, 'g', -1, 64), name, m.count)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText writes plugin metrics as "name: value" lines (stats.Collector:
// the admin /stats); a histogram shows its count and sum, as Envoy's
// P0(...) summary is not kept.
func (e *Engine) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, m := range e.metrics.snapshot() {
		if m.typ == metricHistogram {
			mean := math.NaN()
			if m.count > 0 {
				mean = m.sum / float64(m.count)
			}
			fmt.Fprintf(&b, "%s: count=%d sum=%s mean=%s\n", m.name, m.count, strconv.FormatFloat(m.sum, 'g', -1, 64), strconv.FormatFloat(mean, 'g', 6, 64))
			continue
		}
		fmt.Fprintf(&b, "%s: %d\n", m.name, m.value)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
