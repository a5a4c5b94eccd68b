package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// startTinyproxyE2E runs Debian's tinyproxy (an HTTP forward proxy) on a
// free 127.0.0.1 port; the returned func reads its log.
func startTinyproxyE2E(t *testing.T) (addr string, log func() string) {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Fatal("tinyproxy is not installed: hack/install-deps.sh installs it (Debian package tinyproxy)")
	}
	addr = harness.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "tinyproxy.log")
	cfgPath := filepath.Join(dir, "tinyproxy.conf")
	cfg := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\nLogLevel Connect\nLogFile %q\n", port, logPath)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	harness.Start(t, bin, nil, "-d", "-c", cfgPath)
	harness.WaitForPort(t, addr, 10*time.Second)
	return addr, func() string { b, _ := os.ReadFile(logPath); return string(b) }
}

// TestDestinationRuleTunnel is Istio's tunneling setup from Istio YAML
// (its pilot tunneling test): a VirtualService sends TCP for an external
// service to a forward proxy's subset whose DestinationRule tunnel names
// the real target; the application opens a plain TCP stream (CONNECT to
// its sidecar) and its bytes reach the target inside a CONNECT tunnel
// that Debian's tinyproxy opened.
func TestDestinationRuleTunnel(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	echo := echotest.Start(t, echotest.Lines("echo: "))
	_, echoPort, _ := net.SplitHostPort(echo.Addr().String())
	tp, tpLog := startTinyproxyE2E(t)
	tpHost, tpPort, _ := net.SplitHostPort(tp)

	configDir := t.TempDir()
	cfg := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external-forward-proxy, namespace: default}
spec:
  hosts: [forward-proxy.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 3128, name: tcp-proxy, protocol: TCP, targetPort: %[2]s}
  endpoints: [{address: %[1]s}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [external.example.com]
  addresses: [240.0.0.10]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: route-via-forward-proxy, namespace: default}
spec:
  hosts: [external.example.com]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: forward-proxy.example.com, subset: external-tcp, port: {number: 3128}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tunnel-via-forward-proxy, namespace: default}
spec:
  host: forward-proxy.example.com
  subsets:
  - name: external-tcp
    trafficPolicy:
      tunnel: {protocol: CONNECT, targetHost: 127.0.0.1, targetPort: %[3]s}
`, tpHost, tpPort, echoPort)
	if err := os.WriteFile(filepath.Join(configDir, "tunnel.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := weft.Binary(t)
	if r := harness.Run(t, bin, nil, "validate", "-f", filepath.Join(configDir, "tunnel.yaml")); r.ExitCode != 0 {
		t.Fatalf("weft validate:\n%s%s", r.Stdout, r.Stderr)
	}
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	sleep, sleepProc := startAppSidecar(t, bin, xds, "sleep", serveApp(t, http.NotFoundHandler()))

	// roundTrip opens a TCP stream to external.example.com:9000 through
	// the sidecar and sends one line.
	roundTrip := func() (string, error) {
		c, err := net.DialTimeout("tcp", sleep.Outbound, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if _, err := io.WriteString(c, "CONNECT external.example.com:9000 HTTP/1.1\r\nHost: external.example.com:9000\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("CONNECT answered %d", resp.StatusCode)
		}
		if _, err := io.WriteString(c, "hello through the tunnel\n"); err != nil {
			return "", err
		}
		return br.ReadString('\n')
	}
	var got string
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got, err = roundTrip(); err == nil {
			break
		}
	}
	if want := "echo: hello through the tunnel\n"; got != want {
		t.Fatalf("TCP to external.example.com:9000: %q (%v), want %q\nsleep proxy:\n%s", got, err, want, sleepProc.Stderr())
	}
	if l := tpLog(); !strings.Contains(l, "CONNECT 127.0.0.1:"+echoPort+" HTTP/1.1") {
		t.Fatalf("tinyproxy saw no CONNECT to the tunnel's target:\n%s", l)
	}
}
