package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// startCAControlPlane runs a control plane with the CA and the seed's
// PeerAuthentication in mode, and returns its xDS and CA addresses.
func startCAControlPlane(t *testing.T, dataDir, configDir, mode string, extra ...string) (xds, caAddr string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(configDir, "peer-authentication.yaml"), []byte(peerAuthn(mode)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config-dir", configDir, "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms"}, extra...)
	cp := harness.StartControlPlane(t, weft.Binary(t), args...)
	return cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA")
}

// joinTokenFile creates a CA join token for service account sa in
// namespace ns (`weft token create`) and returns the file holding it.
func joinTokenFile(t *testing.T, dataDir, ns, sa string) string {
	t.Helper()
	tok := harness.Run(t, weft.Binary(t), nil, "token", "create", "--data-dir", dataDir, "--namespace", ns, "--service-account", sa)
	if tok.ExitCode != 0 {
		t.Fatalf("token create: %s", tok.Stderr)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return tokFile
}

// startMeshedProxy runs `weft proxy` for workload (also its service
// account) in namespace default with a join token for it, and returns its
// bound addresses.
func startMeshedProxy(t *testing.T, dataDir, xds, caAddr, workload string, extra ...string) (proxyAddrs, *harness.Process) {
	t.Helper()
	tokFile := joinTokenFile(t, dataDir, "default", workload)
	ready := filepath.Join(t.TempDir(), "ready.json")
	args := append([]string{"proxy", "--control-plane", xds, "--namespace", "default", "--workload", workload,
		"--service-account", workload, "--labels", "app=" + workload,
		"--ca-address", caAddr, "--ca-root-cert", filepath.Join(dataDir, "ca", "root-cert.pem"), "--ca-token-file", tokFile,
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "127.0.0.1:0", "--health-address", "", "--status-address", "", "--ready-file", ready}, extra...)
	p := harness.Start(t, weft.Binary(t), nil, args...)
	var a proxyAddrs
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, p)), &a); err != nil {
		t.Fatal(err)
	}
	return a, p
}

// TestServerIdentityPinned: the client sidecar checks the server's SPIFFE
// ID against the service accounts the destination's endpoints registered
// with. A WorkloadEntry claims service account "server" for an address where
// the sidecar holds a certificate for sa "impostor": the client refuses it
// (the handshake fails, the client gets an error status), while the genuine
// "server" sidecar is reached. A proxy whose token proves another service
// account than its --service-account does not start at all.
func TestServerIdentityPinned(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "app") })}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(lis) }()
	t.Cleanup(func() { app.Close() })
	appPort := strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)

	dataDir, configDir := t.TempDir(), t.TempDir()
	xds, caAddr := startCAControlPlane(t, dataDir, configDir, "STRICT")

	// A token for sa impostor with --service-account server: refused at
	// start (exit 2), naming both identities.
	tok := harness.Run(t, weft.Binary(t), nil, "token", "create", "--data-dir", dataDir, "--namespace", "default", "--service-account", "impostor")
	if tok.ExitCode != 0 {
		t.Fatalf("token create: %s", tok.Stderr)
	}
	bad := harness.Run(t, weft.Binary(t), nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", "impostor",
		"--service-account", "server", "--ca-address", caAddr, "--ca-root-cert", filepath.Join(dataDir, "ca", "root-cert.pem"),
		"--ca-token", strings.TrimSpace(tok.Stdout), "--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0",
		"--admin-address", "", "--metrics-address", "", "--health-address", "", "--status-address", "")
	if bad.ExitCode != 2 || !strings.Contains(bad.Stderr, `issued spiffe://cluster.local/ns/default/sa/impostor, but this workload is namespace "default" service account "server"`) {
		t.Fatalf("proxy with a token for another service account: exit %d\n%s", bad.ExitCode, bad.Stderr)
	}

	startMeshedProxy(t, dataDir, xds, caAddr, "server", "--app-port", appPort, "--service", "server:8080/http")
	impostor, impostorProc := startMeshedProxy(t, dataDir, xds, caAddr, "impostor", "--log-level", "debug", "--app-port", appPort)
	_, inPort, err := net.SplitHostPort(impostor.Inbound)
	if err != nil {
		t.Fatal(err)
	}
	// The registry believes the impostor's address serves sa "server".
	entry := `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: fake-server, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: ` + inPort + `}
  serviceAccount: server
  labels: {app: fake-server, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: impostor, namespace: default}
spec:
  hosts: [impostor.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: fake-server}}
`
	if err := os.WriteFile(filepath.Join(configDir, "impostor.yaml"), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	client, clientProc := startMeshedProxy(t, dataDir, xds, caAddr, "client")

	u, _ := url.Parse("http://" + client.Outbound)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(host string) (int, string) {
		resp, err := hc.Get("http://" + host + ":8080/")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s, _ := get("server"); s == 200 {
			break
		}
		if time.Now().After(deadline) {
			s, b := get("server")
			t.Fatalf("genuine server not reachable: %d %s", s, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The impostor's endpoint is known (its registration reached the
	// client: the request is routed, not 404) but its identity is wrong.
	var s int
	var body string
	for i := 0; i < 5 || (s == http.StatusNotFound && time.Now().Before(deadline.Add(10*time.Second))); i++ {
		s, body = get("impostor")
		if s == 200 {
			t.Fatalf("impostor with certificate for sa impostor, registered as sa server, was reached: %d %q", s, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if s != http.StatusServiceUnavailable && s != http.StatusBadGateway {
		t.Fatalf("impostor: got %d %q, want 502/503 from a refused handshake", s, body)
	}
	// The refusal is the client's identity check: the impostor's handshakes
	// were aborted by the client with a bad-certificate alert (the chain
	// itself is valid, only the SPIFFE ID is wrong).
	if !strings.Contains(impostorProc.Stderr(), "tls handshake: remote error: tls: bad certificate") {
		t.Errorf("impostor sidecar saw no handshake refused by the client:\n%s\nclient:\n%s", impostorProc.Stderr(), clientProc.Stdout())
	}
	t.Logf("impostor: %d %s", s, strings.TrimSpace(body))
}
