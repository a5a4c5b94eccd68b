// Package stats keeps the proxy's Istio standard metrics in keyed maps of
// atomic counters and renders them in the Prometheus text format, and
// writes JSON access log lines. Nothing here is global: a Registry is
// created by the proxy and passed down.
package stats

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Labels are the Istio standard metric labels, in the order Istio's
// stats filter (istio_stats) emits them. TCP series have no
// response_code and grpc_response_status, as in Istio.
type Labels struct {
	Reporter                     string
	SourceWorkload               string
	SourceCanonicalService       string
	SourceCanonicalRevision      string
	SourceWorkloadNamespace      string
	SourcePrincipal              string
	SourceApp                    string
	SourceVersion                string
	SourceCluster                string
	DestinationWorkload          string
	DestinationWorkloadNamespace string
	DestinationPrincipal         string
	DestinationApp               string
	DestinationVersion           string
	DestinationService           string
	DestinationCanonicalService  string
	DestinationCanonicalRevision string
	DestinationServiceName       string
	DestinationServiceNamespace  string
	DestinationCluster           string
	RequestProtocol              string
	ResponseCode                 string
	GRPCResponseStatus           string
	ResponseFlags                string
	ConnectionSecurityPolicy     string
	// Removed has bit i set when label i (in LabelNames order) is removed
	// by a Telemetry tagOverride; Dropped has a DropX bit per metric a
	// Telemetry override disabled for this series (or that another series
	// with other tag overrides carries).
	Removed uint32
	Dropped uint16
	// Extra are labels a Telemetry tagOverride UPSERT added, rendered
	// after the standard ones: `name="value"` pairs (values escaped),
	// comma-separated, sorted by name (see ExtraLabels).
	Extra string
}

// ExtraLabels renders added labels for Labels.Extra; names must be
// sorted and valid Prometheus label names.
func ExtraLabels(names, values []string) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(escape(values[i]))
		b.WriteByte('"')
	}
	return b.String()
}

// Set sets the standard label named name (false: not a standard label)
// and un-removes it.
func (l *Labels) Set(name, value string) bool {
	for i, n := range LabelNames {
		if n == name {
			*l.fields()[i] = value
			l.Removed &^= 1 << i
			return true
		}
	}
	return false
}

