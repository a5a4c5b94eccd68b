package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

const gatewayAPITLSConfig = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - name: tls
    port: 8443
    protocol: TLS
    hostname: "*.example.com"
    tls: {mode: Passthrough}
  - {name: tcp, port: 9000, protocol: TCP}
  - name: db
    port: 5432
    protocol: TLS
    tls: {mode: Terminate, certificateRefs: [{name: db-cert}]}
  - name: term
    port: 6443
    protocol: TLS
    hostname: "*.term.example.com"
    tls: {mode: Terminate, certificateRefs: [{name: term-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: term-a, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: term}]
  hostnames: [a.term.example.com]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: term-b, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: term}]
  hostnames: [b.term.example.com]
  rules: [{backendRefs: [{name: echo-v2, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: alpha, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [alpha.example.com]
  rules: [{backendRefs: [{name: alpha, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: beta, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [beta.example.com]
  rules: [{backendRefs: [{name: beta, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules:
  - backendRefs:
    - {name: echo, port: 9000, weight: 80}
    - {name: echo-v2, port: 9000, weight: 20}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: db}]
  rules: [{backendRefs: [{name: echo-v2, port: 9000}]}]
`

// TestGatewayAPITLS runs Gateway API TLS and TCP listeners through the
// real pieces: `weft control-plane` reading a Gateway, TLSRoutes and
// TCPRoutes from its config directory, `weft proxy --gateway` selected by
// the gateway.networking.k8s.io/gateway-name label, and sidecars in front
// of backends. On the TLS Passthrough listener two SNI names reach two
// backends that terminate TLS themselves (a real TLS client checks which
// certificate it got, so the gateway did not decrypt); an SNI name no
// route claims gets no backend. The TCP listener's TCPRoute splits
// connections 80/20 between two echo backends. The TLS Terminate
// listener decrypts with its certificateRef (from --credentials-dir) and
// sends the bytes to its TCPRoute's backend; another, for
// *.term.example.com, sends them by SNI to its TLSRoutes' backends.
func TestGatewayAPITLS(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	pki := newTestPKI(t, "edge-ca")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.pem)

	// Backends terminating TLS themselves: each answers its name.
	tlsBackend := func(name string) int {
		certPEM, keyPEM := pki.issue(t, name+".example.com", false)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lis.Close() })
		serveLines(t, lis, name)
		return lis.Addr().(*net.TCPAddr).Port
	}
	// Plain TCP echo backends: each prefixes the echoed line with its name.
	tcpBackend := func(name string) int {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lis.Close() })
		serveLines(t, lis, name)
		return lis.Addr().(*net.TCPAddr).Port
	}

	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "gateway.yaml"), []byte(gatewayAPITLSConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	// The Terminate listener's certificateRef, served from --credentials-dir.
	credDir := t.TempDir()
	for cred, host := range map[string]string{"db-cert": "db.example.com", "term-cert": "*.term.example.com"} {
		certPEM, keyPEM := pki.issue(t, host, false)
		if err := os.MkdirAll(filepath.Join(credDir, cred), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
			if err := os.WriteFile(filepath.Join(credDir, cred, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir, "--credentials-dir", credDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")

	sidecar := func(name, service string, appPort int) {
		ready := filepath.Join(t.TempDir(), name+".json")
		p := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", name+"-v1",
			"--labels", "app="+name, "--app-port", strconv.Itoa(appPort), "--service", service,
			"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
			"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
		harness.WaitForFile(t, ready, 30*time.Second, p)
	}
	sidecar("alpha", "alpha:8443/tls", tlsBackend("alpha"))
	sidecar("beta", "beta:8443/tls", tlsBackend("beta"))
	sidecar("echo", "echo:9000/tcp", tcpBackend("echo"))
	sidecar("echo-v2", "echo-v2:9000/tcp", tcpBackend("echo-v2"))

	frontTLS, frontTCP, frontDB, frontTerm := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	gwReady := filepath.Join(t.TempDir(), "gw.json")
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "8443="+frontTLS, "--gateway-address", "9000="+frontTCP,
		"--gateway-address", "5432="+frontDB, "--gateway-address", "6443="+frontTerm,
		"--control-plane", xds, "--namespace", "default", "--workload", "edge-istio",
		"--labels", "gateway.networking.k8s.io/gateway-name=edge",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", gwReady)
	harness.WaitForFile(t, gwReady, 30*time.Second, gw)

	eventually := func(what string, f func() error) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := f()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v\ngateway log:\n%s", what, err, gw.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// TLS Passthrough: the SNI name picks the backend, whose own
	// certificate the client verifies.
	passthrough := func(sni string) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", frontTLS, &tls.Config{ServerName: sni, RootCAs: pool})
		if err != nil {
			return "", err
		}
		defer c.Close()
		if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != sni {
			return "", fmt.Errorf("SNI %s: certificate for %s", sni, got)
		}
		return lineExchange(c)
	}
	for _, name := range []string{"alpha", "beta"} {
		sni := name + ".example.com"
		eventually("TLS passthrough to "+sni, func() error {
			got, err := passthrough(sni)
			if err == nil && got != name+": hello" {
				err = fmt.Errorf("answered %q", got)
			}
			return err
		})
	}
	for i := 0; i < 5; i++ {
		for _, name := range []string{"alpha", "beta"} {
			if got, err := passthrough(name + ".example.com"); err != nil || got != name+": hello" {
				t.Fatalf("SNI %s.example.com: %q %v", name, got, err)
			}
		}
	}
	// An SNI name within the listener's hostname that no TLSRoute claims:
	// no backend, the handshake fails.
	if got, err := passthrough("gamma.example.com"); err == nil {
		t.Errorf("SNI gamma.example.com reached %q, want no backend", got)
	}

	// TCP: connections split 80/20 between echo and echo-v2.
	tcpOnce := func() (string, error) {
		c, err := net.DialTimeout("tcp", frontTCP, 3*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return lineExchange(c)
	}
	eventually("TCP route", func() error { _, err := tcpOnce(); return err })
	const n = 200
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		got, err := tcpOnce()
		if err != nil {
			t.Fatalf("TCP connection %d: %v", i, err)
		}
		name, _, _ := strings.Cut(got, ":")
		counts[name]++
	}
	t.Logf("TCPRoute 80/20 over %d connections: %v", n, counts)
	// Binomial(200, 0.2): mean 40, sd 5.7; ±4 sd.
	if counts["echo"]+counts["echo-v2"] != n || counts["echo-v2"] < 17 || counts["echo-v2"] > 63 {
		t.Errorf("TCPRoute split %v over %d connections, want about 160/40", counts, n)
	}

	// TLS Terminate: the gateway presents the listener's certificate and
	// forwards the plaintext: on db to the TCPRoute's echo-v2, on term by
	// SNI to the TLSRoutes' backends.
	terminated := func(addr, sni, cn, want string) func() error {
		return func() error {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{ServerName: sni, RootCAs: pool})
			if err != nil {
				return err
			}
			defer c.Close()
			if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != cn {
				return fmt.Errorf("certificate for %s", got)
			}
			got, err := lineExchange(c)
			if err == nil && got != want {
				err = fmt.Errorf("answered %q", got)
			}
			return err
		}
	}
	eventually("TLS terminate to the TCPRoute", terminated(frontDB, "db.example.com", "db.example.com", "echo-v2: hello"))
	eventually("TLS terminate to TLSRoute a", terminated(frontTerm, "a.term.example.com", "*.term.example.com", "echo: hello"))
	eventually("TLS terminate to TLSRoute b", terminated(frontTerm, "b.term.example.com", "*.term.example.com", "echo-v2: hello"))
	for i := 0; i < 5; i++ {
		if err := terminated(frontTerm, "a.term.example.com", "*.term.example.com", "echo: hello")(); err != nil {
			t.Fatalf("TLSRoute a (Terminate): %v", err)
		}
		if err := terminated(frontTerm, "b.term.example.com", "*.term.example.com", "echo-v2: hello")(); err != nil {
			t.Fatalf("TLSRoute b (Terminate): %v", err)
		}
	}
}

// serveLines answers each connection's lines with "NAME: LINE" until the
// listener closes (when the test ends).
func serveLines(t *testing.T, lis net.Listener, name string) {
	echotest.Serve(t, lis, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, name+": "+line); err != nil {
				return
			}
		}
	})
}

// lineExchange sends "hello" and returns the answer line without its
// newline.
func lineExchange(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}
