package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// drFeaturesConfig: pp.example.com behind HAProxy (accept-proxy) with
// DestinationRule proxyProtocol and a VirtualService statPrefix;
// warm.example.com with DestinationRule warmup and the given endpoints.
func drFeaturesConfig(haproxyPort int, warmPorts ...int) string {
	var eps strings.Builder
	for _, p := range warmPorts {
		fmt.Fprintf(&eps, "  - {address: 127.0.0.1, ports: {http: %d}}\n", p)
	}
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pp, namespace: default}
spec:
  hosts: [pp.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: %d}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pp, namespace: default}
spec:
  host: pp.example.com
  trafficPolicy:
    proxyProtocol: {}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pp, namespace: default}
spec:
  hosts: [pp.example.com]
  http:
  - match:
    - uri: {prefix: /}
      statPrefix: pp-all
    route:
    - destination: {host: pp.example.com}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: warm, namespace: default}
spec:
  hosts: [warm.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
%s---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: warm, namespace: default}
spec:
  host: warm.example.com
  trafficPolicy:
    loadBalancer:
      warmup: {duration: 3s, minimumPercent: 10}
`, haproxyPort, eps.String())
}

// TestDestinationRuleProxyProtocolAndWarmup drives Istio YAML through the
// translator and a `weft proxy`: proxyProtocol makes HAProxy (accept-proxy)
// see the client's own address; the route's statPrefix counts in /stats;
// warmup gives an endpoint added later a small share first and its full
// share after the warmup duration.
func TestDestinationRuleProxyProtocolAndWarmup(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: hack/install-deps.sh installs it (Debian package haproxy)")
	}
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "src=%s", r.Header.Get("X-PP-Src"))
	}))
	hpAddr := harness.FreeAddr(t)
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind %s accept-proxy
  http-request set-header X-PP-Src %%[src]:%%[src_port]
  default_backend app
backend app
  server app 127.0.0.1:%d
`, hpAddr, app)), 0o644); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, haproxy, nil, "-db", "-f", cfg)
	harness.WaitForPort(t, hpAddr, 10*time.Second)
	_, hpPortS, _ := net.SplitHostPort(hpAddr)
	hpPort, err := strconv.Atoi(hpPortS)
	if err != nil {
		t.Fatal(err)
	}

	named := func(name string) int {
		return serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, name) }))
	}
	portA, portB := named("a"), named("b")
	configDir := t.TempDir()
	write := func(body string) {
		t.Helper()
		tmp := filepath.Join(t.TempDir(), "dr.yaml")
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(configDir, "dr.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	write(drFeaturesConfig(hpPort, portA))
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
	u, _ := url.Parse("http://" + addrs.Outbound)
	var mu sync.Mutex
	var local string
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u), MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				local = c.LocalAddr().String()
				mu.Unlock()
			}
			return c, err
		}}}
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v\nproxy log:\n%s", u, err, client.Stderr())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := get("http://pp.example.com/")
		mu.Lock()
		want := "src=" + local
		mu.Unlock()
		if code == 200 && body == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pp.example.com: %d %q, want %q (HAProxy's view of the PROXY header)\ncontrol plane:\n%s", code, body, want, cp.Stderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + addrs.Admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	stats, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(stats), "vhost.pp.example.com:80.route.pp-all.upstream_rq_200: ") {
		t.Errorf("/stats has no statPrefix counters for the route:\n%s", stats)
	}
	// Adaptive concurrency is on by default: up to --concurrency (2) Ps.
	if runtime.NumCPU() >= 2 && (!strings.Contains(string(stats), "server.concurrency_max: 2\n") ||
		!regexp.MustCompile(`(?m)^server\.concurrency: [12]$`).Match(stats)) {
		t.Errorf("/stats lacks the adaptive concurrency stats:\n%s", stats)
	}

	// Warmup: b joins; it starts at about 10 % of its weight.
	for range 20 {
		if code, body := get("http://warm.example.com/"); code != 200 || body != "a" {
			t.Fatalf("warm.example.com before b joins: %d %q", code, body)
		}
	}
	write(drFeaturesConfig(hpPort, portA, portB))
	deadline = time.Now().Add(30 * time.Second)
	for {
		if _, body := get("http://warm.example.com/"); body == "b" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b never answered")
		}
	}
	joined := time.Now()
	var early, earlyB int
	for ; early < 300 && time.Since(joined) < 700*time.Millisecond; early++ {
		if _, body := get("http://warm.example.com/"); body == "b" {
			earlyB++
		}
	}
	t.Logf("first %v after b answered: b %d of %d", time.Since(joined).Round(time.Millisecond), earlyB, early)
	if early < 30 || float64(earlyB)/float64(early) > 0.3 {
		t.Fatalf("b got %d of %d requests right after joining, want a warmup share (< 30 %%)", earlyB, early)
	}
	time.Sleep(time.Until(joined.Add(3200 * time.Millisecond))) // past the warmup duration (wall-clock by definition)
	var lateB int
	for range 400 {
		if _, body := get("http://warm.example.com/"); body == "b" {
			lateB++
		}
	}
	t.Logf("after the warmup: b %d of 400", lateB)
	if lateB < 140 || lateB > 260 {
		t.Fatalf("b got %d of 400 requests after the warmup, want about half", lateB)
	}
}