// LabelNames are the label keys in render order (bit i of Labels.Removed).
var LabelNames = [...]string{"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_canonical_service", "destination_canonical_revision",
	"destination_service_name", "destination_service_namespace", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy"}

// httpOnly marks the labels TCP series do not have (response_code,
// grpc_response_status).
const httpOnly uint32 = 1<<21 | 1<<22

// LabelBit returns the Removed bit of the label named name (0 for a name
// that is not a standard label).
func LabelBit(name string) uint32 {
	for i, n := range LabelNames {
		if n == name {
			return 1 << i
		}
	}
	return 0
}

// fields are l's values in LabelNames order.
func (l *Labels) fields() [len(LabelNames)]*string {
	return [...]*string{&l.Reporter,
		&l.SourceWorkload, &l.SourceCanonicalService, &l.SourceCanonicalRevision, &l.SourceWorkloadNamespace,
		&l.SourcePrincipal, &l.SourceApp, &l.SourceVersion, &l.SourceCluster,
		&l.DestinationWorkload, &l.DestinationWorkloadNamespace, &l.DestinationPrincipal, &l.DestinationApp,
		&l.DestinationVersion, &l.DestinationService, &l.DestinationCanonicalService, &l.DestinationCanonicalRevision,
		&l.DestinationServiceName, &l.DestinationServiceNamespace, &l.DestinationCluster,
		&l.RequestProtocol, &l.ResponseCode, &l.GRPCResponseStatus, &l.ResponseFlags, &l.ConnectionSecurityPolicy}
}

// Dropped bits: Istio's metric names (stats.PluginConfig) they stand for.
const (
	DropRequests         uint16 = 1 << iota // requests_total
	DropDuration                            // request_duration_milliseconds
	DropRequestSize                         // request_bytes
	DropResponseSize                        // response_bytes
	DropTCPSent                             // tcp_sent_bytes_total
	DropTCPReceived                         // tcp_received_bytes_total
	DropTCPOpened                           // tcp_connections_opened_total
	DropTCPClosed                           // tcp_connections_closed_total
	DropRequestMessages                     // request_messages_total
	DropResponseMessages                    // response_messages_total
	DropAllHTTP          = DropRequests | DropDuration | DropRequestSize | DropResponseSize | DropRequestMessages | DropResponseMessages
	DropAllTCP           = DropTCPSent | DropTCPReceived | DropTCPOpened | DropTCPClosed
)

// MessageOmitted are the labels istio_request_messages_total and
// istio_response_messages_total do not have: Istio's stats filter reports
// the message counts with the peer labels only, before it adds
// request_protocol, response_code, grpc_response_status, response_flags
// and connection_security_policy. Pass l.Remove(MessageOmitted) labels to
// ObserveGRPCMessages (a Telemetry UPSERT may set one of them again).
const MessageOmitted uint32 = 1<<20 | 1<<21 | 1<<22 | 1<<23 | 1<<24

// Remove blanks the labels in mask (bit i = LabelNames[i]) so their series
// aggregate, and marks them omitted from the output.
func (l *Labels) Remove(mask uint32) {
	if mask == 0 {
		return
	}
	for i, f := range l.fields() {
		if mask&(1<<i) != 0 {
			*f = ""
		}
	}
	l.Removed |= mask
}

// render writes l as Prometheus labels; tcp leaves out the HTTP-only ones.
func (l *Labels) render(b *strings.Builder, tcp bool) {
	skip := l.Removed
	if tcp {
		skip |= httpOnly
	}
	first := true
	for i, f := range l.fields() {
		if skip&(1<<i) != 0 {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(LabelNames[i])
		b.WriteString(`="`)
		b.WriteString(escape(*f))
		b.WriteByte('"')
	}
	if l.Extra != "" {
		if !first {
			b.WriteByte(',')
		}
		b.WriteString(l.Extra)
	}
}

func escape(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return r.Replace(s)
}

// Buckets are the Istio duration buckets in milliseconds.
var durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Byte buckets (Istio's size buckets).
var sizeBuckets = []float64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}

type histogram struct {
	bounds []float64
	counts []atomic.Uint64
	sum    atomic.Uint64 // float64 bits
	count  atomic.Uint64
}

func newHistogram(b []float64) *histogram {
	return &histogram{bounds: b, counts: make([]atomic.Uint64, len(b))}
}

func (h *histogram) observe(v float64) {
	for i, b := range h.bounds {
		if v <= b {
			h.counts[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
}

type httpSeries struct {
	requests                    atomic.Uint64
	duration, reqSize, respSize *histogram
}

type msgSeries struct {
	requests, responses atomic.Uint64
}

type tcpSeries struct {
	sent, received, opened, closed atomic.Uint64
}

// Collector adds series kept elsewhere (e.g. proxy-wasm plugin metrics)
// to the registry's output. Implementations must be safe for concurrent
// use; names must not clash with the registry's own.
type Collector interface {
	// WritePrometheus writes complete families (# TYPE line and samples)
	// in the text exposition format.
	WritePrometheus(w io.Writer) error
	// WriteText writes "name: value" lines for the admin /stats.
	WriteText(w io.Writer) error
}

// AddCollector appends c to what WritePrometheus and WriteText render.
func (r *Registry) AddCollector(c Collector) {
	r.mu.Lock()
	r.collectors = append(r.collectors, c)
	r.mu.Unlock()
}

func (r *Registry) collectorList() []Collector {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]Collector(nil), r.collectors...)
}

// Registry holds all series. Safe for concurrent use.
type Registry struct {
	collectors []Collector
	mu         sync.RWMutex
	http       map[Labels]*httpSeries
	tcp        map[Labels]*tcpSeries
	msgs       map[Labels]*msgSeries // gRPC message counts
	// Counters are free-form named counters for /stats (e.g. xds ACKs).
	counters map[string]*atomic.Uint64

	live liveTCP // open TCP connections whose bytes are reported periodically

	pending atomic.Int64 // requests answered whose telemetry is not recorded yet
}

// BeginPending counts a request whose response may reach the client
// before its telemetry is recorded (the proxy records it right after
// sending the response); EndPending once recorded. Renderings wait a
// little for pending ones, so a scrape made right after a response
// counts it.
func (r *Registry) BeginPending() { r.pending.Add(1) }

// EndPending ends a BeginPending.
func (r *Registry) EndPending() { r.pending.Add(-1) }

// settle waits up to ~10 ms for pending telemetry to be recorded. Each
// is recorded microseconds after its response is sent; under constant
// load there may always be some, hence the bound.
func (r *Registry) settle() {
	for deadline := time.Now().Add(10 * time.Millisecond); r.pending.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Microsecond)
	}
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{http: map[Labels]*httpSeries{}, tcp: map[Labels]*tcpSeries{}, msgs: map[Labels]*msgSeries{}, counters: map[string]*atomic.Uint64{}}
}

// Counter returns the named counter, creating it.
func (r *Registry) Counter(name string) *atomic.Uint64 {
	r.mu.RLock()
	c := r.counters[name]
	r.mu.RUnlock()
	if c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c = r.counters[name]; c == nil {
		c = &atomic.Uint64{}
		r.counters[name] = c
	}
	return c
}

// ObserveHTTP records one HTTP request.
func (r *Registry) ObserveHTTP(l Labels, durationMs float64, reqBytes, respBytes int64) {
	r.mu.RLock()
	s := r.http[l]
	r.mu.RUnlock()
	if s == nil {
		r.mu.Lock()
		if s = r.http[l]; s == nil {
			s = &httpSeries{duration: newHistogram(durationBuckets), reqSize: newHistogram(sizeBuckets), respSize: newHistogram(sizeBuckets)}
			r.http[l] = s
		}
		r.mu.Unlock()
	}
	s.requests.Add(1)
	s.duration.observe(durationMs)
	s.reqSize.observe(float64(reqBytes))
	s.respSize.observe(float64(respBytes))
}

// ObserveGRPCMessages adds a gRPC stream's request and response message
// counts (istio_request_messages_total, istio_response_messages_total)
// to the series l; see MessageOmitted for the labels l should have.
func (r *Registry) ObserveGRPCMessages(l Labels, requests, responses uint64) {
	s := r.msgSeries(l)
	s.requests.Add(requests)
	s.responses.Add(responses)
}

// msgSeries returns the message series for l, creating it.
func (r *Registry) msgSeries(l Labels) *msgSeries {
	r.mu.RLock()
	s := r.msgs[l]
	r.mu.RUnlock()
	if s == nil {
		r.mu.Lock()
		if s = r.msgs[l]; s == nil {
			s = &msgSeries{}
			r.msgs[l] = s
		}
		r.mu.Unlock()
	}
	return s
}

// TCP returns the TCP series for l; callers add to its counters.
func (r *Registry) tcpSeries(l Labels) *tcpSeries {
	r.mu.RLock()
	s := r.tcp[l]
	r.mu.RUnlock()
	if s == nil {
		r.mu.Lock()
		if s = r.tcp[l]; s == nil {
			s = &tcpSeries{}
			r.tcp[l] = s
		}
		r.mu.Unlock()
	}
	return s
}

// counters writes one counter family: a sample per series of ls (in
// that order) that drop does not remove, its value get of m's series
// (read under r.mu); key renders the labels.
func counters[S any](b *strings.Builder, r *Registry, name string, drop uint16, ls []Labels, m map[Labels]*S, key func(Labels) string, get func(*S) uint64) {
	fmt.Fprintf(b, "# TYPE %s counter\n", name)
	for _, l := range ls {
		if l.Dropped&drop != 0 {
			continue
		}
		r.mu.RLock()
		s := m[l]
		r.mu.RUnlock()
		fmt.Fprintf(b, "%s{%s} %d\n", name, key(l), get(s))
	}
}

// RequestsTotal sums istio_requests_total over series matching pred
// (series that do not render it, dropped by Telemetry, are left out).
func (r *Registry) RequestsTotal(pred func(Labels) bool) uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var n uint64
	for l, s := range r.http {
		if l.Dropped&DropRequests == 0 && pred(l) {
			n += s.requests.Load()
		}
	}
	return n
}

