package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSPIFFEID(t *testing.T) {
	tests := []struct {
		name    string
		td      string
		id      Identity
		want    string
		wantErr string
	}{
		{name: "default", td: "cluster.local", id: Identity{"default", "bookinfo-productpage"}, want: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"},
		{name: "dotted sa", td: "example.org", id: Identity{"prod-1", "api.v2"}, want: "spiffe://example.org/ns/prod-1/sa/api.v2"},
		{name: "empty namespace", td: "cluster.local", id: Identity{"", "sa"}, wantErr: "namespace"},
		{name: "empty sa", td: "cluster.local", id: Identity{"ns", ""}, wantErr: "service account"},
		{name: "slash in sa", td: "cluster.local", id: Identity{"ns", "a/b"}, wantErr: "service account"},
		{name: "upper case ns", td: "cluster.local", id: Identity{"Default", "sa"}, wantErr: "namespace"},
		{name: "dot in ns", td: "cluster.local", id: Identity{"a.b", "sa"}, wantErr: "namespace"},
		{name: "percent in sa", td: "cluster.local", id: Identity{"ns", "a%20b"}, wantErr: "service account"},
		{name: "leading dash", td: "cluster.local", id: Identity{"-ns", "sa"}, wantErr: "namespace"},
		{name: "long ns", td: "cluster.local", id: Identity{strings.Repeat("a", 64), "sa"}, wantErr: "namespace"},
		{name: "bad trust domain", td: "Cluster Local", id: Identity{"ns", "sa"}, wantErr: "trust domain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SPIFFEID(tc.td, tc.id)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("SPIFFEID() err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("SPIFFEID(): %v", err)
			}
			if got.String() != tc.want {
				t.Fatalf("SPIFFEID() = %s, want %s", got, tc.want)
			}
			td, back, err := ParseSPIFFEID(got.String())
			if err != nil || td != tc.td || back != tc.id {
				t.Fatalf("ParseSPIFFEID(%s) = %q %v %v", got, td, back, err)
			}
		})
	}
}

func TestParseSPIFFEIDErrors(t *testing.T) {
	for _, s := range []string{"", "http://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a", "spiffe://cluster.local/ns/a/sa/b/c", "spiffe://cluster.local/x/a/sa/b", "spiffe://cluster.local/ns/A/sa/b"} {
		if _, _, err := ParseSPIFFEID(s); !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("ParseSPIFFEID(%q) err = %v, want ErrInvalidIdentity", s, err)
		}
	}
}

