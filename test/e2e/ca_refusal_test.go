package e2e

import (
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
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/test/e2e/harness"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newTestCA makes a CA certificate valid [from, to], self-signed or
// issued by parent.
func newTestCA(t *testing.T, name string, parent *testCA, from, to time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: from, NotAfter: to, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func certPEM(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// TestCARefusals checks the CA's "no" answers with real processes: a
// plug-in cacerts directory whose root expired stops the control plane
// with an error naming the file, a proxy refuses an expired
// --ca-root-cert, and a join token for one service account cannot obtain
// a certificate for another over the control plane's CA port.
func TestCARefusals(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	now := time.Now()

	t.Run("control plane refuses an expired plug-in root", func(t *testing.T) {
		root := newTestCA(t, "expired-root", nil, now.Add(-48*time.Hour), now.Add(-time.Hour))
		inter := newTestCA(t, "cluster-1", root, now.Add(-47*time.Hour), now.Add(24*time.Hour))
		dir := t.TempDir()
		kd, err := x509.MarshalECPrivateKey(inter.key)
		if err != nil {
			t.Fatal(err)
		}
		for n, b := range map[string][]byte{
			"ca-cert.pem": certPEM(inter.cert), "ca-key.pem": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
			"root-cert.pem": certPEM(root.cert), "cert-chain.pem": certPEM(inter.cert, root.cert),
		} {
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		r := harness.Run(t, weft.Binary(t), nil, "control-plane", "--data-dir", t.TempDir(), "--cacerts-dir", dir,
			"--ca-address", "127.0.0.1:0", "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
			"--monitoring-address", "", "--dashboard-address", "")
		if r.ExitCode == 0 {
			t.Fatalf("control plane started with an expired plug-in root:\n%s", r.Stderr)
		}
		want := filepath.Join(dir, "root-cert.pem")
		if !strings.Contains(r.Stderr, want) || !strings.Contains(r.Stderr, "expired") {
			t.Fatalf("error does not name %s as expired:\n%s", want, r.Stderr)
		}
	})

	t.Run("proxy refuses an expired root bundle", func(t *testing.T) {
		root := newTestCA(t, "expired-root", nil, now.Add(-48*time.Hour), now.Add(-time.Hour))
		f := filepath.Join(t.TempDir(), "root-cert.pem")
		if err := os.WriteFile(f, certPEM(root.cert), 0o644); err != nil {
			t.Fatal(err)
		}
		r := harness.Run(t, weft.Binary(t), nil, "proxy", "--control-plane", "127.0.0.1:1", "--ca-address", "127.0.0.1:1",
			"--ca-root-cert", f, "--ca-token", "x", "--ca-wait", "5s",
			"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
			"--metrics-address", "", "--health-address", "", "--status-address", "")
		if r.ExitCode == 0 {
			t.Fatalf("proxy accepted an expired root")
		}
		if !strings.Contains(r.Stderr, f) || !strings.Contains(r.Stderr, `root "CN=expired-root" expired at`) {
			t.Fatalf("proxy error does not name the expired root in %s:\n%s", f, r.Stderr)
		}
	})

	t.Run("token for one service account cannot get another's certificate", func(t *testing.T) {
		dataDir := t.TempDir()
		cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", t.TempDir(), "--data-dir", dataDir,
			"--xds-address", "127.0.0.1:0", "--monitoring-address", "", "--dashboard-address", "",
			"--ca-address", "127.0.0.1:0")
		caAddr := cp.ListenAddress(t, "CA")
		tok := harness.Run(t, weft.Binary(t), nil, "token", "create", "--data-dir", dataDir, "--namespace", "shop", "--service-account", "cart")
		if tok.ExitCode != 0 {
			t.Fatalf("token create: %s", tok.Stderr)
		}
		roots, err := os.ReadFile(filepath.Join(dataDir, "ca", "root-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := caclient.Config{Addr: caAddr, RootsPEM: roots, Token: strings.TrimSpace(tok.Stdout)}
		ctx := context.Background()

		// The token's own identity is granted ...
		b, err := caclient.Fetch(ctx, cfg)
		if err != nil {
			t.Fatalf("token's own identity: %v", err)
		}
		if got := b.Leaf.URIs[0].String(); got != "spiffe://cluster.local/ns/shop/sa/cart" {
			t.Fatalf("issued %s, want the token's identity", got)
		}
		// ... another service account, namespace or trust domain is not.
		for _, other := range []string{
			"spiffe://cluster.local/ns/shop/sa/payments",
			"spiffe://cluster.local/ns/bank/sa/cart",
			"spiffe://evil.example/ns/shop/sa/cart",
		} {
			c := cfg
			c.RequestedIdentity = other
			b, err := caclient.Fetch(ctx, c)
			if status.Code(unwrapStatus(err)) != codes.PermissionDenied {
				got := "no error"
				if b != nil {
					got = "certificate for " + b.Leaf.URIs[0].String()
				}
				t.Errorf("token for shop/cart asking for %s: %v (%s), want PermissionDenied", other, err, got)
			}
		}
		// A token that was never issued gets nothing.
		c := cfg
		c.Token = "not-a-token"
		if _, err := caclient.Fetch(ctx, c); status.Code(unwrapStatus(err)) != codes.Unauthenticated {
			t.Errorf("unknown token: %v, want Unauthenticated", err)
		}
	})
}

// unwrapStatus finds the gRPC status error inside a wrapped error.
func unwrapStatus(err error) error {
	for e := err; e != nil; {
		if _, ok := status.FromError(e); ok {
			return e
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}
