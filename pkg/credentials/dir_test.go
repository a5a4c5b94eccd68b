package credentials

import (
	"bytes"
	"context"
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

func TestDirLookup(t *testing.T) {
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

	d := NewDir(dir, nil)
	lookup := func(name string) ([]byte, []byte, bool) {
		cr, ok := d.Lookup("weft-system", name)
		return cr.Cert, cr.Key, ok
	}
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

// TestDirWatch: replacing a pair, adding a NAME/ directory and adding a CA
// bundle each notify subscribers and bump Version; lookups see the files.
func TestDirWatch(t *testing.T) {
	t.Parallel()
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
	c1, k1 := selfSignedPair(t, "a.example.com")
	write("a.crt", c1)
	write("a.key", k1)
	d := NewDir(dir, nil)
	d.Debounce = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	notes := make(chan struct{}, 100)
	defer d.Subscribe(func() { notes <- struct{}{} })()
	// Run's watch starts asynchronously: rewrite until one notification.
	waitChange := func(what string, change func()) {
		t.Helper()
		v := d.Version()
		deadline := time.Now().Add(20 * time.Second)
		change()
		for d.Version() == v {
			select {
			case <-notes:
			case <-time.After(500 * time.Millisecond):
				if time.Now().After(deadline) {
					t.Fatalf("%s: no notification", what)
				}
				change()
			}
		}
	}
	c2, k2 := selfSignedPair(t, "a2.example.com")
	waitChange("replaced pair", func() { write("a.crt", c2); write("a.key", k2) })
	if cr, ok := d.Lookup("default", "a"); !ok || !bytes.Equal(cr.Cert, c2) {
		t.Fatal("replaced pair not served")
	}
	c3, k3 := selfSignedPair(t, "b.example.com")
	waitChange("new NAME/ directory", func() { write("b/tls.crt", c3); write("b/tls.key", k3) })
	if cr, ok := d.Lookup("default", "b"); !ok || !bytes.Equal(cr.Cert, c3) || cr.CA != nil {
		t.Fatal("new directory credential not served, or has a CA")
	}
	// A file inside the new directory is watched too.
	waitChange("CA in NAME/", func() { write("b/ca.crt", c1) })
	if cr, _ := d.Lookup("default", "b"); !bytes.Equal(cr.CA, c1) {
		t.Fatal("b/ca.crt not returned as the CA")
	}
	waitChange("NAME-cacert", func() { write("a-cacert.crt", c3) })
	if cr, _ := d.Lookup("default", "a"); !bytes.Equal(cr.CA, c3) {
		t.Fatal("a-cacert.crt not returned as a's CA")
	}
}

// TestDirMissing: a directory that does not exist is not an error (the
// control plane starts; lookups find nothing).
func TestDirMissing(t *testing.T) {
	t.Parallel()
	d := NewDir(filepath.Join(t.TempDir(), "absent"), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	if _, ok := d.Lookup("default", "x"); ok {
		t.Fatal("found a credential in a missing directory")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run over a missing directory: %v", err)
	}
}