// WritePrometheus renders all series in the text exposition format.
func (r *Registry) WritePrometheus(w io.Writer) error {
	r.settle()
	r.mu.RLock()
	hl := make([]Labels, 0, len(r.http))
	for l := range r.http {
		hl = append(hl, l)
	}
	tl := make([]Labels, 0, len(r.tcp))
	for l := range r.tcp {
		tl = append(tl, l)
	}
	ml := make([]Labels, 0, len(r.msgs))
	for l := range r.msgs {
		ml = append(ml, l)
	}
	r.mu.RUnlock()
	key := func(l Labels) string { var b strings.Builder; l.render(&b, false); return b.String() }
	tkey := func(l Labels) string { var b strings.Builder; l.render(&b, true); return b.String() }
	sort.Slice(hl, func(i, j int) bool { return key(hl[i]) < key(hl[j]) })
	sort.Slice(tl, func(i, j int) bool { return tkey(tl[i]) < tkey(tl[j]) })
	sort.Slice(ml, func(i, j int) bool { return key(ml[i]) < key(ml[j]) })
	var b strings.Builder
	b.WriteString("# TYPE istio_requests_total counter\n")
	series := func(l Labels) *httpSeries { r.mu.RLock(); defer r.mu.RUnlock(); return r.http[l] }
	for _, l := range hl {
		if l.Dropped&DropRequests == 0 {
			fmt.Fprintf(&b, "istio_requests_total{%s} %d\n", key(l), series(l).requests.Load())
		}
	}
	hist := func(name string, drop uint16, get func(*httpSeries) *histogram) {
		fmt.Fprintf(&b, "# TYPE %s histogram\n", name)
		for _, l := range hl {
			if l.Dropped&drop != 0 {
				continue
			}
			h := get(series(l))
			k := key(l)
			if k != "" {
				k += ","
			}
			var cum uint64
			for i, bound := range h.bounds {
				cum += h.counts[i].Load()
				fmt.Fprintf(&b, "%s_bucket{%sle=\"%s\"} %d\n", name, k, strconv.FormatFloat(bound, 'g', -1, 64), cum)
			}
			fmt.Fprintf(&b, "%s_bucket{%sle=\"+Inf\"} %d\n", name, k, h.count.Load())
			k = strings.TrimSuffix(k, ",")
			fmt.Fprintf(&b, "%s_sum{%s} %s\n", name, k, strconv.FormatFloat(math.Float64frombits(h.sum.Load()), 'g', -1, 64))
			fmt.Fprintf(&b, "%s_count{%s} %d\n", name, k, h.count.Load())
		}
	}
	hist("istio_request_duration_milliseconds", DropDuration, func(s *httpSeries) *histogram { return s.duration })
	hist("istio_request_bytes", DropRequestSize, func(s *httpSeries) *histogram { return s.reqSize })
	hist("istio_response_bytes", DropResponseSize, func(s *httpSeries) *histogram { return s.respSize })
	counters(&b, r, "istio_request_messages_total", DropRequestMessages, ml, r.msgs, key, func(s *msgSeries) uint64 { return s.requests.Load() })
	counters(&b, r, "istio_response_messages_total", DropResponseMessages, ml, r.msgs, key, func(s *msgSeries) uint64 { return s.responses.Load() })
	counters(&b, r, "istio_tcp_sent_bytes_total", DropTCPSent, tl, r.tcp, tkey, func(s *tcpSeries) uint64 { return s.sent.Load() })
	counters(&b, r, "istio_tcp_received_bytes_total", DropTCPReceived, tl, r.tcp, tkey, func(s *tcpSeries) uint64 { return s.received.Load() })
	counters(&b, r, "istio_tcp_connections_opened_total", DropTCPOpened, tl, r.tcp, tkey, func(s *tcpSeries) uint64 { return s.opened.Load() })
	counters(&b, r, "istio_tcp_connections_closed_total", DropTCPClosed, tl, r.tcp, tkey, func(s *tcpSeries) uint64 { return s.closed.Load() })
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	for _, c := range r.collectorList() {
		if err := c.WritePrometheus(w); err != nil {
			return err
		}
	}
	return nil
}

// WriteText renders free-form counters as "name: value" lines (/stats).
func (r *Registry) WriteText(w io.Writer) error {
	r.settle()
	r.mu.RLock()
	names := make([]string, 0, len(r.counters))
	for n := range r.counters {
		names = append(names, n)
	}
	r.mu.RUnlock()
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s: %d\n", n, r.Counter(n).Load())
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	for _, c := range r.collectorList() {
		if err := c.WriteText(w); err != nil {
			return err
		}
	}
	return nil
}
