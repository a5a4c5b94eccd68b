package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// otlpLogs is a real OTLP/gRPC logs collector: it keeps every LogRecord
// as its body and attributes.
type otlpLogs struct {
	collogspb.UnimplementedLogsServiceServer
	mu   sync.Mutex
	recs []otlpLog
}

type otlpLog struct {
	body  string
	attrs map[string]string
}

func (o *otlpLogs) Export(_ context.Context, req *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rl := range req.GetResourceLogs() {
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				r := otlpLog{body: lr.GetBody().GetStringValue(), attrs: map[string]string{}}
				for _, kv := range lr.GetAttributes() {
					r.attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				o.recs = append(o.recs, r)
			}
		}
	}
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func (o *otlpLogs) list() []otlpLog {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]otlpLog(nil), o.recs...)
}

// find returns the records whose body has prefix and whose attributes
// include want.
func (o *otlpLogs) find(prefix string, want map[string]string) []otlpLog {
	var out []otlpLog
next:
	for _, r := range o.list() {
		if !strings.HasPrefix(r.body, prefix) {
			continue
		}
		for k, v := range want {
			if !strings.Contains(r.attrs[k], v) {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// TestOtelAccessLogs is Istio's OpenTelemetry access log task with weft:
// the mesh config's envoyOtelAls provider points at a collector declared
// by a ServiceEntry (its only endpoint the OTLP/gRPC server this test
// runs), a mesh-wide Telemetry enables it with a filter expression that
// drops 404s. HTTP and opaque TCP (mutual TLS, metadata exchange) go
// through two sidecars each; both sides' LogRecords arrive with the
// expected body, response code, flags, cluster and peer workloads, the
// 404 nowhere. Then the collector stops: requests still succeed, their
// latency is reported next to the collector-up baseline, and the
// proxy's logs_dropped counter rises.
func TestOtelAccessLogs(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	col := &otlpLogs{}
	cl, colPort := listenLocal(t)
	gs := grpc.NewServer()
	collogspb.RegisterLogsServiceServer(gs, col)
	go func() { _ = gs.Serve(cl) }()
	t.Cleanup(gs.Stop)

	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "failed", http.StatusServiceUnavailable)
		case "/missing":
			http.NotFound(w, r)
		default:
			fmt.Fprint(w, "ok")
		}
	})}
	al, appPort := listenLocal(t)
	go func() { _ = app.Serve(al) }()
	t.Cleanup(func() { app.Close() })
	echo, echoPort := listenLocal(t)
	echotest.Serve(t, echo, echotest.Bytes)

	dataDir, configDir := t.TempDir(), t.TempDir()
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	writeAtomic(t, meshFile, `extensionProviders:
- name: otel-als
  envoyOtelAls:
    service: otel-collector.observability.svc.cluster.local
    port: `+colPort+`
    logName: weft-e2e
    logFormat:
      text: "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS%"
      labels:
        code: "%RESPONSE_CODE%"
        flags: "%RESPONSE_FLAGS%"
        cluster: "%UPSTREAM_CLUSTER%"
        source: "%CEL(source.workload)%"
`)
	writeAtomic(t, filepath.Join(configDir, "peer-authentication.yaml"), peerAuthn("STRICT"))
	writeAtomic(t, filepath.Join(configDir, "telemetry.yaml"), `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: otel-collector, namespace: observability}
spec:
  hosts: [otel-collector.observability.svc.cluster.local]
  ports: [{number: `+colPort+`, name: grpc-otlp, protocol: GRPC}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: weft-system}
spec:
  accessLogging:
  - providers: [{name: otel-als}]
    filter: {expression: "!has(response.code) || response.code != 404"}
`)
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir, "--mesh-config", meshFile,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms")
	xds, caAddr := cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA")
	startMeshedProxy(t, dataDir, xds, caAddr, "web", "--app-port", appPort, "--service", "web:8080/http", "--labels", "app=web,version=v1")
	startMeshedProxy(t, dataDir, xds, caAddr, "db", "--app-port", echoPort, "--service", "db:9000/tcp", "--labels", "app=db,version=v1")
	client, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client", "--labels", "app=client,version=v2", "--admin-address", "127.0.0.1:0")

	hc := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+client.Outbound+path, nil)
		req.Host = "web:8080"
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, err := get("/warmup")
		if code == 200 && len(col.find("GET /warmup", nil)) >= 2 { // the client's and the server's record
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 200 with access log records through the mesh: %d %v, %d records", code, err, len(col.list()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for path, want := range map[string]int{"/ok": 200, "/fail": 503, "/missing": 404} {
		if code, err := get(path); code != want {
			t.Fatalf("GET %s: %d %v, want %d", path, code, err, want)
		}
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		if err := tcpEchoPayload(client.Outbound, "db:9000", "opaque bytes\n"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("TCP through the mesh: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	webCluster := "outbound|8080||web.default.svc.cluster.local"
	dbCluster := "outbound|9000||db.default.svc.cluster.local"
	want := []struct {
		what, body string
		attrs      map[string]string
	}{
		{"client 200", "GET /ok HTTP/1.1 200 -", map[string]string{"code": "200", "flags": "-", "cluster": webCluster, "upstream_peer": `"workload":"web"`, "source": "client"}},
		{"server 200", "GET /ok HTTP/", map[string]string{"code": "200", "cluster": "inbound|", "downstream_peer": `"workload":"client"`, "source": "client"}},
		// Istio's default retries: the client tried 3 times (URX).
		{"client 503", "GET /fail HTTP/1.1 503 URX", map[string]string{"code": "503", "flags": "URX", "cluster": webCluster, "upstream_peer": `"app":"web"`}},
		{"server 503", "GET /fail HTTP/", map[string]string{"code": "503", "downstream_peer": `"version":"v2"`}},
		// The client opens the TCP connection with CONNECT (explicit
		// mode): its HTTP connection manager logs the CONNECT stream, as
		// Envoy's does; the server's tcp_proxy logs the connection.
		{"client TCP", "CONNECT - HTTP/1.1 200 -", map[string]string{"code": "200", "cluster": dbCluster, "upstream_peer": `"workload":"db"`}},
		{"server TCP", "- - - 0 -", map[string]string{"code": "0", "cluster": "inbound|", "downstream_peer": `"workload":"client"`}},
	}
	deadline = time.Now().Add(30 * time.Second)
	for _, w := range want {
		for len(col.find(w.body, w.attrs)) == 0 {
			if time.Now().After(deadline) {
				var all bytes.Buffer
				for _, r := range col.list() {
					fmt.Fprintf(&all, "%q %v\n", r.body, r.attrs)
				}
				t.Fatalf("%s: no record with body %q and attributes %v; collector has:\n%s", w.what, w.body, w.attrs, all.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got := col.find("GET /missing", nil); len(got) != 0 {
		t.Errorf("the filter expression should drop the 404s, got %v", got)
	}

	// The collector goes down: requests neither fail nor wait for it.
	measure := func(n int) []time.Duration {
		var ds []time.Duration
		for range n {
			start := time.Now()
			if code, err := get("/ok"); code != 200 {
				t.Fatalf("GET /ok: %d %v", code, err)
			}
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds
	}
	const n = 200
	up := measure(n)
	gs.Stop()
	down := measure(n)
	pct := func(ds []time.Duration, p float64) time.Duration { return ds[int(float64(len(ds)-1)*p)] }
	t.Logf("%d sequential requests through two sidecars: collector up p50 %v p99 %v max %v; collector down p50 %v p99 %v max %v (p50 ratio %.2f)",
		n, pct(up, .5), pct(up, .99), up[n-1], pct(down, .5), pct(down, .99), down[n-1], float64(pct(down, .5))/float64(pct(up, .5)))
	deadline = time.Now().Add(30 * time.Second)
	for {
		dropped := statValue(t, client.Admin, "access_logs.open_telemetry_access_log.logs_dropped")
		if dropped > 0 {
			t.Logf("client sidecar: logs_written %d, logs_dropped %d", statValue(t, client.Admin, "access_logs.open_telemetry_access_log.logs_written"), dropped)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs_dropped stays 0 with the collector down")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// statValue reads one counter from a proxy's admin /stats.
func statValue(t *testing.T, admin, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
