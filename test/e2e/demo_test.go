package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// demoMesh is a running `weft demo` and what its banner says.
type demoMesh struct {
	proc     *harness.Process
	entry    string            // productpage URL
	dash     string            // dashboard URL
	server   string            // admin API URL
	prom     string            // Prometheus URL (--prometheus-run), else ""
	metrics  map[string]string // workload -> sidecar metrics address
	logDir   string
	bin      string
	repoRoot string
}

var (
	bannerEntry   = regexp.MustCompile(`(?m)^\s+Bookinfo\s+(\S+)`)
	bannerDash    = regexp.MustCompile(`(?m)^\s+dashboard\s+(\S+)`)
	bannerServer  = regexp.MustCompile(`(?m)^\s+control plane API\s+(\S+)`)
	bannerProm    = regexp.MustCompile(`(?m)^\s+prometheus\s+(http\S+)`)
	bannerWorkRow = regexp.MustCompile(`(?m)^\s+([a-z]+-v\d)\s+\d+\s+\S+\s+(127\.0\.0\.1:\d+)\s+`)
)

func startDemo(t *testing.T, extra ...string) *demoMesh {
	t.Helper()
	harness.SkipShort(t)
	bin := weft.Binary(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := append([]string{"demo", "--base-port", "0", "--data-dir", dir, "--ready-timeout", "60s"}, extra...)
	p := harness.Start(t, bin, nil, args...)
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(p.Stdout(), "Press Ctrl-C to stop.") {
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("demo did not become ready\nstdout:\n%s\nstderr:\n%s", p.Stdout(), p.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	out := p.Stdout()
	m := &demoMesh{proc: p, bin: bin, repoRoot: root, logDir: filepath.Join(dir, "logs"), metrics: map[string]string{}}
	m.entry = bannerEntry.FindStringSubmatch(out)[1]
	m.server = bannerServer.FindStringSubmatch(out)[1]
	m.dash = bannerDash.FindStringSubmatch(out)[1]
	if p := bannerProm.FindStringSubmatch(out); p != nil {
		m.prom = p[1]
	}
	for _, row := range bannerWorkRow.FindAllStringSubmatch(out, -1) {
		m.metrics[row[1]] = row[2]
	}
	if len(m.metrics) != 6 {
		t.Fatalf("banner lists %d workloads, want 6:\n%s", len(m.metrics), out)
	}
	return m
}

func (m *demoMesh) get(t *testing.T, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, m.entry, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", m.entry, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (m *demoMesh) apply(t *testing.T, file string, flags ...string) string {
	t.Helper()
	args := append([]string{"apply", "--server", m.server, "-f", filepath.Join(m.repoRoot, "examples/bookinfo/config", file)}, flags...)
	r := harness.Run(t, m.bin, nil, args...)
	if r.ExitCode != 0 {
		t.Fatalf("apply %s: %s%s", file, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

var reviewsVersion = regexp.MustCompile(`reviews-(v\d)`)

// versions samples n productpage loads and counts which reviews version served each.
func (m *demoMesh) versions(t *testing.T, n int, hdr ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		code, body := m.get(t, hdr...)
		if code != http.StatusOK {
			t.Fatalf("productpage answered %d", code)
		}
		if v := reviewsVersion.FindStringSubmatch(body); v != nil {
			got[v[1]]++
		} else {
			got["none"]++
		}
	}
	return got
}

// eventually retries check until it passes or 10 s pass (config propagation).
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDemoBookinfoTasks runs `weft demo` and reproduces Istio's Bookinfo
// tasks on it: round robin over reviews versions, request routing by
// end-user, traffic shifting to v3, and fault injection on ratings; then it
// checks the telemetry every hop must leave.
func TestDemoBookinfoTasks(t *testing.T) {
	m := startDemo(t, "--load", "20")

	// Before any rule: the dashboard graph marks every Bookinfo edge mTLS
	// (drawn solid with "mTLS" in its label; plaintext edges are dashed),
	// every request of it: the destination sidecars say mutual_tls.
	deadline := time.Now().Add(30 * time.Second)
	for {
		edges, plain := graphMTLS(t, m.dash), 0
		for _, e := range edges {
			if !e.MTLS || e.MTLSShare != 1 {
				plain++
			}
		}
		if len(edges) >= 4 && plain == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard graph edges not all mTLS: %+v", edges)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// No VirtualService yet: reviews balances over v1, v2, v3 (least
	// request, Istio's default: random among idle hosts, so each version
	// serves about 20 of 60; fewer than 8 is a 3.4-sigma event).
	got := m.versions(t, 60)
	for _, v := range []string{"v1", "v2", "v3"} {
		if got[v] < 8 {
			t.Errorf("without routing rules reviews %s served %d of 60 (%v)", v, got[v], got)
		}
	}

	// Request routing: jason sees v2, everybody else v1. With --wait the
	// change is in effect when apply returns: no retries needed.
	if out := m.apply(t, "virtual-service-reviews-jason-v2.yaml", "--wait", "--wait-timeout", "20s"); !strings.Contains(out, "in effect: every connected proxy acknowledged revision") {
		t.Fatalf("apply --wait did not confirm: %s", out)
	}
	if g := m.versions(t, 10, "end-user", "jason"); g["v2"] != 10 {
		t.Fatalf("right after apply --wait, end-user jason got %v", g)
	}
	if g := m.versions(t, 10); g["v1"] != 10 {
		t.Fatalf("right after apply --wait, anonymous got %v", g)
	}

	// Traffic shifting: everything to v3 (red stars).
	m.apply(t, "virtual-service-reviews-v3.yaml")
	eventually(t, "shift to v3", func() error {
		if g := m.versions(t, 10); g["v3"] != 10 {
			return fmt.Errorf("after shifting to v3: %v", g)
		}
		return nil
	})
	if _, body := m.get(t); !strings.Contains(body, `class="red"`) {
		t.Error("v3 page shows no red stars")
	}

	// Fault injection: ratings aborts with 500, the page degrades.
	m.apply(t, "fault-ratings-abort.yaml")
	eventually(t, "ratings fault visible", func() error {
		code, body := m.get(t)
		if code != http.StatusOK || !strings.Contains(body, "Ratings service is currently unavailable") {
			return fmt.Errorf("status %d, page without the ratings error", code)
		}
		return nil
	})

	// Telemetry: istio_requests_total for every edge, on the sidecar that
	// reports it (source reporter on the caller, destination on the callee).
	edges := []struct{ reporter, workload, src, dst string }{
		{"source", "productpage-v1", "productpage-v1", "details.default.svc.cluster.local"},
		{"source", "productpage-v1", "productpage-v1", "reviews.default.svc.cluster.local"},
		{"source", "reviews-v3", "reviews-v3", "ratings.default.svc.cluster.local"},
		{"destination", "details-v1", "productpage-v1", "details.default.svc.cluster.local"},
		{"destination", "ratings-v1", "reviews-v3", "ratings.default.svc.cluster.local"},
	}
	for _, e := range edges {
		body := scrape(t, m.metrics[e.workload])
		if !hasSeries(body, "istio_requests_total", map[string]string{
			"reporter": e.reporter, "source_workload": e.src, "destination_service": e.dst,
		}) {
			t.Errorf("%s sidecar lacks istio_requests_total{reporter=%q,source_workload=%q,destination_service=%q}",
				e.workload, e.reporter, e.src, e.dst)
		}
	}
	// The injected fault shows as response_code 500 with flag FI.
	if body := scrape(t, m.metrics["reviews-v3"]); !hasSeries(body, "istio_requests_total", map[string]string{
		"destination_service": "ratings.default.svc.cluster.local", "response_code": "500", "response_flags": "FI",
	}) {
		t.Error("reviews-v3 sidecar lacks the fault-injected 500 FI series for ratings")
	}

	// Mutual TLS: the demo turns the CA on and applies STRICT mesh-wide, so
	// the destination sidecar of every edge reports mutual_tls, and no
	// destination-reporter series anywhere says otherwise.
	mtlsEdges := []struct{ workload, src, dst string }{
		{"productpage-v1", "istio-ingressgateway-v1", "productpage.default.svc.cluster.local"},
		{"details-v1", "productpage-v1", "details.default.svc.cluster.local"},
		{"reviews-v1", "productpage-v1", "reviews.default.svc.cluster.local"},
		{"reviews-v2", "productpage-v1", "reviews.default.svc.cluster.local"},
		{"reviews-v3", "productpage-v1", "reviews.default.svc.cluster.local"},
		{"ratings-v1", "reviews-v2", "ratings.default.svc.cluster.local"},
		{"ratings-v1", "reviews-v3", "ratings.default.svc.cluster.local"},
	}
	for _, e := range mtlsEdges {
		if !hasSeries(scrape(t, m.metrics[e.workload]), "istio_requests_total", map[string]string{
			"reporter": "destination", "source_workload": e.src, "destination_service": e.dst,
			"response_code": "200", "connection_security_policy": "mutual_tls",
		}) {
			t.Errorf("%s sidecar lacks a mutual_tls istio_requests_total series from %s", e.workload, e.src)
		}
	}
	for w, addr := range m.metrics {
		if line := seriesWithout(scrape(t, addr), "istio_requests_total", "reporter", "destination",
			"connection_security_policy", "mutual_tls"); line != "" {
			t.Errorf("%s sidecar has a destination-reporter series without mutual TLS: %s", w, line)
		}
	}

	// The control plane's dashboard scrapes the sidecars and draws the
	// graph; the injected fault shows as errors on reviews -> ratings.
	deadline = time.Now().Add(30 * time.Second)
	for {
		edges := graphEdges(t, m.dash)
		_, pd := edges["svc:default/productpage->svc:default/details"]
		_, pr := edges["svc:default/productpage->svc:default/reviews"]
		rr := edges["svc:default/reviews->svc:default/ratings"]
		if pd && pr && rr > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard graph lacks the Bookinfo edges or the ratings errors: %v", edges)
		}
		time.Sleep(time.Second)
	}

	// Access logs: each hop leaves a line on both sides.
	for _, w := range []string{"productpage-v1", "details-v1", "reviews-v3", "ratings-v1"} {
		b, err := os.ReadFile(filepath.Join(m.logDir, w+".access.log"))
		if err != nil || !strings.Contains(string(b), `"response_code":200`) {
			t.Errorf("access log of %s has no 200 line (err %v)", w, err)
		}
	}
}

// graphEdges returns the dashboard's service-graph edges as "src->dst" and
// their error rates.
func graphEdges(t *testing.T, dash string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(dash + "/api/graph")
	if err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	defer resp.Body.Close()
	var g struct {
		Edges []struct {
			Source, Target string
			ErrorRate      float64
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatalf("dashboard graph: %v", err)
	}
	out := map[string]float64{}
	for _, e := range g.Edges {
		out[e.Source+"->"+e.Target] = e.ErrorRate
	}
	return out
}

// graphMTLS returns the dashboard graph's edges with their mTLS marks.
func graphMTLS(t *testing.T, dash string) []graphEdge {
	t.Helper()
	resp, err := http.Get(dash + "/api/graph")
	if err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	defer resp.Body.Close()
	var g struct{ Edges []graphEdge }
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatalf("dashboard graph: %v", err)
	}
	return g.Edges
}

type graphEdge struct {
	Source, Target string
	MTLS           bool    `json:"mtls"`
	MTLSShare      float64 `json:"mtlsShare"`
}

// seriesWithout returns the first sample line of metric that has label
// key=val but not label key2=val2 ("" if none).
func seriesWithout(exposition, metric, key, val, key2, val2 string) string {
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, metric+"{") && strings.Contains(line, key+`="`+val+`"`) &&
			!strings.Contains(line, key2+`="`+val2+`"`) {
			return line
		}
	}
	return ""
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/stats/prometheus")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// hasSeries reports whether the exposition has a sample of metric whose
// labels include every given pair.
func hasSeries(exposition, metric string, labels map[string]string) bool {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
