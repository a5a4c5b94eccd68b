// Package tracecollector is a small Zipkin-compatible trace collector built
// into the control plane, so `weft demo` shows traces offline: proxies POST
// Zipkin JSON v2 spans to /api/v2/spans; spans are kept in a bounded
// in-memory ring (the oldest are overwritten) and read back by trace id or
// service through Zipkin's read API (/api/v2/traces, /api/v2/trace/{id},
// /api/v2/services) and Weft's /api/v1/traces?service=S and
// /api/v1/traces/{id} (same JSON: a trace is an array of Zipkin v2 spans).
package tracecollector

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/weftmesh/weft/pkg/proxy/tracing"
)

// Span is a Zipkin API v2 span.
type Span = tracing.ZipkinSpan

// Collector keeps the most recent spans. Safe for concurrent use.
type Collector struct {
	mu    sync.RWMutex
	ring  []Span
	next  int
	full  bool
	total uint64
	// MaxBody bounds a POST body (default 8 MiB).
	MaxBody int64
}

// New returns a collector keeping up to capacity spans (default 20000).
func New(capacity int) *Collector {
	if capacity <= 0 {
		capacity = 20000
	}
	return &Collector{ring: make([]Span, capacity), MaxBody: 8 << 20}
}

// Add stores spans, overwriting the oldest when full.
func (c *Collector) Add(spans []Span) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range spans {
		c.ring[c.next] = s
		c.next++
		c.total++
		if c.next == len(c.ring) {
			c.next, c.full = 0, true
		}
	}
}

func (c *Collector) each(fn func(*Span)) {
	n := c.next
	if c.full {
		n = len(c.ring)
	}
	for i := 0; i < n; i++ {
		fn(&c.ring[i])
	}
}

// Trace returns the spans of trace id (hex, 16 or 32 digits), sorted by
// start time.
func (c *Collector) Trace(id string) []Span {
	id = normID(id)
	c.mu.RLock()
	var out []Span
	c.each(func(s *Span) {
		if normID(s.TraceID) == id {
			out = append(out, *s)
		}
	})
	c.mu.RUnlock()
	sortSpans(out)
	return out
}

// Traces returns up to limit traces (newest first) with a span whose local
// service is service (any service when empty).
func (c *Collector) Traces(service string, limit int) [][]Span {
	c.mu.RLock()
	byID := map[string][]Span{}
	latest := map[string]int64{}
	match := map[string]bool{}
	c.each(func(s *Span) {
		id := normID(s.TraceID)
		byID[id] = append(byID[id], *s)
		if s.Timestamp > latest[id] {
			latest[id] = s.Timestamp
		}
		if service == "" || (s.LocalEndpoint != nil && strings.EqualFold(s.LocalEndpoint.ServiceName, service)) ||
			(s.LocalEndpoint != nil && strings.EqualFold(strings.SplitN(s.LocalEndpoint.ServiceName, ".", 2)[0], service)) {
			match[id] = true
		}
	})
	c.mu.RUnlock()
	ids := make([]string, 0, len(match))
	for id := range match {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return latest[ids[i]] > latest[ids[j]] })
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	out := make([][]Span, 0, len(ids))
	for _, id := range ids {
		sortSpans(byID[id])
		out = append(out, byID[id])
	}
	return out
}

// Services lists the local service names seen.
func (c *Collector) Services() []string {
	c.mu.RLock()
	set := map[string]bool{}
	c.each(func(s *Span) {
		if s.LocalEndpoint != nil && s.LocalEndpoint.ServiceName != "" {
			set[s.LocalEndpoint.ServiceName] = true
		}
	})
	c.mu.RUnlock()
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func sortSpans(s []Span) {
	sort.SliceStable(s, func(i, j int) bool { return s[i].Timestamp < s[j].Timestamp })
}

// normID left-pads 64-bit ids so they compare with 128-bit ones.
func normID(id string) string {
	id = strings.ToLower(id)
	if len(id) < 32 {
		id = strings.Repeat("0", 32-len(id)) + id
	}
	return id
}

// Register adds the collector's routes to mux.
func (c *Collector) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v2/spans", c.post)
	mux.HandleFunc("GET /api/v2/trace/{id}", c.getTrace)
	mux.HandleFunc("GET /api/v2/traces", c.getTraces)
	mux.HandleFunc("GET /api/v2/services", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, c.Services()) })
	mux.HandleFunc("GET /api/v1/traces/{id}", c.getTrace)
	mux.HandleFunc("GET /api/v1/traces", c.getTraces)
}

// Handler is a mux with only the collector's routes.
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	c.Register(mux)
	return mux
}

func (c *Collector) post(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		http.Error(w, "only Zipkin JSON v2 (application/json) is accepted", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, c.MaxBody+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(body)) > c.MaxBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	var spans []Span
	if err := json.Unmarshal(body, &spans); err != nil {
		http.Error(w, fmt.Sprintf("decode Zipkin v2 spans: %v", err), http.StatusBadRequest)
		return
	}
	for i, s := range spans {
		if s.TraceID == "" || s.ID == "" {
			http.Error(w, fmt.Sprintf("span %d: traceId and id are required", i), http.StatusBadRequest)
			return
		}
	}
	c.Add(spans)
	w.WriteHeader(http.StatusAccepted)
}

func (c *Collector) getTrace(w http.ResponseWriter, r *http.Request) {
	t := c.Trace(r.PathValue("id"))
	if len(t) == 0 {
		http.Error(w, "trace not found", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (c *Collector) getTraces(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	svc := q.Get("service")
	if svc == "" {
		svc = q.Get("serviceName")
	}
	limit := 10
	if l, err := strconv.Atoi(q.Get("limit")); err == nil && l > 0 {
		limit = l
	}
	writeJSON(w, http.StatusOK, c.Traces(svc, limit))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
