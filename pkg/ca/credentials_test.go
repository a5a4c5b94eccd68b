package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func selfSignedPair(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func TestDirCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	flatCert, flatKey := selfSignedPair(t, "a.example.com")
	write("flat.crt", flatCert)
	write("flat.key", flatKey)
	secCert, secKey := selfSignedPair(t, "b.example.com")
	write("secret/tls.crt", secCert)
	write("secret/tls.key", secKey)
	write("mismatch.crt", flatCert)
	write("mismatch.key", secKey)
	write("nokey.crt", flatCert)
	write("outside.crt", flatCert) // must not be reachable as ../outside
	write("outside.key", flatKey)

	lookup := DirCredentials(dir, nil)
	tests := []struct {
		name      string
		wantOK    bool
		cert, key []byte
	}{
		{"flat", true, flatCert, flatKey},
		{"secret", true, secCert, secKey},
		{"weft-system/secret", true, secCert, secKey},
		{"kubernetes://flat", true, flatCert, flatKey},
		{"mismatch", false, nil, nil},
		{"nokey", false, nil, nil},
		{"missing", false, nil, nil},
		{"", false, nil, nil},
		{"..", false, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, key, ok := lookup(tc.name)
			if ok != tc.wantOK || !bytes.Equal(cert, tc.cert) || !bytes.Equal(key, tc.key) {
				t.Fatalf("lookup(%q) = %d bytes, %d bytes, %v; want ok=%v", tc.name, len(cert), len(key), ok, tc.wantOK)
			}
		})
	}
	// A replaced pair is served on the next lookup.
	newCert, newKey := selfSignedPair(t, "a2.example.com")
	write("flat.crt", newCert)
	write("flat.key", newKey)
	if cert, _, ok := lookup("flat"); !ok || !bytes.Equal(cert, newCert) {
		t.Fatal("replaced credential not picked up")
	}
}