// csrFor makes a CSR that asks for unrelated names, which the CA must ignore.
func csrFor(t *testing.T, claim string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(claim)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "evil"},
		DNSNames: []string{"evil.example.com"},
		URIs:     []*url.URL{u},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func parseChain(t *testing.T, chain []string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range chain {
		c, err := parseOneCert([]byte(p))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func verifyLeaf(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	return err
}

func TestSignSelfSigned(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := c.Sign(csrFor(t, "spiffe://cluster.local/ns/kube-system/sa/admin"), Identity{"shop", "cart"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs := parseChain(t, chainPEM)
	if len(certs) != 2 {
		t.Fatalf("chain has %d certs, want leaf+root", len(certs))
	}
	if !certs[1].Equal(c.Roots()[0]) {
		t.Fatalf("last cert of chain is not the root")
	}
	leaf := certs[0]
	if err := verifyLeaf(certs, c.RootPool(), time.Now()); err != nil {
		t.Fatalf("leaf does not verify: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("URIs = %v", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.Subject.CommonName != "" {
		t.Fatalf("leaf carries CSR names: dns=%v cn=%q", leaf.DNSNames, leaf.Subject.CommonName)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Fatalf("KeyUsage = %v", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.IsCA {
		t.Fatalf("ExtKeyUsage = %v IsCA=%v", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if !leaf.NotBefore.Before(time.Now().Add(-30*time.Second)) || leaf.NotAfter.After(time.Now().Add(time.Hour+time.Second)) {
		t.Fatalf("validity %s..%s", leaf.NotBefore, leaf.NotAfter)
	}

	// Key file is private; a restart reuses the same root.
	st, err := os.Stat(filepath.Join(dir, "ca", "root-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("root key mode: %v %v", st, err)
	}
	c2, err := New(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Roots()[0].Equal(c.Roots()[0]) {
		t.Fatal("restart generated a new root instead of reusing it")
	}
	if err := verifyLeaf(certs, c2.RootPool(), time.Now()); err != nil {
		t.Fatalf("leaf does not verify after restart: %v", err)
	}
}

func TestSignTTLAndErrors(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := New(Options{DataDir: t.TempDir(), MaxTTL: 48 * time.Hour, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		csr     []byte
		id      Identity
		ttl     time.Duration
		want    time.Duration
		wantErr error
	}{
		{name: "default ttl", csr: csrFor(t, "spiffe://x/y"), id: Identity{"a", "b"}, want: 24 * time.Hour},
		{name: "asked ttl", csr: csrFor(t, "spiffe://x/y"), id: Identity{"a", "b"}, ttl: time.Hour, want: time.Hour},
		{name: "capped ttl", csr: csrFor(t, "spiffe://x/y"), id: Identity{"a", "b"}, ttl: 1000 * time.Hour, want: 48 * time.Hour},
		{name: "not pem", csr: []byte("hello"), id: Identity{"a", "b"}, wantErr: ErrBadCSR},
		{name: "bad signature", csr: tamper(t, csrFor(t, "spiffe://x/y")), id: Identity{"a", "b"}, wantErr: ErrBadCSR},
		{name: "bad identity", csr: csrFor(t, "spiffe://x/y"), id: Identity{"a", "B!"}, wantErr: ErrInvalidIdentity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := c.Sign(tc.csr, tc.id, tc.ttl)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf := parseChain(t, chain)[0]
			if got := leaf.NotAfter.Sub(now); got != tc.want {
				t.Fatalf("lifetime %s, want %s", got, tc.want)
			}
		})
	}
}

// tamper flips a byte of the CSR signature.
func tamper(t *testing.T, csrPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	der := append([]byte(nil), b.Bytes...)
	der[len(der)-3] ^= 0xff
	return pem.EncodeToMemory(&pem.Block{Type: b.Type, Bytes: der})
}

type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func mkCA(t *testing.T, cn string, parent *testCert, notBefore, notAfter time.Time) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCert{cert: c, key: key}
}

func writeCACerts(t *testing.T, inter, root *testCert, chain ...*testCert) string {
	t.Helper()
	dir := t.TempDir()
	kd, _ := x509.MarshalECPrivateKey(inter.key)
	var chainPEM []byte
	for _, c := range chain {
		chainPEM = append(chainPEM, encodeCerts([]*x509.Certificate{c.cert})...)
	}
	files := map[string][]byte{
		"ca-cert.pem":    encodeCerts([]*x509.Certificate{inter.cert}),
		"ca-key.pem":     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
		"root-cert.pem":  encodeCerts([]*x509.Certificate{root.cert}),
		"cert-chain.pem": chainPEM,
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPluginCA(t *testing.T) {
	now := time.Now()
	root := mkCA(t, "root", nil, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	mid := mkCA(t, "mid", root, now.Add(-time.Hour), now.Add(300*24*time.Hour))
	inter := mkCA(t, "cluster-1", mid, now.Add(-time.Hour), now.Add(200*24*time.Hour))
	otherRoot := mkCA(t, "other", nil, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	expiredRoot := mkCA(t, "old", nil, now.Add(-48*time.Hour), now.Add(-time.Hour))
	interOfExpired := mkCA(t, "cluster-x", expiredRoot, now.Add(-47*time.Hour), now.Add(24*time.Hour))

	t.Run("chain works", func(t *testing.T) {
		c, err := New(Options{CACertsDir: writeCACerts(t, inter, root, inter, mid, root), TrustDomain: "corp.example"})
		if err != nil {
			t.Fatal(err)
		}
		chainPEM, err := c.Sign(csrFor(t, "spiffe://x/y"), Identity{"ns", "sa"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		certs := parseChain(t, chainPEM)
		if len(certs) != 4 || !certs[1].Equal(inter.cert) || !certs[2].Equal(mid.cert) || !certs[3].Equal(root.cert) {
			t.Fatalf("chain order wrong: %d certs", len(certs))
		}
		pool := x509.NewCertPool()
		pool.AddCert(root.cert)
		if err := verifyLeaf(certs, pool, now); err != nil {
			t.Fatal(err)
		}
		if got := certs[0].URIs[0].String(); got != "spiffe://corp.example/ns/ns/sa/sa" {
			t.Fatalf("URI %s", got)
		}
		if err := c.Rotate(); !errors.Is(err, ErrRotateUnsupported) {
			t.Fatalf("Rotate on plug-in CA: %v", err)
		}
	})
	bad := []struct {
		name    string
		dir     func() string
		wantErr string
	}{
		{"expired root", func() string { return writeCACerts(t, interOfExpired, expiredRoot, interOfExpired, expiredRoot) }, "expired"},
		{"wrong root", func() string { return writeCACerts(t, inter, otherRoot, inter, mid, otherRoot) }, "does not chain"},
		{"missing intermediate", func() string { return writeCACerts(t, inter, root, inter, root) }, "does not chain"},
		{"key mismatch", func() string {
			d := writeCACerts(t, inter, root, inter, mid, root)
			kd, _ := x509.MarshalECPrivateKey(mid.key)
			_ = os.WriteFile(filepath.Join(d, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
			return d
		}, "does not match"},
		{"missing file", func() string {
			d := writeCACerts(t, inter, root, inter, mid, root)
			_ = os.Remove(filepath.Join(d, "cert-chain.pem"))
			return d
		}, "cert-chain.pem"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{CACertsDir: tc.dir()})
			if !errors.Is(err, ErrBadCACerts) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrBadCACerts containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRootRotation(t *testing.T) {
	dir := t.TempDir()
	c, err := New(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := c.Roots()[0]
	before := parseChain(t, must(c.Sign(csrFor(t, "spiffe://x/y"), Identity{"a", "b"}, time.Hour)))
	if err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	after := parseChain(t, must(c.Sign(csrFor(t, "spiffe://x/y"), Identity{"a", "b"}, time.Hour)))
	roots := c.Roots()
	if len(roots) != 2 || !roots[0].Equal(oldRoot) || roots[1].Equal(oldRoot) {
		t.Fatalf("roots after rotation: %d", len(roots))
	}
	if !after[1].Equal(roots[1]) {
		t.Fatal("new leaf is not signed by the newest root")
	}
	for name, certs := range map[string][]*x509.Certificate{"old": before, "new": after} {
		if err := verifyLeaf(certs[:1], c.RootPool(), time.Now()); err != nil {
			t.Fatalf("%s leaf during overlap: %v", name, err)
		}
	}
	onlyOld := x509.NewCertPool()
	onlyOld.AddCert(oldRoot)
	if verifyLeaf(after[:1], onlyOld, time.Now()) == nil {
		t.Fatal("new leaf verified against the old root alone")
	}
	// The overlap survives a restart.
	c2, err := New(Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.Roots()) != 2 || !c2.Roots()[1].Equal(roots[1]) || !strings.Contains(string(c2.RootsPEM()), "CERTIFICATE") {
		t.Fatalf("restart lost the trust bundle: %d roots", len(c2.Roots()))
	}
	// Ending the overlap makes old leaves fail.
	if err := c2.DropRoot(oldRoot); err != nil {
		t.Fatal(err)
	}
	if verifyLeaf(before[:1], c2.RootPool(), time.Now()) == nil {
		t.Fatal("old leaf still verifies after DropRoot")
	}
	if err := c2.DropRoot(roots[1]); err == nil {
		t.Fatal("dropping the signing root succeeded")
	}
}

func must(v []string, err error) []string {
	if err != nil {
		panic(err)
	}
	return v
}

func TestServingCertificate(t *testing.T) {
	c, err := New(Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.ServingCertificate([]string{"istiod.weft-system.svc", "localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"istiod.weft-system.svc", "localhost", "127.0.0.1"} {
		if _, err := tc.Leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: c.RootPool()}); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
	if _, err := tc.Leaf.Verify(x509.VerifyOptions{DNSName: "evil.example", Roots: c.RootPool()}); err == nil {
		t.Error("serving cert valid for an unrelated host")
	}
	if _, err := c.ServingCertificate(nil); err == nil {
		t.Error("no hosts accepted")
	}
}

func TestTokenStore(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := NewTokenStore(dir, clock)
	if err != nil {
		t.Fatal(err)
	}
	tokA, err := s.Create("shop", "cart", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tokA, TokenPrefix) || len(tokA) != len(TokenPrefix)+43 {
		t.Fatalf("token %q has the wrong shape", tokA)
	}
	if _, err := s.Create("shop", "Bad_SA", time.Hour); !errors.Is(err, ErrInvalidIdentity) {
		t.Fatalf("bad sa: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "ca", TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), tokA[len(TokenPrefix):]) {
		t.Fatal("token store holds the token in clear")
	}
	if st, _ := os.Stat(filepath.Join(dir, "ca", TokenFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", st.Mode())
	}
	// A second store (another process: `weft token create`) adds a token the
	// first one must accept without a restart.
	other, err := NewTokenStore(dir, clock)
	if err != nil {
		t.Fatal(err)
	}
	tokB, err := other.Create("shop", "payments", 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name    string
		tok     string
		want    Identity
		wantErr error
	}{
		{"token A", tokA, Identity{"shop", "cart"}, nil},
		{"token from other process", tokB, Identity{"shop", "payments"}, nil},
		{"unknown", TokenPrefix + "AAAA", Identity{}, ErrInvalidToken},
		{"no prefix", tokA[len(TokenPrefix):], Identity{}, ErrInvalidToken},
		{"empty", "", Identity{}, ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Authenticate(ctx, tc.tok)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Fatalf("Authenticate = %v, %v; want %v, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
	now = now.Add(2 * time.Hour)
	if _, err := s.Authenticate(ctx, tokA); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := s.Authenticate(ctx, tokB); err != nil {
		t.Fatalf("non-expiring token: %v", err)
	}
}

func TestServingCertSource(t *testing.T) {
	now := time.Now()
	c, err := New(Options{DataDir: t.TempDir(), DefaultTTL: time.Hour, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.NewServingCertSource(nil); err == nil {
		t.Fatal("no hosts accepted")
	}
	s, err := c.NewServingCertSource([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.GetCertificate(nil)
	now = now.Add(20 * time.Minute)
	if again, _ := s.GetCertificate(nil); again != first {
		t.Fatal("re-issued before half life")
	}
	now = now.Add(20 * time.Minute)
	renewed, _ := s.GetCertificate(nil)
	if renewed == first {
		t.Fatal("not re-issued after half life")
	}
	if err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	rotated, _ := s.GetCertificate(nil)
	if rotated == renewed || rotated.Leaf.CheckSignatureFrom(c.Roots()[1]) != nil {
		t.Fatal("not re-issued from the new root after rotation")
	}
	if s.TLSConfig().GetCertificate == nil {
		t.Fatal("TLSConfig without GetCertificate")
	}
}
