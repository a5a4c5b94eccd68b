package caclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securityv1 "istio.io/api/security/v1alpha1"

	"github.com/weftmesh/weft/pkg/ca"
	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/pkg/ca/catest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is a CA served over real TLS gRPC on 127.0.0.1:0.
type env struct{ *catest.CA }

func startCA(t *testing.T) *env { return &env{catest.Start(t, catest.Options{FixedServingCert: true})} }

func (e *env) cfg(token string) caclient.Config {
	return caclient.Config{Addr: e.Addr, RootsPEM: e.RootsPEM(), ServerName: "istiod.weft-system.svc", Token: token}
}

func TestFetch(t *testing.T) {
	e := startCA(t)
	tokA, err := e.Tokens.Create("shop", "cart", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	t.Run("issued for token identity", func(t *testing.T) {
		cfg := e.cfg(tokA)
		cfg.TTL = time.Hour
		b, err := caclient.Fetch(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Leaf.URIs) != 1 || b.Leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" {
			t.Fatalf("URIs %v", b.Leaf.URIs)
		}
		if got := time.Until(b.Leaf.NotAfter); got > time.Hour || got < 59*time.Minute {
			t.Fatalf("lifetime %s, want 1h", got)
		}
		if _, err := b.Leaf.Verify(x509.VerifyOptions{Roots: b.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("claimed identity is checked", func(t *testing.T) {
		for _, tc := range []struct {
			ns, sa string
			ok     bool
		}{
			{"shop", "cart", true}, {"shop", "payments", false}, {"other", "cart", false},
		} {
			cfg := e.cfg(tokA)
			cfg.ExpectNamespace, cfg.ExpectServiceAccount = tc.ns, tc.sa
			_, err := caclient.Fetch(ctx, cfg)
			var mm *caclient.IdentityMismatchError
			switch {
			case tc.ok && err != nil:
				t.Errorf("%s/%s: %v", tc.ns, tc.sa, err)
			case !tc.ok && !errors.As(err, &mm):
				t.Errorf("%s/%s: err = %v, want an IdentityMismatchError", tc.ns, tc.sa, err)
			case !tc.ok && mm.Got != "spiffe://cluster.local/ns/shop/sa/cart":
				t.Errorf("%s/%s: mismatch names %s", tc.ns, tc.sa, mm.Got)
			}
		}
	})

	cases := []struct {
		name     string
		token    string
		identity string
		want     codes.Code
	}{
		{"same identity asked explicitly", tokA, "spiffe://cluster.local/ns/shop/sa/cart", codes.OK},
		{"other sa asked explicitly", tokA, "spiffe://cluster.local/ns/shop/sa/payments", codes.PermissionDenied},
		{"other trust domain asked", tokA, "spiffe://evil.org/ns/shop/sa/cart", codes.PermissionDenied},
		{"garbage identity", tokA, "not a spiffe id", codes.InvalidArgument},
		{"invalid token", ca.TokenPrefix + "bm9wZQ", "", codes.Unauthenticated},
		{"no token", "", "", codes.Unauthenticated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.cfg(tc.token)
			cfg.RequestedIdentity = tc.identity
			_, err := caclient.Fetch(ctx, cfg)
			if got := status.Code(errors.Unwrap(err)); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
		})
	}

	t.Run("CSR claiming another identity", func(t *testing.T) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		claim, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/payments")
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{claim}, DNSNames: []string{"payments"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(e.RootsPEM())
		conn, err := grpc.NewClient(e.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokA)
		resp, err := securityv1.NewIstioCertificateServiceClient(conn).CreateCertificate(cctx, &securityv1.IstioCertificateRequest{
			Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		})
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(resp.CertChain[0]))
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" || len(leaf.DNSNames) != 0 {
			t.Fatalf("issued URIs %v DNS %v; want only the token's identity", leaf.URIs, leaf.DNSNames)
		}
		// Bad CSR is InvalidArgument.
		_, err = securityv1.NewIstioCertificateServiceClient(conn).CreateCertificate(cctx, &securityv1.IstioCertificateRequest{Csr: "junk"})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("junk CSR: %v", err)
		}
	})

	t.Run("untrusted server", func(t *testing.T) {
		other, err := ca.New(ca.Options{DataDir: t.TempDir(), Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.cfg(tokA)
		cfg.RootsPEM = other.RootsPEM()
		cfg.DialTimeout = 2 * time.Second
		if _, err := caclient.Fetch(ctx, cfg); err == nil {
			t.Fatal("fetch from a CA whose serving cert we do not trust succeeded")
		}
	})
}

// TestRotatorHandshakes runs an mTLS server and client whose certificates
// come from Rotators with a 2s lifetime, and handshakes continuously across
// several rotations.
func TestRotatorHandshakes(t *testing.T) {
	if testing.Short() {
		t.Skip("rotation soak takes ~5s")
	}
	e := startCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	newRot := func(sa string) *caclient.Rotator {
		tok, err := e.Tokens.Create("shop", sa, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cfg := e.cfg(tok)
		cfg.TTL = 2 * time.Second
		r := caclient.NewRotator(caclient.RotatorOptions{
			Fetch:  func(ctx context.Context) (*caclient.Bundle, error) { return caclient.Fetch(ctx, cfg) },
			Logger: quiet,
		})
		go func() { _ = r.Run(ctx) }()
		select {
		case <-r.Ready():
		case <-time.After(10 * time.Second):
			t.Fatal("rotator never got a certificate")
		}
		return r
	}
	srvRot, cliRot := newRot("server"), newRot("client")

	lis, err := tls.Listen("tcp", "127.0.0.1:0", srvRot.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c) // echo
			}()
		}
	}()

	// One long-lived connection opened before any rotation must keep working.
	long, err := tls.Dial("tcp", lis.Addr().String(), cliRot.ClientConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()

	serials := map[string]bool{}
	var ok, failures int
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := tls.Dial("tcp", lis.Addr().String(), cliRot.ClientConfig())
		if err != nil {
			failures++
			t.Logf("handshake failed: %v", err)
			continue
		}
		st := conn.ConnectionState()
		serials[st.PeerCertificates[0].SerialNumber.String()] = true
		if _, err := conn.Write([]byte("ping")); err != nil {
			failures++
		} else if buf := make([]byte, 4); func() error { _, err := io.ReadFull(conn, buf); return err }() != nil {
			failures++
		} else {
			ok++
		}
		conn.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := long.Write([]byte("late")); err != nil {
		t.Fatalf("long-lived connection broke: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(long, buf); err != nil || string(buf) != "late" {
		t.Fatalf("long-lived connection read: %q %v", buf, err)
	}
	t.Logf("handshakes ok=%d failed=%d distinct server certs=%d server renewals=%d client renewals=%d",
		ok, failures, len(serials), srvRot.Renewals(), cliRot.Renewals())
	if failures != 0 {
		t.Fatalf("%d handshake failures across rotations", failures)
	}
	if len(serials) < 3 || srvRot.Renewals() < 3 || cliRot.Renewals() < 3 {
		t.Fatalf("want >= 3 rotations: serials=%d server=%d client=%d", len(serials), srvRot.Renewals(), cliRot.Renewals())
	}
	if ok < 50 {
		t.Fatalf("only %d handshakes", ok)
	}
	// Rotation keeps going: a current certificate within its validity is
	// there (on a loaded machine a 2 s certificate may lapse while its
	// successor is being fetched, so poll instead of sampling once).
	for catchUp := time.Now().Add(10 * time.Second); time.Now().After(srvRot.Current().Leaf.NotAfter); {
		if time.Now().After(catchUp) {
			t.Fatalf("server certificate expired at %s and no renewal followed: rotation stopped", srvRot.Current().Leaf.NotAfter)
		}
		time.Sleep(20 * time.Millisecond) // polling the rotator's state
	}
	lis.Close()
	wg.Wait()
}

// TestRotatorBackoff: a failing CA is retried with growing delays, and the
// rotator recovers once it answers.
func TestRotatorBackoff(t *testing.T) {
	e := startCA(t)
	tok, err := e.Tokens.Create("shop", "cart", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []time.Time
	fail := 3
	cfg := e.cfg(tok)
	r := caclient.NewRotator(caclient.RotatorOptions{
		MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second, Logger: quiet,
		Fetch: func(ctx context.Context) (*caclient.Bundle, error) {
			mu.Lock()
			calls = append(calls, time.Now())
			n := len(calls)
			mu.Unlock()
			if n <= fail {
				return nil, errors.New("CA down")
			}
			return caclient.Fetch(ctx, cfg)
		},
	})
	if _, err := r.GetCertificate(nil); !errors.Is(err, caclient.ErrNoCertificate) {
		t.Fatalf("before first fetch: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	select {
	case <-r.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("never recovered")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if r.Failures() != int64(fail) {
		t.Fatalf("failures %d", r.Failures())
	}
	// Delays 20ms, 40ms, 80ms: each gap at least the previous backoff.
	for i, want := range []time.Duration{20, 40, 80} {
		if gap := calls[i+1].Sub(calls[i]); gap < want*time.Millisecond {
			t.Fatalf("gap %d = %s, want >= %dms", i, gap, want)
		}
	}
	if c, err := r.GetClientCertificate(nil); err != nil || c.Leaf == nil {
		t.Fatalf("GetClientCertificate: %v", err)
	}
}

// TestRenewAtHalfLife: after a fetch the rotator waits half of the
// certificate's remaining lifetime before fetching again. (Certificate times
// have one-second precision, so a 4s request lives 3-4s.)
func TestRenewAtHalfLife(t *testing.T) {
	e := startCA(t)
	tok, _ := e.Tokens.Create("shop", "cart", time.Hour)
	cfg := e.cfg(tok)
	cfg.TTL = 4 * time.Second
	var mu sync.Mutex
	var at []time.Time
	r := caclient.NewRotator(caclient.RotatorOptions{
		Logger: quiet,
		Fetch: func(ctx context.Context) (*caclient.Bundle, error) {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
			return caclient.Fetch(ctx, cfg)
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2800*time.Millisecond)
	defer cancel()
	_ = r.Run(ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 2 {
		t.Fatalf("fetches in 2.8s with a 4s cert = %d, want 2 (renew at half life)", len(at))
	}
	if gap := at[1].Sub(at[0]); gap < 1400*time.Millisecond || gap > 2600*time.Millisecond {
		t.Fatalf("renewed after %s, want 1.5-2s (half of 3-4s)", gap)
	}
}

// TestNoKubernetesDeps keeps the client importable by the slim proxy.
func TestNoKubernetesDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v %s", err, out)
	}
	for _, dep := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(dep, "k8s.io/") || dep == "github.com/weftmesh/weft/pkg/ca" {
			t.Errorf("caclient depends on %s", dep)
		}
	}
}
