package credentials

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

func pair(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func TestExtract(t *testing.T) {
	t.Parallel()
	c, k := pair(t)
	c2, _ := pair(t)
	ca := []byte("ca")
	tests := []struct {
		name    string
		data    map[string][]byte
		wantCA  []byte
		wantErr string
	}{
		{"tls", map[string][]byte{"tls.crt": c, "tls.key": k}, nil, ""},
		{"tls with ca.crt", map[string][]byte{"tls.crt": c, "tls.key": k, "ca.crt": ca}, ca, ""},
		{"generic", map[string][]byte{"cert": c, "key": k}, nil, ""},
		{"generic with cacert", map[string][]byte{"cert": c, "key": k, "cacert": ca}, ca, ""},
		{"tls without key", map[string][]byte{"tls.crt": c}, nil, "needs both tls.crt and tls.key"},
		{"generic without cert", map[string][]byte{"key": k}, nil, "needs both cert and key"},
		{"key of another certificate", map[string][]byte{"tls.crt": c2, "tls.key": k}, nil, "certificate and key"},
		{"only a CA", map[string][]byte{"cacert": ca}, nil, "no tls.crt/tls.key or cert/key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cr, err := extract(&corev1.Secret{Data: tc.data})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(cr.Cert) != string(c) || string(cr.Key) != string(k) || string(cr.CA) != string(tc.wantCA) {
				t.Fatalf("got cert %d key %d ca %q", len(cr.Cert), len(cr.Key), cr.CA)
			}
		})
	}
}

func TestKeepCredentialData(t *testing.T) {
	t.Parallel()
	s := &corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"cert": []byte("c"), "password": []byte("p")}}
	s.Name, s.Namespace, s.Annotations = "n", "ns", map[string]string{"a": "b"}
	got, err := keepCredentialData(s)
	if err != nil {
		t.Fatal(err)
	}
	o := got.(*corev1.Secret)
	if o.Name != "n" || o.Namespace != "ns" || len(o.Data) != 1 || o.Annotations != nil {
		t.Fatalf("cached secret %+v", o)
	}
	got, _ = keepCredentialData(&corev1.Secret{Data: map[string][]byte{"password": []byte("p")}})
	if len(got.(*corev1.Secret).Data) != 0 {
		t.Fatal("unrelated data kept")
	}
}

func TestLookupNamespaces(t *testing.T) {
	t.Parallel()
	c, k := pair(t)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, ns := range []string{"gw", "certs"} {
		if err := idx.Add(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cert-" + ns, Namespace: ns}, Data: map[string][]byte{"tls.crt": c, "tls.key": k}}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Secrets{log: slog.New(slog.DiscardHandler), lister: listerscorev1.NewSecretLister(idx)}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"cert-gw", true},
		{"kubernetes://cert-gw", true},
		{"kubernetes://gw/cert-gw", true},
		{"kubernetes://certs/cert-certs", false}, // Istio credentialName: the gateway's namespace only
		{"cert-certs", false},
		{"kubernetes-gateway://certs/cert-certs", true}, // Gateway API certificateRef (grant checked by the translator)
		{"kubernetes-gateway://certs/cert-gw", false},
		{"kubernetes-gateway://cert-certs", false},
	} {
		if _, ok := s.Lookup("gw", tc.name); ok != tc.ok {
			t.Errorf("Lookup(gw, %q) = %v, want %v", tc.name, ok, tc.ok)
		}
	}
}
