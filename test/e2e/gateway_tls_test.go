package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

const gatewayTLSConfig = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: ["web.example.com"]
  gateways: ["web-gateway"]
  http:
  - route:
    - destination: {host: web, port: {number: 8080}}
`

// TestGatewayCredentialName: an HTTPS Gateway server with a credentialName
// is served with the certificate from the control plane's
// --credentials-dir (NAME/tls.crt, NAME/tls.key): a client that trusts only
// that certificate completes the handshake for web.example.com and reaches
// the app behind the gateway.
func TestGatewayCredentialName(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "web app %s", r.URL.Path)
	})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(lis) }()
	t.Cleanup(func() { app.Close() })

	// The gateway's server certificate, as a kubernetes.io/tls-style pair.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "web.example.com"},
		DNSNames: []string{"web.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kd, _ := x509.MarshalECPrivateKey(key)
	credDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(credDir, "web-cert"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(credDir, "web-cert", "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(credDir, "web-cert", "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}

	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "gateway.yaml"), []byte(gatewayTLSConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--credentials-dir", credDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	m := regexp.MustCompile(`xDS server listening.*?address=([0-9.]+:[0-9]+)`).FindStringSubmatch(cp.Stderr())
	if m == nil {
		t.Fatalf("control plane log names no xDS address:\n%s", cp.Stderr())
	}
	xds := m[1]

	bin := weft.Binary(t)
	ready := filepath.Join(t.TempDir(), "web.json")
	web := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", "web-v1",
		"--labels", "app=web", "--app-port", strconv.Itoa(lis.Addr().(*net.TCPAddr).Port), "--service", "web:8080/http",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	harness.WaitForFile(t, ready, 30*time.Second, web)

	front := harness.FreeAddr(t)
	gwReady := filepath.Join(t.TempDir(), "gw.json")
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "8443="+front,
		"--control-plane", xds, "--namespace", "weft-system", "--workload", "ingressgateway",
		"--labels", "istio=ingressgateway,app=istio-ingressgateway",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", gwReady)
	harness.WaitForFile(t, gwReady, 30*time.Second, gw)

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "web.example.com"}}}
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for {
		req, _ := http.NewRequest(http.MethodGet, "https://"+front+"/hello", nil)
		req.Host = "web.example.com"
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == "web app /hello" {
				if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 42 {
					t.Fatalf("gateway served certificate serial %d, want the credential's 42", got)
				}
				break
			}
			lastErr = fmt.Errorf("status %d body %q", resp.StatusCode, b)
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS through the gateway: %v\ngateway log:\n%s", lastErr, gw.Stderr())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Replace the files: the control plane watches the directory and
	// pushes, so new handshakes get serial 43 with no other change.
	tmpl.SerialNumber = big.NewInt(43)
	der2, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert2, _ := x509.ParseCertificate(der2)
	pool.AddCert(cert2)
	if err := os.WriteFile(filepath.Join(credDir, "web-cert", "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der2}), 0o600); err != nil {
		t.Fatal(err)
	}
	hc.Transport.(*http.Transport).DisableKeepAlives = true
	hc.Transport.(*http.Transport).CloseIdleConnections()
	deadline = time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "https://"+front+"/hello", nil)
		req.Host = "web.example.com"
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got == 43 {
				break
			}
			lastErr = fmt.Errorf("still serial %d", resp.TLS.PeerCertificates[0].SerialNumber.Int64())
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("replaced credential file not served: %v\ncontrol plane log:\n%s", lastErr, cp.Stderr())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
