package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// loopbackWithFreePort picks 127.0.0.X (X random in 2..250) whose port is
// free a moment ago, so parallel runs on one machine do not collide on a
// fixed port such as 9080.
func loopbackWithFreePort(t *testing.T, port int) string {
	t.Helper()
	for range 50 {
		ip := fmt.Sprintf("127.0.0.%d", 2+rand.IntN(249))
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return ip
		}
	}
	t.Fatalf("no 127.0.0.X with port %d free", port)
	return ""
}

// TestSidecarEgressBind is a Sidecar egress listener with bind and
// captureMode NONE from Istio YAML: port 9080 HTTP bound on 127.0.0.X,
// hosts ./*. A plain client (no proxy settings, no iptables) connecting
// to 127.0.0.X:9080 with the Host of a mesh service reaches it through
// the mesh: the client sidecar routes it and the server sidecar reports
// it as coming from the client workload. The server's Sidecar ingress
// listener with bind and captureMode NONE takes plain clients straight to
// its defaultEndpoint. Bind mistakes are refused by `weft validate` with
// file:line.
func TestSidecarEgressBind(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	bindIP := loopbackWithFreePort(t, 9080)
	ingressIP := loopbackWithFreePort(t, 9080)
	for ingressIP == bindIP {
		ingressIP = loopbackWithFreePort(t, 9080)
	}
	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "reviews host=%s path=%s", r.Host, r.URL.Path)
	}))
	configDir := t.TempDir()
	cfg := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sleep, namespace: default}
spec:
  workloadSelector:
    labels: {app: sleep}
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: %s
    captureMode: NONE
    hosts: ["./*"]
  - hosts: ["istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: default}
spec:
  workloadSelector:
    labels: {app: reviews}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: %s
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:%d
`, bindIP, ingressIP, appPort)
	if err := os.WriteFile(filepath.Join(configDir, "sidecar.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := weft.Binary(t)
	if r := harness.Run(t, bin, nil, "validate", "-f", filepath.Join(configDir, "sidecar.yaml")); r.ExitCode != 0 {
		t.Fatalf("weft validate refused the Sidecar:\n%s%s", r.Stdout, r.Stderr)
	}
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")

	ready := filepath.Join(t.TempDir(), "ready.json")
	server := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", "reviews-v1",
		"--labels", "app=reviews", "--app-port", strconv.Itoa(appPort), "--service", "reviews:9080/http",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready)
	var reviews proxyAddrs
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, server)), &reviews); err != nil {
		t.Fatal(err)
	}
	_, sleepProc := startAppSidecar(t, bin, xds, "sleep", serveApp(t, http.NotFoundHandler()))

	bound := net.JoinHostPort(bindIP, "9080")
	get := func(host, path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+bound+path, nil)
		req.Host = host
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var code int
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = get("reviews", "/ratings"); code == 200 {
			break
		}
	}
	if want := "reviews host=reviews path=/ratings"; code != 200 || body != want {
		t.Fatalf("GET http://%s/ratings Host: reviews: %d %q, want 200 %q\nsleep proxy:\n%s", bound, code, body, want, sleepProc.Stderr())
	}
	if code, body := get("reviews.default.svc.cluster.local:9080", "/full"); code != 200 || !strings.HasPrefix(body, "reviews ") {
		t.Fatalf("Host reviews.default.svc.cluster.local:9080: %d %q", code, body)
	}
	// The server sidecar saw the requests as coming from the sleep
	// workload through its sidecar (metadata exchange), not from a bare
	// client.
	var m string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if m = scrape(t, reviews.Metrics); hasLine(m, "istio_requests_total{", `reporter="destination"`, `source_workload="sleep-v1"`, `response_code="200"`) {
			break
		}
	}
	if !hasLine(m, "istio_requests_total{", `reporter="destination"`, `source_workload="sleep-v1"`, `response_code="200"`) {
		t.Fatalf("reviews sidecar did not report requests from sleep-v1:\n%s", grepLines(m, "istio_requests_total{"))
	}
	// The reviews Sidecar's ingress listener with captureMode NONE: a plain
	// client connecting to 127.0.0.Y:9080 reaches the app through the
	// server sidecar's bound inbound listener (defaultEndpoint).
	direct := func() (int, string) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + net.JoinHostPort(ingressIP, "9080") + "/direct")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, body = direct(); code == 200 {
			break
		}
	}
	if want := "reviews host=" + net.JoinHostPort(ingressIP, "9080") + " path=/direct"; code != 200 || body != want {
		t.Fatalf("ingress listener %s:9080: %d %q, want 200 %q\nreviews proxy:\n%s", ingressIP, code, body, want, server.Stderr())
	}

	// Bind mistakes are refused with file:line.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: bad, namespace: default}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.300
    hosts: ["./*"]
  - bind: 127.0.0.2
    hosts: ["istio-system/*"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := harness.Run(t, bin, nil, "validate", "-f", bad)
	out := r.Stdout + r.Stderr
	for _, want := range []string{
		"bad.yaml:7: Sidecar default/bad: spec.egress[0].bind: bind \"127.0.0.300\" must be an IP address",
		"bad.yaml:9: Sidecar default/bad: spec.egress[1].bind: bind needs a port",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("weft validate output lacks %q:\n%s", want, out)
		}
	}
	if r.ExitCode == 0 {
		t.Errorf("weft validate accepted the bad Sidecar:\n%s", out)
	}
}
