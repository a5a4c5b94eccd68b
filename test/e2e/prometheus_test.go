package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// grafanaDashboard is the part of a Grafana dashboard model the test reads.
type grafanaDashboard struct {
	UID        string `json:"uid"`
	Templating struct {
		List []grafanaVar `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

type grafanaVar struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Definition string `json:"definition"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

// promResult is a /api/v1/query answer.
type promResult struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	} `json:"data"`
}

// samples returns the values of a vector or scalar result.
func (r promResult) samples() ([]float64, error) {
	parse := func(v []any) (float64, error) {
		s, _ := v[1].(string)
		return strconv.ParseFloat(s, 64)
	}
	switch r.Data.ResultType {
	case "vector":
		var vec []struct{ Value []any }
		if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
			return nil, err
		}
		out := make([]float64, 0, len(vec))
		for _, s := range vec {
			f, err := parse(s.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
		return out, nil
	case "scalar":
		var v []any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := parse(v)
		return []float64{f}, err
	}
	return nil, fmt.Errorf("result type %q", r.Data.ResultType)
}

type promClient struct {
	base string
	hc   *http.Client
}

func (c promClient) get(path string, params url.Values, into any) error {
	resp, err := c.hc.Get(c.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	return nil
}

func (c promClient) query(expr string) (promResult, error) {
	var r promResult
	err := c.get("/api/v1/query", url.Values{"query": {expr}}, &r)
	return r, err
}

// labelValues evaluates Grafana's label_values(SELECTOR, LABEL) variable
// query through /api/v1/series.
func (c promClient) labelValues(selector, label string) ([]string, error) {
	var r struct {
		Status, Error string
		Data          []map[string]string
	}
	if err := c.get("/api/v1/series", url.Values{"match[]": {selector},
		"start": {strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)}}, &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("series %s: %s", selector, r.Error)
	}
	seen := map[string]bool{}
	var out []string
	for _, s := range r.Data {
		if v := s[label]; v != "" && !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out, nil
}

var (
	labelValuesRe = regexp.MustCompile(`^label_values\((.*),\s*(\w+)\)$`)
	grafanaVarRe  = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)
)

// substitute replaces $var and ${var} with their values.
func substitute(expr string, vals map[string]string) (string, error) {
	var missing []string
	out := grafanaVarRe.ReplaceAllStringFunc(expr, func(m string) string {
		sm := grafanaVarRe.FindStringSubmatch(m)
		name := sm[1] + sm[2]
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for %v", missing)
	}
	return out, nil
}

// preferred values for dashboard variables: a service with callers and
// workloads, a workload with both inbound and outbound traffic. Without a
// preference the first value label_values returns is used.
var preferredVarValues = map[string]string{
	"service":  "reviews.default.svc.cluster.local",
	"workload": "reviews-v2",
}

// keyPanels must return data while the demo runs with load: request rate
// per service, success rate and p99 latency on each dashboard.
var keyPanels = map[string][]string{
	"weft-mesh": {"Global Request Volume", "Global Success Rate (non-5xx responses)", "Request Rate By Service",
		"Success Rate By Service", "P99 Latency By Service", "HTTP/gRPC Workloads", "Connected Proxies"},
	"weft-service": {"Client Request Volume", "Client Success Rate (non-5xx responses)", "Client Request Duration",
		"Server Request Volume", "Server Success Rate (non-5xx responses)", "Server Request Duration"},
	"weft-workload": {"Incoming Request Volume", "Incoming Success Rate (non-5xx responses)", "Request Duration",
		"Outgoing Requests By Destination And Response Code"},
}

// TestDemoPrometheusGrafana runs the demo with load and a real Prometheus
// (Debian's prometheus 2.42) on the scrape config `weft demo --prometheus`
// writes, then evaluates every PromQL expression of the Grafana dashboards
// in manifests/grafana, variables resolved from their own label_values
// queries: each must parse and run, and the key panels must return data.
func TestDemoPrometheusGrafana(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (hack/install-deps.sh installs Debian's prometheus)")
	}
	confDir := t.TempDir()
	weft.Binary(t) // build first: the timing below is the demo's
	start := time.Now()
	m := startDemo(t, "--load", "20", "--prometheus", confDir+"/", "--prometheus-run", "--prometheus-interval", "1s")
	ready := time.Now()
	t.Logf("demo with prometheus ready in %s", ready.Sub(start).Round(100*time.Millisecond))
	if m.prom == "" {
		t.Fatalf("banner has no prometheus URL:\n%s", m.proc.Stdout())
	}
	// The written config is a valid Prometheus config on its own.
	conf := filepath.Join(confDir, "prometheus.yml")
	if _, err := os.Stat(conf); err != nil {
		t.Fatalf("--prometheus %s/ wrote no prometheus.yml: %v", confDir, err)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		if out, err := exec.Command(promtool, "check", "config", conf).CombinedOutput(); err != nil {
			t.Errorf("promtool check config: %v\n%s", err, out)
		}
	}
	t.Logf("prometheus %s at %s", promBin, m.prom)
	pc := promClient{base: m.prom, hc: &http.Client{Timeout: 10 * time.Second}}

	// Every proxy and the control plane are scraped.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var tg struct {
			Data struct {
				ActiveTargets []struct {
					Labels    map[string]string
					Health    string
					LastError string
				}
			}
		}
		err := pc.get("/api/v1/targets", url.Values{"state": {"active"}}, &tg)
		up := 0
		var down []string
		for _, a := range tg.Data.ActiveTargets {
			if a.Health == "up" {
				up++
			} else {
				down = append(down, a.Labels["job"]+"/"+a.Labels["instance"]+": "+a.Health+" "+a.LastError)
			}
		}
		if err == nil && up == 8 && len(tg.Data.ActiveTargets) == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want 8 targets up (7 proxies + control plane), got %d up; err %v; down %v", up, err, down)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// Request rate per service covers every Bookinfo service (once two
	// scrapes of each sidecar saw traffic).
	deadline = time.Now().Add(40 * time.Second)
	for {
		r, err := pc.query(`sum by (destination_service_name) (rate(istio_requests_total{reporter="destination"}[1m])) > 0`)
		var vec []struct{ Metric map[string]string }
		if err == nil {
			_ = json.Unmarshal(r.Data.Result, &vec)
		}
		got := map[string]bool{}
		for _, s := range vec {
			got[s.Metric["destination_service_name"]] = true
		}
		if got["productpage"] && got["details"] && got["reviews"] && got["ratings"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus lacks a request rate for some Bookinfo service: has %v (err %v)", got, err)
		}
		time.Sleep(500 * time.Millisecond)
	}

	var dashboards []grafanaDashboard
	files, _ := filepath.Glob(filepath.Join(m.repoRoot, "manifests/grafana/*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d grafanaDashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		dashboards = append(dashboards, d)
	}
	if len(dashboards) != 3 {
		t.Fatalf("want the mesh, service and workload dashboards in manifests/grafana, found %v", files)
	}

	// evaluate resolves a dashboard's variables and runs every target; it
	// returns the errors and the key panels without data (the latter may
	// still be filling in: the caller retries).
	type outcome struct {
		exprs, withData int
		bad             []string // parse or evaluation errors: fatal
		empty           []string // key panels without data
	}
	evaluate := func(d grafanaDashboard) outcome {
		var o outcome
		vals := map[string]string{"__rate_interval": "1m"}
		for _, v := range d.Templating.List {
			switch v.Type {
			case "datasource":
				vals[v.Name] = "prometheus"
			case "custom":
				s, _ := v.Current.Value.(string)
				vals[v.Name] = s
			case "query":
				o.exprs++
				sm := labelValuesRe.FindStringSubmatch(strings.TrimSpace(v.Definition))
				if sm == nil {
					o.bad = append(o.bad, fmt.Sprintf("variable %s: not label_values(selector, label): %q", v.Name, v.Definition))
					continue
				}
				selector, err := substitute(sm[1], vals)
				if err != nil {
					o.bad = append(o.bad, fmt.Sprintf("variable %s: %v", v.Name, err))
					continue
				}
				values, err := pc.labelValues(selector, sm[2])
				if err != nil {
					o.bad = append(o.bad, fmt.Sprintf("variable %s: %v", v.Name, err))
					continue
				}
				if len(values) == 0 {
					o.empty = append(o.empty, "variable "+v.Name+": "+selector)
					continue
				}
				o.withData++
				vals[v.Name] = values[0]
				for _, x := range values {
					if x == preferredVarValues[v.Name] {
						vals[v.Name] = x
					}
				}
			}
		}
		key := map[string]bool{}
		for _, k := range keyPanels[d.UID] {
			key[k] = true
		}
		// keyData counts, per key panel, the targets that returned data.
		keyData := map[string]int{}
		var keyEmpty []string
		for _, p := range d.Panels {
			for i, tg := range p.Targets {
				o.exprs++
				where := fmt.Sprintf("panel %q target %d", p.Title, i)
				if key[p.Title] {
					keyData[p.Title] += 0 // present, even if it fails below
				}
				expr, err := substitute(tg.Expr, vals)
				if err != nil {
					o.bad = append(o.bad, where+": "+err.Error())
					continue
				}
				r, err := pc.query(expr)
				if err != nil || r.Status != "success" {
					o.bad = append(o.bad, fmt.Sprintf("%s: %s: %v %s %s", where, expr, err, r.ErrorType, r.Error))
					continue
				}
				s, err := r.samples()
				if err != nil {
					o.bad = append(o.bad, fmt.Sprintf("%s: %v", where, err))
					continue
				}
				finite := 0
				for _, f := range s {
					if !math.IsNaN(f) && !math.IsInf(f, 0) {
						finite++
					}
				}
				if finite > 0 {
					o.withData++
				}
				if key[p.Title] {
					keyData[p.Title] += min(finite, 1)
					if finite == 0 {
						keyEmpty = append(keyEmpty, fmt.Sprintf("%s: %s returned %d samples, %d finite", where, expr, len(s), finite))
					}
				}
			}
		}
		// A key panel needs data in at least one target (the plaintext half
		// of an mTLS/plaintext pair stays empty in a STRICT mesh).
		for k := range key {
			if n, ok := keyData[k]; !ok {
				o.bad = append(o.bad, fmt.Sprintf("key panel %q not in the dashboard", k))
			} else if n == 0 {
				o.empty = append(o.empty, keyEmpty...)
				break
			}
		}
		return o
	}

	total, withData := 0, 0
	for _, d := range dashboards {
		// Generous: on a loaded machine the load generator and sidecars
		// can stall for a while, leaving a 1m rate at 0/0 (NaN).
		deadline := time.Now().Add(90 * time.Second)
		for {
			o := evaluate(d)
			if len(o.bad) > 0 {
				t.Fatalf("dashboard %s: %d of %d expressions failed:\n%s", d.UID, len(o.bad), o.exprs, strings.Join(o.bad, "\n"))
			}
			if len(o.empty) == 0 {
				t.Logf("dashboard %s: %d expressions ran, %d returned data (%s after the demo was ready)", d.UID, o.exprs, o.withData, time.Since(ready).Round(100*time.Millisecond))
				total += o.exprs
				withData += o.withData
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dashboard %s: key panels without data:\n%s", d.UID, strings.Join(o.empty, "\n"))
			}
			time.Sleep(time.Second)
		}
	}
	if total < 90 {
		t.Errorf("only %d expressions found in the dashboards; the parsing above missed some", total)
	}

	// STRICT mTLS mesh-wide: every request a sidecar received came over
	// mutual TLS (the mesh dashboard's mTLS Share stat).
	r, err := pc.query(`sum(rate(istio_requests_total{reporter="destination", connection_security_policy="mutual_tls"}[1m])) / sum(rate(istio_requests_total{reporter="destination"}[1m]))`)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := r.samples(); err != nil || len(s) != 1 || s[0] != 1 {
		t.Errorf("mTLS share of received requests = %v (err %v), want 1", s, err)
	}
	t.Logf("%d dashboard expressions evaluated against Prometheus, %d with data", total, withData)
}
