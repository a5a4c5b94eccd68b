package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestFailoverPriority is Istio's failoverPriority through the translator
// and a `weft proxy` whose labels are version=v1, tier=gold: of three
// endpoints, "a" (v1, gold) shares both listed labels and takes all the
// traffic; when it fails and outlier detection ejects it, "b" (v1, silver,
// the first label only) takes over; then "c" (v2, neither).
func TestFailoverPriority(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	type app struct {
		port int
		fail atomic.Bool
	}
	start := func(name string) *app {
		a := &app{}
		a.port = flakyApp(t, name, a.fail.Load)
		return a
	}
	a, b, c := start("a"), start("b"), start("c")
	configDir := t.TempDir()
	cfg := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tiers, namespace: default}
spec:
  hosts: [tiers.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: %d}, labels: {version: v2, tier: gold}}
  - {address: 127.0.0.1, ports: {http: %d}, labels: {version: v1, tier: silver}}
  - {address: 127.0.0.1, ports: {http: %d}, labels: {version: v1, tier: gold}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tiers, namespace: default}
spec:
  host: tiers.example.com
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        failoverPriority: [version, tier]
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 5m
      maxEjectionPercent: 100
`, c.port, b.port, a.port)
	if err := os.WriteFile(filepath.Join(configDir, "tiers.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir, "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	ready := filepath.Join(t.TempDir(), "client.json")
	client := harness.Start(t, bin, nil, "proxy", "--control-plane", cp.XDSAddress, "--namespace", "default", "--workload", "client",
		"--labels", "app=client,version=v1,tier=gold",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	var addrs struct{ Outbound string }
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, client)), &addrs); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://" + addrs.Outbound)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 5 * time.Second}
	get := func() (int, string) {
		t.Helper()
		resp, err := hc.Get("http://tiers.example.com/")
		if err != nil {
			t.Fatalf("request: %v\nproxy log:\n%s", err, client.Stderr())
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get(); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tiers.example.com never answered\ncontrol plane:\n%s", cp.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// expect sends n requests: after at most one failure (the failing
	// host's ejection) every answer must come from want.
	expect := func(want string, n int) {
		t.Helper()
		fails := 0
		for i := range n {
			code, body := get()
			if code != 200 {
				fails++
				if fails > 1 {
					t.Fatalf("request %d: %d %q; more than one failure before failover", i, code, body)
				}
				continue
			}
			if body != want {
				t.Fatalf("request %d answered by %q, want %q (priority order a, b, c)", i, body, want)
			}
		}
	}
	expect("a", 20)
	a.fail.Store(true)
	expect("b", 20)
	b.fail.Store(true)
	expect("c", 20)
}
