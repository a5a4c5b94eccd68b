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

const gatewayConfig = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: web-gateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 8000, name: http, protocol: HTTP}
    hosts: ["web.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: default
spec:
  hosts: ["web.example.com"]
  gateways: ["web-gateway"]
  http:
  - match:
    - uri: {prefix: /web}
    route:
    - destination: {host: web, port: {number: 8080}}
`

// TestGatewayProcesses runs the real pieces: `weft control-plane` with a
// Gateway and VirtualService, a `weft proxy` sidecar in front of an app,
// and `weft proxy --gateway` as the ingress. The front door routes by
// Host and path to the sidecar; unknown hosts get 404 NR.
func TestGatewayProcesses(t *testing.T) {
	harness.SkipShort(t)
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web app %s", r.URL.Path)
	})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(lis) }()
	t.Cleanup(func() { app.Close() })
	appPort := lis.Addr().(*net.TCPAddr).Port

	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "gateway.yaml"), []byte(gatewayConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	_, xds := startXDSControlPlane(t, configDir)

	bin := weft.Binary(t)
	ready := filepath.Join(t.TempDir(), "web.json")
	web := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", "web-v1",
		"--labels", "app=web,version=v1", "--app-port", strconv.Itoa(appPort), "--service", "web:8080/http",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready)
	harness.WaitForFile(t, ready, 30*time.Second, web)

	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := fl.Addr().String()
	fl.Close()
	gwReady := filepath.Join(t.TempDir(), "gw.json")
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "8000="+front,
		"--control-plane", xds, "--namespace", "weft-system", "--workload", "ingressgateway",
		"--labels", "istio=ingressgateway,app=istio-ingressgateway",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", gwReady)
	var gwAddrs struct{ Metrics string }
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, gwReady, 30*time.Second, gw)), &gwAddrs); err != nil {
		t.Fatal(err)
	}

	get := func(host, path string) (int, string, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+front+path, nil)
		req.Host = host
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0, "", "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header.Get("X-Weft-Response-Flags"), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, _, err := get("web.example.com", "/web/index")
		if err == nil && code == 200 && body == "web app /web/index" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("front door: %d %q %v\ngateway log:\n%s", code, body, err, gw.Stderr())
		}
		time.Sleep(200 * time.Millisecond)
	}
	tests := []struct {
		host, path string
		code       int
		flags      string
	}{
		{"web.example.com", "/web/x", 200, ""},
		{"web.example.com:8000", "/web/x", 200, ""},
		{"other.example.com", "/web/x", 404, "NR"},
		{"web.example.com", "/nope", 404, "NR"},
	}
	for _, tc := range tests {
		code, body, flags, err := get(tc.host, tc.path)
		if err != nil || code != tc.code || flags != tc.flags {
			t.Errorf("Host %s %s: %d %q flags %q err %v; want %d %q", tc.host, tc.path, code, body, flags, err, tc.code, tc.flags)
		}
	}
	body := scrape(t, gwAddrs.Metrics)
	if !hasSeries(body, "istio_requests_total", map[string]string{"reporter": "source", "source_workload": "ingressgateway",
		"destination_service": "web.default.svc.cluster.local", "response_code": "200"}) {
		t.Errorf("gateway metrics lack the routed requests:\n%s", grepLines(body, "istio_requests_total"))
	}
	if !strings.Contains(gw.Stderr(), "gateway listener bound") {
		t.Errorf("gateway log does not show the bound listener:\n%s", gw.Stderr())
	}
}
