package kube_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

const credentialGateway = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["web.example.com"]
    tls: {mode: SIMPLE, credentialName: web-cert}
  - port: {number: 9443, name: https-mtls, protocol: HTTPS}
    hosts: ["partner.example.com"]
    tls: {mode: MUTUAL, credentialName: partner-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: ["web.example.com", "partner.example.com"]
  gateways: ["web-gateway"]
  http:
  - directResponse: {status: 200, body: {string: "hello from the gateway"}}
`

// testCA is a CA that signs leaf certificates with chosen serial numbers.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf returns a PEM certificate and key for name with serial, signed by ca.
func (ca *testCA) leaf(t *testing.T, name string, serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// TestGatewayCredentialSecrets runs `weft control-plane --kubeconfig`
// against a real API server and a `weft proxy --gateway`: an HTTPS server
// with credentialName serves the kubernetes.io/tls Secret's certificate,
// and after the Secret is updated the new one, without a restart or any
// other change; a MUTUAL server takes its certificate from a generic
// Secret (cert/key) and verifies clients against the NAME-cacert Secret.
func TestGatewayCredentialSecrets(t *testing.T) {
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
	if out, err := kubectl(ctx, kc, nil, "apply", "-f", filepath.Join(root, "manifests/crds/istio.yaml")); err != nil {
		t.Fatalf("install CRDs: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, kc, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatalf("CRDs: %v\n%s", err, out)
	}

	ca := newTestCA(t)
	web1, webKey1 := ca.leaf(t, "web.example.com", 101, x509.ExtKeyUsageServerAuth)
	partner, partnerKey := ca.leaf(t, "partner.example.com", 201, x509.ExtKeyUsageServerAuth)
	clientCA := newTestCA(t)
	clientCert, clientKey := clientCA.leaf(t, "client", 301, x509.ExtKeyUsageClientAuth)
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "web-cert", Namespace: "default"}, Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{"tls.crt": web1, "tls.key": webKey1}},
		{ObjectMeta: metav1.ObjectMeta{Name: "partner-cert", Namespace: "default"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"cert": partner, "key": partnerKey}},
		{ObjectMeta: metav1.ObjectMeta{Name: "partner-cert-cacert", Namespace: "default"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"cacert": clientCA.pem}},
	}
	for _, s := range secrets {
		if _, err := cs.CoreV1().Secrets("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create secret %s: %v", s.Name, err)
		}
	}
	if out, err := kubectl(ctx, kc, []byte(credentialGateway), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply gateway: %v\n%s", err, out)
	}

	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--kubeconfig", kc, "--data-dir", t.TempDir(), "--monitoring-address", "127.0.0.1:0",
		"--dashboard-address", "", "--debounce", "50ms")
	front, mtlsFront := harness.FreeAddr(t), harness.FreeAddr(t)
	ready := filepath.Join(t.TempDir(), "gw.json")
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "8443="+front, "--gateway-address", "9443="+mtlsFront,
		"--control-plane", cp.XDSAddress, "--namespace", "default", "--workload", "ingressgateway",
		"--labels", "istio=ingressgateway", "--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0",
		"--admin-address", "", "--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	harness.WaitForFile(t, ready, 30*time.Second, gw)

	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	// get makes one request on a fresh connection (a new handshake) and
	// returns the serial number of the certificate the gateway served.
	get := func(addr, host string, certs []tls.Certificate) (int64, error) {
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host, Certificates: certs}}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
		if err != nil {
			return 0, err
		}
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "hello from the gateway" {
			return 0, fmt.Errorf("status %d body %q", resp.StatusCode, b)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
	}
	waitSerial := func(what, addr, host string, certs []tls.Certificate, want int64) {
		t.Helper()
		var got int64
		waitFor(ctx, t, what, func() (bool, error) {
			var err error
			got, err = get(addr, host, certs)
			if err == nil && got != want {
				err = fmt.Errorf("served serial %d, want %d", got, want)
			}
			return err == nil, err
		})
	}
	waitSerial("the Secret's certificate on 8443", front, "web.example.com", nil, 101)

	// Rotate the Secret: the next handshakes get the new certificate.
	web2, webKey2 := ca.leaf(t, "web.example.com", 102, x509.ExtKeyUsageServerAuth)
	s, err := cs.CoreV1().Secrets("default").Get(ctx, "web-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data = map[string][]byte{"tls.crt": web2, "tls.key": webKey2}
	if _, err := cs.CoreV1().Secrets("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSerial("the updated Secret's certificate", front, "web.example.com", nil, 102)

	// MUTUAL: generic Secret's cert, clients verified against NAME-cacert.
	pair, err := tls.X509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	waitSerial("MUTUAL with a client certificate", mtlsFront, "partner.example.com", []tls.Certificate{pair}, 201)
	if _, err := get(mtlsFront, "partner.example.com", nil); err == nil {
		t.Fatal("MUTUAL server accepted a client without a certificate")
	}
	other := newTestCA(t)
	oc, ok := other.leaf(t, "client", 401, x509.ExtKeyUsageClientAuth)
	otherPair, err := tls.X509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	_, err = get(mtlsFront, "partner.example.com", []tls.Certificate{otherPair})
	var netErr interface{ Timeout() bool }
	if err == nil || errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("MUTUAL server with a client certificate from another CA: %v, want a handshake failure", err)
	}
}
