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
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// testPKI is a throwaway CA that issues leaf certificates.
type testPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testPKI{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for name (a DNS name for
// servers, the subject CN for clients).
func (p *testPKI) issue(t *testing.T, name string, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// serveTLS runs an HTTPS server on 127.0.0.1 with certPEM/keyPEM; clientCAs,
// when set, requires a client certificate from it. It answers with the
// TLS server name it saw and the client certificate's CN.
func serveTLS(t *testing.T, certPEM, keyPEM []byte, clientCAs *x509.CertPool) int {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := "-"
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "tls sni=%s client=%s host=%s path=%s", r.TLS.ServerName, cn, r.Host, r.URL.Path)
	}), ErrorLog: nil}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().(*net.TCPAddr).Port
}

// TestEgressTLSOrigination reproduces Istio's "Egress TLS Origination"
// task: the application sends plain HTTP to an external host on port 80,
// and a DestinationRule makes its sidecar originate TLS to the host's 443
// (here a local HTTPS server): SIMPLE with caCertificates, MUTUAL with a
// client certificate from a credentialName (the control plane's
// --credentials-dir), and a server certificate the trusted CA did not sign
// fails (503) instead of going out unverified or in plaintext.
func TestEgressTLSOrigination(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	serverCA, clientCA, otherCA := newTestPKI(t, "server-ca"), newTestPKI(t, "client-ca"), newTestPKI(t, "other-ca")
	crt, key := serverCA.issue(t, "secure.example.com", false)
	securePort := serveTLS(t, crt, key, nil)
	crt, key = serverCA.issue(t, "mtls.example.com", false)
	clientPool := x509.NewCertPool()
	clientPool.AddCert(clientCA.cert)
	mtlsPort := serveTLS(t, crt, key, clientPool)
	crt, key = otherCA.issue(t, "rogue.example.com", false)
	roguePort := serveTLS(t, crt, key, nil)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(caFile, serverCA.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	credDir := t.TempDir()
	ccrt, ckey := clientCA.issue(t, "sleep-client", true)
	for name, b := range map[string][]byte{"tls.crt": ccrt, "tls.key": ckey, "ca.crt": serverCA.pem} {
		if err := os.MkdirAll(filepath.Join(credDir, "client-credential"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(credDir, "client-credential", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var cfg strings.Builder
	for _, s := range []struct {
		host string
		port int
		tls  string
	}{
		{"secure.example.com", securePort, "{mode: SIMPLE, caCertificates: " + caFile + "}"},
		{"mtls.example.com", mtlsPort, "{mode: MUTUAL, credentialName: client-credential}"},
		{"rogue.example.com", roguePort, "{mode: SIMPLE, caCertificates: " + caFile + "}"},
	} {
		name := strings.Split(s.host, ".")[0]
		fmt.Fprintf(&cfg, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: default}
spec:
  hosts: [%[2]s]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http-port, protocol: HTTP, targetPort: %[3]d}
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %[1]s, namespace: default}
spec:
  host: %[2]s
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      tls: %[4]s
---
`, name, s.host, s.port, s.tls)
	}
	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "egress.yaml"), []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir, "--credentials-dir", credDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	sleep, _ := startAppSidecar(t, bin, xds, "sleep", serveApp(t, http.NotFoundHandler()))

	get := func(host string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+sleep.Outbound+"/politics", nil)
		req.Host = host
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for host, want := range map[string]string{
		"secure.example.com": "tls sni=secure.example.com client=- host=secure.example.com path=/politics",
		"mtls.example.com":   "tls sni=mtls.example.com client=sleep-client host=mtls.example.com path=/politics",
	} {
		var code int
		var body string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if code, body = get(host); code == 200 {
				break
			}
		}
		if code != 200 || body != want {
			t.Errorf("http://%s/politics through the sidecar: %d %q, want 200 %q", host, code, body, want)
		}
	}
	if code, body := get("rogue.example.com"); code != http.StatusServiceUnavailable || !strings.Contains(body, "upstream connect error") {
		t.Errorf("server certificate from an untrusted CA: %d %q, want 503 upstream connect error", code, body)
	}
}
