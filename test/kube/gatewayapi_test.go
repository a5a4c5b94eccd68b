package kube_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

const kubeGatewayAPI = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: web.example.com
    tls: {mode: Terminate, certificateRefs: [{kind: Secret, name: web-cert}]}
  - name: shared
    port: 9443
    protocol: HTTPS
    hostname: shared.example.com
    tls: {certificateRefs: [{name: shared-cert, namespace: certs}]}
  - name: private
    port: 10443
    protocol: HTTPS
    hostname: private.example.com
    tls: {certificateRefs: [{name: private-cert, namespace: certs}]}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: default-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret, name: shared-cert}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /}}]
`

// TestGatewayAPIKube: in --kubeconfig mode the control plane reads a Gateway
// API Gateway and HTTPRoute from their CRDs (manifests/crds/gateway-api.yaml)
// next to the Istio ones; `weft proxy --gateway` with the gateway-name label
// serves the HTTPS listener with the kubernetes.io/tls Secret its
// certificateRef names, redirects /old and answers 404 for a rule without
// backendRefs, as the Gateway API specifies. Listeners whose
// certificateRefs name Secrets in namespace certs are served only with a
// ReferenceGrant there: one covers shared-cert from the start, private-cert
// is served once a second grant is applied.
func TestGatewayAPIKube(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, kube-apiserver and weft processes")
	}
	cl := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := cl.WriteKubeconfig(t)
	cs := cl.Clientset(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"istio.yaml", "gateway-api.yaml"} {
		if out, err := kubectl(ctx, kc, nil, "apply", "-f", filepath.Join(root, "manifests/crds", f)); err != nil {
			t.Fatalf("install CRDs %s: %v\n%s", f, err, out)
		}
	}
	if out, err := kubectl(ctx, kc, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatalf("CRDs: %v\n%s", err, out)
	}
	ca := newTestCA(t)
	cert, key := ca.leaf(t, "web.example.com", 555, x509.ExtKeyUsageServerAuth)
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-cert", Namespace: "default"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": cert, "tls.key": key}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "certs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, serial := range map[string]int64{"shared-cert": 556, "private-cert": 557} {
		host := strings.TrimSuffix(name, "-cert") + ".example.com"
		c, k := ca.leaf(t, host, serial, x509.ExtKeyUsageServerAuth)
		if _, err := cs.CoreV1().Secrets("certs").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "certs"},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{"tls.crt": c, "tls.key": k}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := kubectl(ctx, kc, []byte(kubeGatewayAPI), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}

	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--kubeconfig", kc, "--data-dir", t.TempDir(), "--monitoring-address", "127.0.0.1:0",
		"--dashboard-address", "", "--debounce", "50ms")
	front := harness.FreeAddr(t)
	ready := filepath.Join(t.TempDir(), "gw.json")
	frontShared, frontPrivate := harness.FreeAddr(t), harness.FreeAddr(t)
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "8443="+front,
		"--gateway-address", "9443="+frontShared, "--gateway-address", "10443="+frontPrivate,
		"--control-plane", cp.XDSAddress, "--namespace", "default", "--workload", "web-istio",
		"--labels", "gateway.networking.k8s.io/gateway-name=web", "--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0",
		"--admin-address", "", "--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	harness.WaitForFile(t, ready, 30*time.Second, gw)

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	hc := &http.Client{Timeout: 5 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "web.example.com"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (int, string, int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+front+path, nil)
		if err != nil {
			return 0, "", 0, err
		}
		req.Host = "web.example.com"
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Location"), resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
	}
	waitFor(ctx, t, "the redirect on the HTTPS listener", func() (bool, error) {
		code, loc, serial, err := get("/old")
		if err == nil && (code != http.StatusMovedPermanently || loc != "https://web.example.com/new" || serial != 555) {
			err = fmt.Errorf("status %d Location %q serial %d", code, loc, serial)
		}
		return err == nil, err
	})
	if code, _, _, err := get("/anything"); err != nil || code != http.StatusNotFound {
		t.Errorf("rule without backendRefs: %d %v, want 404", code, err)
	}

	// Cross-namespace certificateRefs: the granted one is served with its
	// Secret's certificate, the other listener is not served until a
	// ReferenceGrant covers it too.
	serialAt := func(addr, host string) (int64, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: host})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
	}
	waitFor(ctx, t, "the granted cross-namespace certificate", func() (bool, error) {
		serial, err := serialAt(frontShared, "shared.example.com")
		if err == nil && serial != 556 {
			err = fmt.Errorf("serial %d", serial)
		}
		return err == nil, err
	})
	if serial, err := serialAt(frontPrivate, "private.example.com"); err == nil {
		t.Fatalf("listener with an ungranted certificateRef served serial %d", serial)
	}
	grant := `apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: private, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret, name: private-cert}]
`
	if out, err := kubectl(ctx, kc, []byte(grant), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	waitFor(ctx, t, "the certificate granted later", func() (bool, error) {
		serial, err := serialAt(frontPrivate, "private.example.com")
		if err == nil && serial != 557 {
			err = fmt.Errorf("serial %d", serial)
		}
		return err == nil, err
	})
}
