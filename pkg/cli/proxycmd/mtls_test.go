package proxycmd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/weftmesh/weft/pkg/ca/catest"
)

// TestProxyMTLSFlags checks weft proxy's CA flags against a real CA served
// over gRPC/TLS on 127.0.0.1.
func TestProxyMTLSFlags(t *testing.T) {
	tca := catest.Start(t, catest.Options{})
	dir, tok := tca.Dir, tca.Token(t, "shop", "cart")
	root := filepath.Join(dir, "ca", "root-cert.pem")
	tokFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := tca.Addr
	cases := []struct {
		name    string
		f       proxyMTLSFlags
		sa      string // the proxy's --service-account; default cart
		wantID  string // "" with wantErr "" means no mTLS
		wantErr string
		sds     bool // serve SDS on a socket and check it serves the proxy's certificate
	}{
		{name: "no flags: plaintext", f: proxyMTLSFlags{}},
		{name: "token without address", f: proxyMTLSFlags{token: tok}, wantErr: "need --ca-address"},
		{name: "no root", f: proxyMTLSFlags{addr: addr, token: tok}, wantErr: "--ca-root-cert"},
		{name: "missing root file", f: proxyMTLSFlags{addr: addr, rootCert: filepath.Join(dir, "nope.pem"), token: tok}, wantErr: "--ca-root-cert"},
		{name: "no token", f: proxyMTLSFlags{addr: addr, rootCert: root}, wantErr: "--ca-token"},
		{name: "bad token", f: proxyMTLSFlags{addr: addr, rootCert: root, token: "wrong", wait: 500 * time.Millisecond}, wantErr: "no workload certificate"},
		{name: "token", f: proxyMTLSFlags{addr: addr, rootCert: root, token: tok, wait: 10 * time.Second}, wantID: "spiffe://cluster.local/ns/shop/sa/cart"},
		{name: "token file", f: proxyMTLSFlags{addr: addr, rootCert: root, tokenFile: tokFile, wait: 10 * time.Second}, wantID: "spiffe://cluster.local/ns/shop/sa/cart"},
		{name: "sds socket", f: proxyMTLSFlags{addr: addr, rootCert: root, token: tok, wait: 10 * time.Second}, sds: true, wantID: "spiffe://cluster.local/ns/shop/sa/cart"},
		{name: "sds socket in a missing place", f: proxyMTLSFlags{addr: addr, rootCert: root, token: tok, wait: 10 * time.Second, sdsSocket: "/proc/self/nope/sds.sock"}, wantErr: "--sds-socket"},
		// The token proves cart; a proxy started as payments must not serve
		// cart's certificate (it fails at once, not after --ca-wait).
		{name: "token for another service account", f: proxyMTLSFlags{addr: addr, rootCert: root, token: tok, wait: time.Minute}, sa: "payments",
			wantErr: `issued spiffe://cluster.local/ns/shop/sa/cart, but this workload is namespace "shop" service account "payments"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			sa := tc.sa
			if sa == "" {
				sa = "cart"
			}
			if tc.sds {
				tc.f.sdsSocket = filepath.Join(t.TempDir(), "sds.sock")
			}
			started := time.Now()
			certs, err := tc.f.start(ctx, slog.New(slog.DiscardHandler), "shop", sa)
			if tc.wantErr != "" {
				if time.Since(started) > 30*time.Second {
					t.Errorf("the error came after %s", time.Since(started))
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				var ee *ExitError
				if strings.HasPrefix(tc.wantErr, "--") && !errors.As(err, &ee) {
					t.Errorf("flag error %v is not a usage (exit 2) error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantID == "" {
				if certs != nil {
					t.Fatalf("certs = %v, want nil", certs)
				}
				return
			}
			cert, err := certs.ClientConfig().GetClientCertificate(nil)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Leaf == nil || len(cert.Leaf.URIs) == 0 || cert.Leaf.URIs[0].String() != tc.wantID {
				t.Fatalf("certificate identity %v, want %s", cert.Leaf, tc.wantID)
			}
			if tc.sds {
				conn, err := grpc.NewClient("unix://"+tc.f.sdsSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}})
				if err != nil {
					t.Fatalf("SDS on %s: %v", tc.f.sdsSocket, err)
				}
				sec := &tlsv3.Secret{}
				if len(resp.GetResources()) != 1 || resp.GetResources()[0].UnmarshalTo(sec) != nil {
					t.Fatalf("SDS default: %v", resp.GetResources())
				}
				pair, err := tls.X509KeyPair(sec.GetTlsCertificate().GetCertificateChain().GetInlineBytes(), sec.GetTlsCertificate().GetPrivateKey().GetInlineBytes())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(pair.Certificate[0], cert.Certificate[0]) {
					t.Fatal("SDS serves another certificate than the proxy's TLS stack uses")
				}
			}
		})
	}
}

// TestProxyMTLSTokenFileReread: renewals read --ca-token-file again, as
// Kubernetes rotates projected service-account tokens in place.
func TestProxyMTLSTokenFileReread(t *testing.T) {
	tca := catest.Start(t, catest.Options{TTL: 3 * time.Second})
	dir, first, second := tca.Dir, tca.Token(t, "shop", "cart"), tca.Token(t, "shop", "cart-v2")
	tokFile := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(tokFile, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := proxyMTLSFlags{addr: tca.Addr, rootCert: filepath.Join(dir, "ca", "root-cert.pem"), tokenFile: tokFile, wait: 10 * time.Second}
	// No claimed identity here (""): the test tells the renewal's token
	// from the first by the service account it proves.
	certs, err := f.start(ctx, slog.New(slog.DiscardHandler), "", "")
	if err != nil {
		t.Fatal(err)
	}
	id := func() string {
		cert, err := certs.ClientConfig().GetClientCertificate(nil)
		if err != nil || cert.Leaf == nil || len(cert.Leaf.URIs) == 0 {
			return fmt.Sprint(err)
		}
		return cert.Leaf.URIs[0].String()
	}
	if got := id(); got != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("first certificate %s", got)
	}
	// The kubelet replaces the token; the next renewal (at half of the 3s
	// lifetime) must present the new one.
	if err := os.WriteFile(tokFile, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for id() != "spiffe://cluster.local/ns/shop/sa/cart-v2" {
		if time.Now().After(deadline) {
			t.Fatalf("certificate after renewal %s, want the rotated token's identity", id())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestProxyMTLSRootReload: a root rotation reaches a running proxy through
// its --ca-root-cert file alone. After the CA rotates, its serving
// certificate chains to the new root, so the proxy must read the new trust
// bundle to renew at all; it renews at once (the certificate has an hour
// left), and once the file drops the old root, certificates under it are
// no longer trusted.
func TestProxyMTLSRootReload(t *testing.T) {
	tca := catest.Start(t, catest.Options{TTL: time.Hour})
	c, tok := tca.CA, tca.Token(t, "shop", "cart")
	rootFile := filepath.Join(t.TempDir(), "root-cert.pem")
	writeRoots := func() {
		t.Helper()
		tmp := rootFile + ".tmp"
		if err := os.WriteFile(tmp, c.RootsPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, rootFile); err != nil {
			t.Fatal(err)
		}
	}
	writeRoots()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := proxyMTLSFlags{addr: tca.Addr, rootCert: rootFile, token: tok, wait: 10 * time.Second, rootPoll: 50 * time.Millisecond}
	certs, err := f.start(ctx, slog.New(slog.DiscardHandler), "shop", "cart")
	if err != nil {
		t.Fatal(err)
	}
	leaf := func() *x509.Certificate {
		cert, err := certs.ClientConfig().GetClientCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return cert.Leaf
	}
	trusts := func(l *x509.Certificate) bool {
		_, err := l.Verify(x509.VerifyOptions{Roots: certs.(interface{ Roots() *x509.CertPool }).Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}
	first := leaf()
	oldRoot := c.Roots()[0]
	if err := c.Rotate(); err != nil {
		t.Fatal(err)
	}
	newRoot := c.Roots()[1]
	writeRoots() // the overlap bundle: old and new root
	waitFor(t, 10*time.Second, "a certificate from the new root", func() bool { return leaf().CheckSignatureFrom(newRoot) == nil })
	if !trusts(first) || !trusts(leaf()) {
		t.Fatal("during the overlap both roots must be trusted")
	}
	if err := c.DropRoot(oldRoot); err != nil {
		t.Fatal(err)
	}
	writeRoots() // the new root alone
	waitFor(t, 10*time.Second, "the old root to be dropped", func() bool { return !trusts(first) })
	if !trusts(leaf()) {
		t.Fatal("the current certificate is not trusted after the old root was dropped")
	}
	// A broken or expired bundle keeps the last good roots.
	good := c.RootsPEM()
	rf := &rootsFile{path: rootFile, pem: good, log: slog.New(slog.DiscardHandler)}
	for _, bad := range [][]byte{[]byte("not a certificate"), nil} {
		if err := os.WriteFile(rootFile, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if rf.reload() || !bytes.Equal(rf.current(), good) {
			t.Fatalf("bundle %q replaced the trusted roots", bad)
		}
	}
	writeRoots()
	if rf.reload() {
		t.Fatal("an unchanged bundle counted as a change")
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
