package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// serveApp serves h on 127.0.0.1 until the test ends and returns its port.
func serveApp(t *testing.T, h http.Handler) int {
	t.Helper()
	app := &http.Server{Handler: h}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(lis) }()
	t.Cleanup(func() { app.Close() })
	return lis.Addr().(*net.TCPAddr).Port
}

// startAppSidecar runs a plaintext `weft proxy` for workload APP-v1 (label
// app=APP, namespace default) in front of the app on appPort, joining
// service APP:8080/http, and waits until it is ready.
func startAppSidecar(t *testing.T, bin, xds, app string, appPort int, extra ...string) (proxyAddrs, *harness.Process) {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready.json")
	args := append([]string{"proxy", "--control-plane", xds, "--namespace", "default", "--workload", app + "-v1",
		"--labels", "app=" + app, "--app-port", strconv.Itoa(appPort), "--service", app + ":8080/http",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready}, extra...)
	proxy := harness.Start(t, bin, nil, args...)
	var addrs proxyAddrs
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, proxy)), &addrs); err != nil {
		t.Fatal(err)
	}
	return addrs, proxy
}
