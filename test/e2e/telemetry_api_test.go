package e2e

import (
	"encoding/json"
	"fmt"
	"io"
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

// TestTelemetryAPI runs real proxies under Telemetry resources from
// Istio's docs: a mesh-wide metrics override UPSERTs two tags on
// istio_requests_total (request.host, and a request header with a
// has()/?: default), on the client side a third from the peer metadata
// (upstream_peer.labels['app'].value), and disables
// istio_request_duration_milliseconds; a Telemetry whose targetRefs name the Service "server" disables
// istio_request_bytes on the server side and logs only /keep paths, for
// the server's proxy only (the proxy behind the Service "other" keeps the
// mesh-wide settings); the mesh-wide access log filter keeps errors and
// requests with x-log: yes. Each proxy's Prometheus endpoint and access
// log file are checked.
func TestTelemetryAPI(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			http.Error(w, "failed", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})}
	al, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(al) }()
	t.Cleanup(func() { app.Close() })
	appPort := al.Addr().(*net.TCPAddr).Port

	dir, configDir := t.TempDir(), t.TempDir()
	telemetry := `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: weft-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT_AND_SERVER}
      tagOverrides:
        request_host: {value: request.host}
        user: {operation: UPSERT, value: "has(request.headers['x-user']) ? request.headers['x-user'] : 'anonymous'"}
        request_protocol: {operation: REMOVE}
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        peer_app: {value: "has(upstream_peer.labels['app']) ? upstream_peer.labels['app'].value : 'none'"}
    - match: {metric: REQUEST_DURATION}
      disabled: true
  accessLogging:
  - filter: {expression: "response.code >= 400 || request.headers['x-log'] == 'yes'"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: server-only, namespace: default}
spec:
  targetRefs:
  - {kind: Service, group: "", name: server}
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE, mode: SERVER}
      disabled: true
  accessLogging:
  - filter: {expression: "request.url_path.startsWith('/keep') && !connection.mtls"}
`
	if err := os.WriteFile(filepath.Join(configDir, "telemetry.yaml"), []byte(telemetry), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := weft.Binary(t)
	if r := harness.Run(t, bin, nil, "validate", "-f", configDir); r.ExitCode != 0 {
		t.Fatalf("weft validate: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")

	type addrs struct{ Outbound, Metrics string }
	startProxy := func(workload string, extra ...string) addrs {
		ready := filepath.Join(t.TempDir(), workload+".json")
		args := append([]string{"proxy", "--control-plane", xds, "--namespace", "default", "--workload", workload + "-v1",
			"--labels", "app=" + workload, "--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
			"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready,
			"--access-log", filepath.Join(dir, workload+"-access.log")}, extra...)
		p := harness.Start(t, bin, nil, args...)
		var a addrs
		if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, p)), &a); err != nil {
			t.Fatal(err)
		}
		// Requests before the first configuration are answered (503
		// "no configuration yet") without any Telemetry: wait it out.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(p.Stderr(), "first complete configuration applied") {
			if time.Now().After(deadline) || p.Exited() {
				t.Fatalf("%s: no configuration applied", workload)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return a
	}
	server := startProxy("server", "--app-port", strconv.Itoa(appPort), "--service", "server:8080/http")
	other := startProxy("other", "--app-port", strconv.Itoa(appPort), "--service", "other:8080/http")
	client := startProxy("client")

	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(host, path string, hdr ...string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+client.Outbound+path, nil)
		req.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	metrics := func(a addrs) string {
		resp, err := hc.Get("http://" + a.Metrics + "/stats/prometheus")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	logOf := func(w string) string {
		b, _ := os.ReadFile(filepath.Join(dir, w+"-access.log"))
		return string(b)
	}
	// Wait until both routes work and the server's inbound side has its
	// targetRefs Telemetry (its filter logs /keep paths).
	deadline := time.Now().Add(45 * time.Second)
	for {
		okS, okO := get("server:8080", "/keep-probe") == 200, get("other:8080", "/probe") == 200
		if okS && okO && strings.Contains(logOf("server"), `"/keep-probe"`) && strings.Contains(metrics(client), `user="anonymous"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mesh not configured: server %v other %v\nserver log:\n%s\nclient metrics:\n%s", okS, okO, logOf("server"), metrics(client))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// istio_request_bytes observations so far (a request before the
	// server's policy arrived may have counted there).
	serverBytes, otherBytes := sumSamples(metrics(server), "istio_request_bytes_count{"), sumSamples(metrics(other), "istio_request_bytes_count{")
	for _, r := range []struct {
		host, path string
		hdr        []string
		want       int
	}{
		{"server:8080", "/keep-1", []string{"x-user", "jason"}, 200},
		{"server:8080", "/drop-1", nil, 200},
		{"server:8080", "/fail-1", nil, 500},
		{"server:8080", "/logged-1", []string{"x-log", "yes"}, 200},
		{"other:8080", "/keep-2", []string{"x-user", "jason"}, 200},
		{"other:8080", "/fail-2", nil, 500},
	} {
		if code := get(r.host, r.path, r.hdr...); code != r.want {
			t.Fatalf("GET %s%s: %d, want %d", r.host, r.path, code, r.want)
		}
	}

	// Metrics: the UPSERTed tags on istio_requests_total, the removed
	// request_protocol, no duration histogram anywhere; request sizes
	// dropped on the server proxy only.
	cm, sm, om := metrics(client), metrics(server), metrics(other)
	for name, m := range map[string]string{"client": cm, "server": sm, "other": om} {
		if strings.Contains(m, "istio_request_duration_milliseconds_") {
			t.Errorf("%s: the disabled duration metric is exported", name)
		}
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "istio_requests_total{") && strings.Contains(line, "request_protocol=") {
				t.Errorf("%s: request_protocol not removed: %s", name, line)
			}
			if strings.HasPrefix(line, "istio_response_bytes_count{") && strings.Contains(line, "user=") {
				t.Errorf("%s: the UPSERTed tag is on another metric: %s", name, line)
			}
		}
	}
	for _, want := range []string{`reporter="source"`, `peer_app="server",request_host="server:8080",user="jason"} 1`, `peer_app="other",request_host="other:8080",user="jason"} 1`,
		`response_code="500"`, "istio_request_bytes_count{"} {
		if !strings.Contains(cm, want) {
			t.Errorf("client metrics lack %q:\n%s", want, cm)
		}
	}
	if !strings.Contains(sm, `,request_host="server:8080",user="jason"} 1`) || strings.Contains(sm, "peer_app=") || sumSamples(sm, "istio_request_bytes_count{") != serverBytes {
		t.Errorf("server metrics (targetRefs: request sizes disabled; %g before):\n%s", serverBytes, sm)
	}
	if !strings.Contains(om, `request_host="other:8080",user="jason"} 1`) || sumSamples(om, "istio_request_bytes_count{") != otherBytes+2 {
		t.Errorf("other metrics (not targeted: request sizes kept, %g before, 2 more requests):\n%s", otherBytes, om)
	}

	// Access logs: the client and other follow the mesh-wide filter, the
	// server its targetRefs filter. Lines are written when requests end;
	// poll until the expected lines are there.
	checks := []struct {
		proxy      string
		keep, drop []string
	}{
		// Probes may have been logged as errors (503) before the routes existed.
		{"client", []string{`"/fail-1"`, `"/logged-1"`, `"/fail-2"`}, []string{`"/keep-1"`, `"/drop-1"`, `"/keep-2"`}},
		{"server", []string{`"/keep-1"`}, []string{`"/drop-1"`, `"/fail-1"`, `"/logged-1"`}},
		{"other", []string{`"/fail-2"`}, []string{`"/keep-2"`}},
	}
	for _, c := range checks {
		deadline := time.Now().Add(10 * time.Second)
		for {
			log, missing := logOf(c.proxy), ""
			for _, k := range c.keep {
				if !strings.Contains(log, `"path":`+k) {
					missing = k
				}
			}
			if missing == "" {
				for _, d := range c.drop {
					if strings.Contains(log, `"path":`+d) {
						t.Errorf("%s access log has %s:\n%s", c.proxy, d, log)
					}
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s access log lacks %s:\n%s", c.proxy, missing, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// sumSamples adds the values of the samples whose line starts with prefix.
func sumSamples(metrics, prefix string) float64 {
	var n float64
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err == nil {
				n += v
			}
		}
	}
	return n
}
