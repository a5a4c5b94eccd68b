package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/weftmesh/weft/pkg/config"
)

// durationBounds are Istio's default istio_request_duration_milliseconds buckets (trimmed).
var durationBounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// call describes requests between two Bookinfo-style workloads.
type call struct {
	reporter string // "source" or "destination"
	srcApp   string // "" = unknown client (no sidecar)
	dstApp   string
	ns       string
	code     int
	flags    string
	mtls     bool
}

func (c call) labels() string {
	src, srcApp := "unknown", "unknown"
	if c.srcApp != "" {
		src, srcApp = c.srcApp+"-v1", c.srcApp
	}
	flags := c.flags
	if flags == "" {
		flags = "-"
	}
	sec := "none"
	if c.mtls {
		sec = "mutual_tls"
	}
	ns := c.ns
	if ns == "" {
		ns = "default"
	}
	return fmt.Sprintf(`reporter=%q,source_workload=%q,source_workload_namespace=%q,source_app=%q,`+
		`destination_workload=%q,destination_workload_namespace=%q,destination_app=%q,`+
		`destination_service=%q,destination_service_name=%q,destination_service_namespace=%q,`+
		`request_protocol="http",response_code="%d",response_flags=%q,connection_security_policy=%q`,
		c.reporter, src, ns, srcApp,
		c.dstApp+"-v1", ns, c.dstApp,
		c.dstApp+"."+ns+".svc.cluster.local", c.dstApp, ns,
		c.code, flags, sec)
}

type histo struct {
	buckets []float64 // cumulative counts per durationBounds
	count   float64
	sum     float64
}

// fakeProxy serves Istio standard metrics in the Prometheus text format
// from counters the test advances between scrapes.
type fakeProxy struct {
	mu       sync.Mutex
	requests map[string]float64 // labels -> count
	durs     map[string]*histo
	fail     bool
	srv      *httptest.Server
}

func newFakeProxy(t testing.TB) *fakeProxy {
	t.Helper()
	p := &fakeProxy{requests: map[string]float64{}, durs: map[string]*histo{}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

// addr is the proxy's METRICS_ADDRESS (host:port).
func (p *fakeProxy) addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// add records n requests of c that each took ms milliseconds.
func (p *fakeProxy) add(c call, n int, ms float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := c.labels()
	p.requests[l] += float64(n)
	h := p.durs[l]
	if h == nil {
		h = &histo{buckets: make([]float64, len(durationBounds))}
		p.durs[l] = h
	}
	for i, b := range durationBounds {
		if ms <= b {
			h.buckets[i] += float64(n)
		}
	}
	h.count += float64(n)
	h.sum += ms * float64(n)
}

// reset forgets all counters, like a restarted proxy.
func (p *fakeProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = map[string]float64{}
	p.durs = map[string]*histo{}
}

func (p *fakeProxy) setFail(v bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = v
}

func (p *fakeProxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/stats/prometheus" {
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	}
	var b strings.Builder
	b.WriteString("# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds 12\n")
	b.WriteString("# HELP istio_requests_total Total requests.\n# TYPE istio_requests_total counter\n")
	keys := make([]string, 0, len(p.requests))
	for k := range p.requests {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "istio_requests_total{%s} %g\n", k, p.requests[k])
	}
	b.WriteString("# HELP istio_request_duration_milliseconds Request duration.\n# TYPE istio_request_duration_milliseconds histogram\n")
	for _, k := range keys {
		h := p.durs[k]
		for i, bound := range durationBounds {
			fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket{%s,le=\"%g\"} %g\n", k, bound, h.buckets[i])
		}
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_bucket{%s,le=\"+Inf\"} %g\n", k, h.count)
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_sum{%s} %g\n", k, h.sum)
		fmt.Fprintf(&b, "istio_request_duration_milliseconds_count{%s} %g\n", k, h.count)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}

// staticSources is a Sources whose contents the test sets.
type staticSources struct {
	mu        sync.Mutex
	proxies   []ProxyInfo
	resources []*config.Resource
	warnings  []string
	err       error
}

func (s *staticSources) Proxies(context.Context) ([]ProxyInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	return append([]ProxyInfo(nil), s.proxies...), nil
}

func (s *staticSources) Resources(context.Context) ([]*config.Resource, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, nil, s.err
	}
	return s.resources, s.warnings, nil
}

func proxyInfo(app string, p *fakeProxy) ProxyInfo {
	return ProxyInfo{
		ID:        "sidecar~127.0.0.1~" + app + "-v1.default~default.svc.cluster.local",
		Namespace: "default", Workload: app + "-v1",
		Labels:         map[string]string{"app": app, "version": "v1"},
		MetricsAddress: p.addr(),
		Sync: map[string]SyncStatus{
			"CDS": {Status: SyncSynced}, "EDS": {Status: SyncSynced},
			"LDS": {Status: SyncSynced}, "RDS": {Status: SyncSynced},
		},
	}
}
