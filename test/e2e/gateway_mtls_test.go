package e2e

import (
	"crypto/tls"
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

// gatewayMTLSConfig: a Gateway server with tls.mode ISTIO_MUTUAL (the
// mesh's mutual TLS, as on an east-west gateway) routing gw.example to the
// web service, and the client side of it: a ServiceEntry for the
// gateway's address with its service account and a DestinationRule that
// sends ISTIO_MUTUAL.
const gatewayMTLSConfig = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: eastwest, namespace: weft-system}
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: https-mesh, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: gw-example, namespace: weft-system}
spec:
  hosts: [gw.example]
  gateways: [weft-system/eastwest]
  http:
  - route:
    - destination: {host: web.default.svc.cluster.local, port: {number: 8080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: gw-example, namespace: weft-system}
spec:
  hosts: [gw.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 15443, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: %d}, serviceAccount: eastwestgateway}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: gw-example, namespace: weft-system}
spec:
  host: gw.example
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
`

// TestGatewayIstioMutual: a gateway server with tls.mode ISTIO_MUTUAL
// terminates the mesh's mutual TLS with the gateway's workload
// certificate. A meshed client sidecar (its certificate from the same CA)
// gets through to the app; a TLS client without a client certificate, and
// plaintext, are refused.
func TestGatewayIstioMutual(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web %s", r.URL.Path)
	}))
	front := harness.FreeAddr(t)
	_, frontPort, _ := net.SplitHostPort(front)
	fp, _ := strconv.Atoi(frontPort)
	dataDir, configDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "gateway.yaml"), []byte(fmt.Sprintf(gatewayMTLSConfig, fp)), 0o644); err != nil {
		t.Fatal(err)
	}
	// PERMISSIVE is the mesh default: the gateway's ISTIO_MUTUAL is what
	// this test is about.
	xds, caAddr := startCAControlPlane(t, dataDir, configDir, "PERMISSIVE")
	startMeshedProxy(t, dataDir, xds, caAddr, "web", "--app-port", strconv.Itoa(appPort), "--service", "web:8080/http")
	client, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client")

	bin := weft.Binary(t)
	tokFile := joinTokenFile(t, dataDir, "weft-system", "eastwestgateway")
	gwReady := filepath.Join(t.TempDir(), "gw.json")
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "15443="+front,
		"--control-plane", xds, "--namespace", "weft-system", "--workload", "eastwestgateway", "--service-account", "eastwestgateway",
		"--labels", "istio=eastwestgateway",
		"--ca-address", caAddr, "--ca-root-cert", filepath.Join(dataDir, "ca", "root-cert.pem"), "--ca-token-file", tokFile,
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", gwReady)
	var gwAddrs struct{ Gateways map[string]string }
	_ = json.Unmarshal([]byte(harness.WaitForFile(t, gwReady, 30*time.Second, gw)), &gwAddrs)

	u, _ := url.Parse("http://" + client.Outbound)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("http://gw.example:15443/east")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if string(b) != "web /east" {
					t.Fatalf("through the gateway: %q", b)
				}
				break
			}
			err = fmt.Errorf("%s %q flags %q", resp.Status, b, resp.Header.Get("X-Weft-Response-Flags"))
		}
		if time.Now().After(deadline) {
			t.Fatalf("client sidecar → ISTIO_MUTUAL gateway never answered: %v\ngateway log:\n%s", err, gw.Stderr())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Without a mesh client certificate the gateway refuses the handshake.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", front, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // probing the refusal
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: gw.example\r\n\r\n")
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
	}
	if err == nil {
		t.Error("a TLS client without a certificate got an answer from the ISTIO_MUTUAL gateway")
	}
	// Plaintext matches no filter chain.
	if code, err := plainGet(front); err == nil {
		t.Errorf("plaintext to the ISTIO_MUTUAL gateway answered %d", code)
	} else if !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Logf("plaintext refused: %v", err)
	}
}
