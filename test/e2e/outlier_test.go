package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// outlierConfig is a STATIC ServiceEntry with two endpoints and a
// DestinationRule ejecting after two consecutive 5xx; minHealth is the
// outlierDetection.minHealthPercent line ("" for Istio's default 0).
func outlierConfig(portA, portB int, minHealth string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: flaky, namespace: default}
spec:
  hosts: [flaky.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: %d}, labels: {instance: a}}
  - {address: 127.0.0.1, ports: {http: %d}, labels: {instance: b}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: default}
spec:
  host: flaky.example.com
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 2
      interval: 1s
      baseEjectionTime: 5m
      maxEjectionPercent: 100
%s`, portA, portB, minHealth)
}

// flakyApp serves name's own name on 127.0.0.1, or 500 while fail says so;
// it returns the port.
func flakyApp(t *testing.T, name string, fail func() bool) int {
	t.Helper()
	return serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if fail() {
			http.Error(w, name+" failing", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, name)
	}))
}

// TestOutlierDetectionPanicThreshold drives Istio's outlierDetection
// through the translator and a `weft proxy`: a host answering 500 is
// ejected and the other takes all traffic; once both are ejected, Istio's
// default (minHealthPercent 0, no panic) answers 503 UH; with
// minHealthPercent 50 the proxy is in panic and balances over the ejected
// hosts again (their 500s come through) without un-ejecting them.
func TestOutlierDetectionPanicThreshold(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	var aFails atomic.Bool
	portA := flakyApp(t, "a", aFails.Load)
	portB := flakyApp(t, "b", func() bool { return true })

	configDir := t.TempDir()
	write := func(minHealth string) {
		t.Helper()
		// Write then rename: the config-dir watcher never sees half a file.
		tmp := filepath.Join(t.TempDir(), "flaky.yaml")
		if err := os.WriteFile(tmp, []byte(outlierConfig(portA, portB, minHealth)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(configDir, "flaky.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir, "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	ready := filepath.Join(t.TempDir(), "client.json")
	client := harness.Start(t, bin, nil, "proxy", "--control-plane", cp.XDSAddress, "--namespace", "default", "--workload", "client",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	var addrs struct{ Outbound, Admin string }
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, client)), &addrs); err != nil {
		t.Fatal(err)
	}
	outbound, admin := addrs.Outbound, addrs.Admin

	u, _ := url.Parse("http://" + outbound)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 5 * time.Second}
	type result struct {
		status      int
		body, flags string
	}
	get := func() result {
		t.Helper()
		resp, err := hc.Get("http://flaky.example.com/")
		if err != nil {
			t.Fatalf("request: %v\nproxy log:\n%s", err, client.Stderr())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return result{resp.StatusCode, string(b), resp.Header.Get("X-Weft-Response-Flags")}
	}
	// Until the config arrives the host is unknown: NR, or UF when the
	// request goes out as passthrough to a name that does not resolve.
	deadline := time.Now().Add(30 * time.Second)
	for f := get().flags; f == "NR" || f == "UF"; f = get().flags {
		if time.Now().After(deadline) {
			t.Fatalf("flaky.example.com never routed\ncontrol plane:\n%s", cp.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// b fails twice at most (consecutive 5xx per host), then only a answers.
	fails := 0
	for range 20 {
		if r := get(); r.status != 200 {
			fails++
		}
	}
	if fails > 2 {
		t.Fatalf("%d of 20 requests failed, want b ejected after 2 consecutive 5xx", fails)
	}
	for range 10 {
		if r := get(); r.status != 200 || r.body != "a" {
			t.Fatalf("with b ejected got %d %q", r.status, r.body)
		}
	}
	// a fails too: ejected after two 500s; nothing healthy, no panic.
	aFails.Store(true)
	var r result
	for range 5 {
		r = get()
	}
	if r.status != http.StatusServiceUnavailable || r.flags != "UH" {
		t.Fatalf("both ejected, minHealthPercent 0: got %d %q %q, want 503 UH", r.status, r.flags, r.body)
	}
	// minHealthPercent 50: panic mode, both (still ejected) hosts answer.
	write("      minHealthPercent: 50\n")
	seen := map[string]bool{}
	deadline = time.Now().Add(30 * time.Second)
	for len(seen) < 2 {
		r = get()
		if r.status == http.StatusInternalServerError {
			seen[r.body] = true
		} else if r.status != http.StatusServiceUnavailable {
			t.Fatalf("during the config change: %d %q %q", r.status, r.flags, r.body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("panic mode never reached both hosts (seen %v), last %d %q", seen, r.status, r.flags)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get("http://" + admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	stats, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^cluster\.outbound\|80\|\|flaky\.example\.com\.lb_healthy_panic: (\d+)$`).FindSubmatch(stats)
	if m == nil {
		t.Fatalf("no lb_healthy_panic statistic:\n%s", stats)
	}
	if n, _ := strconv.Atoi(string(m[1])); n == 0 {
		t.Fatal("lb_healthy_panic not counted")
	}
}
