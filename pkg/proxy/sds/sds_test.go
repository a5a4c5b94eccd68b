package sds_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/ca"
	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/pkg/ca/catest"
	"github.com/weftmesh/weft/pkg/proxy/sds"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// mesh is a real CA over TLS gRPC, a workload certificate rotator feeding
// a Cache, and the SDS server on a Unix socket.
type mesh struct {
	ca     *ca.CA
	cache  *sds.Cache
	client secretv3.SecretDiscoveryServiceClient
	cfg    caclient.Config // fetches a certificate from the CA
}

func startMesh(t testing.TB, ttl time.Duration) *mesh {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tca := catest.Start(t, catest.Options{FixedServingCert: true})
	c, tok := tca.CA, tca.Token(t, "shop", "cart")

	cache := sds.NewCache()
	cfg := caclient.Config{Addr: tca.Addr, RootsPEM: c.RootsPEM(), ServerName: "localhost", Token: tok, TTL: ttl}
	r := caclient.NewRotator(caclient.RotatorOptions{
		Fetch: func(ctx context.Context) (*caclient.Bundle, error) { return caclient.Fetch(ctx, cfg) },
		OnRenew: func(b *caclient.Bundle) {
			if err := cache.Set(b); err != nil {
				t.Errorf("cache.Set: %v", err)
			}
		},
		Logger: quiet,
	})
	go func() { _ = r.Run(ctx) }()

	sock := filepath.Join(t.TempDir(), "sds.sock")
	lis, err := sds.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sds.NewServer(cache, quiet).Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &mesh{ca: c, cache: cache, client: secretv3.NewSecretDiscoveryServiceClient(conn), cfg: cfg}
}

// secrets decodes a response's resources by name.
func secrets(t *testing.T, resources []*anypb.Any) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range resources {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			t.Fatalf("resource %s: %v", a.GetTypeUrl(), err)
		}
		out[s.GetName()] = s
	}
	return out
}

// checked is what checkSecrets learnt from one pair of secrets.
type checked struct {
	leaf  *x509.Certificate
	roots []*x509.Certificate
}

// checkSecrets verifies that "default" holds a chain that verifies against
// "ROOTCA" and a private key matching the leaf, as an Envoy would load them.
func checkSecrets(t *testing.T, got map[string]*tlsv3.Secret) checked {
	t.Helper()
	def, root := got[sds.WorkloadCertSecret], got[sds.RootCASecret]
	if def == nil || root == nil {
		t.Fatalf("secrets %v, want default and ROOTCA", keys(got))
	}
	tc := def.GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		t.Fatalf("default: chain and key do not match: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	var roots []*x509.Certificate
	for rest := root.GetValidationContext().GetTrustedCa().GetInlineBytes(); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("ROOTCA: %v", err)
		}
		pool.AddCert(c)
		roots = append(roots, c)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("default does not verify against ROOTCA (%d roots): %v", len(roots), err)
	}
	if len(leaf.URIs) == 0 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" {
		t.Fatalf("leaf URIs %v, want the workload's SPIFFE ID", leaf.URIs)
	}
	return checked{leaf: leaf, roots: roots}
}

func keys(m map[string]*tlsv3.Secret) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestStreamSecretsRotation: a real SDS client stream gets default and
// ROOTCA, a new version after each certificate rotation, and both roots
// during a CA root rotation overlap. The proxy's own TLS callbacks return
// the certificate SDS serves.
func TestStreamSecretsRotation(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 3*time.Second) // renewed at half life: every ~1.5 s
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := m.client.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{sds.WorkloadCertSecret, sds.RootCASecret}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	recv := func() (*discoveryv3.DiscoveryResponse, checked) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if resp.GetTypeUrl() != resourcev3.SecretType {
			t.Fatalf("type_url %q", resp.GetTypeUrl())
		}
		got := checkSecrets(t, secrets(t, resp.GetResources()))
		// ACK, as Envoy does.
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: req.ResourceNames, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp, got
	}
	first, c1 := recv()
	if len(c1.roots) != 1 {
		t.Fatalf("ROOTCA holds %d roots, want 1", len(c1.roots))
	}
	// The proxy's TLS stack reads the same cache.
	own, err := m.cache.ServerConfig().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	ownLeaf, err := x509.ParseCertificate(own.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if ownLeaf.SerialNumber.Cmp(c1.leaf.SerialNumber) != 0 && m.cache.Version() == first.GetVersionInfo() {
		t.Fatalf("proxy TLS certificate %s differs from SDS default %s at version %s", ownLeaf.SerialNumber, c1.leaf.SerialNumber, first.GetVersionInfo())
	}

	second, c2 := recv()
	if second.GetVersionInfo() == first.GetVersionInfo() || c2.leaf.SerialNumber.Cmp(c1.leaf.SerialNumber) == 0 {
		t.Fatalf("after rotation: version %s -> %s, serial %s -> %s; want both new", first.GetVersionInfo(), second.GetVersionInfo(), c1.leaf.SerialNumber, c2.leaf.SerialNumber)
	}

	// Root rotation: the next certificate chains to the new root, ROOTCA
	// must hold old and new.
	if err := m.ca.Rotate(); err != nil {
		t.Fatal(err)
	}
	for {
		_, c := recv()
		if len(c.roots) == 2 {
			if c.leaf.CheckSignatureFrom(c1.roots[0]) == nil {
				t.Fatal("leaf after root rotation still signed by the old root")
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no secrets with both roots after a root rotation")
		}
	}
}

// TestDeltaSecrets: incremental SDS sends both secrets, then only what
// changed: a new default after a rotation, ROOTCA not again while the roots
// are unchanged.
func TestDeltaSecrets(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := m.client.DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNamesSubscribe: []string{sds.WorkloadCertSecret, sds.RootCASecret}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]*tlsv3.Secret{}
	versions := map[string]string{}
	recv := func() []string {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		var names []string
		for _, r := range resp.GetResources() {
			s := &tlsv3.Secret{}
			if err := r.GetResource().UnmarshalTo(s); err != nil {
				t.Fatal(err)
			}
			if s.GetName() != r.GetName() || r.GetVersion() == "" || r.GetVersion() == versions[r.GetName()] {
				t.Fatalf("resource %q (secret %q) version %q, had %q", r.GetName(), s.GetName(), r.GetVersion(), versions[r.GetName()])
			}
			got[r.GetName()], versions[r.GetName()] = s, r.GetVersion()
			names = append(names, r.GetName())
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return names
	}
	if names := recv(); len(names) != 2 {
		t.Fatalf("first response %v, want default and ROOTCA", names)
	}
	c1 := checkSecrets(t, got)
	if names := recv(); len(names) != 1 || names[0] != sds.WorkloadCertSecret {
		t.Fatalf("after rotation got %v, want only default", names)
	}
	if c2 := checkSecrets(t, got); c2.leaf.SerialNumber.Cmp(c1.leaf.SerialNumber) == 0 {
		t.Fatal("rotation sent the same certificate")
	}
}

// TestFetchSecrets: the unary call names unknown secrets in its error.
func TestFetchSecrets(t *testing.T) {
	t.Parallel()
	m := startMesh(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var resp *discoveryv3.DiscoveryResponse
	for {
		var err error
		resp, err = m.client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{sds.WorkloadCertSecret, sds.RootCASecret}})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("FetchSecrets: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling until the first certificate is in
	}
	checkSecrets(t, secrets(t, resp.GetResources()))
	_, err := m.client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{"kubernetes://other"}})
	if err == nil || !strings.Contains(err.Error(), "kubernetes://other") {
		t.Fatalf("unknown secret: err %v, want it named", err)
	}
}

// TestStreamSecretsNames: a SotW stream gets exactly the names it asks
// for, an ACK brings no response, a new name list does, and unknown names
// are left out.
func TestStreamSecretsNames(t *testing.T) {
	t.Parallel()
	m := startMesh(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := m.client.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(nonce, version string, names ...string) {
		t.Helper()
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: names, ResponseNonce: nonce, VersionInfo: version}); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(want ...string) *discoveryv3.DiscoveryResponse {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got := secrets(t, resp.GetResources())
		if len(got) != len(want) {
			t.Fatalf("got secrets %v, want %v", keys(got), want)
		}
		for _, n := range want {
			if got[n] == nil {
				t.Fatalf("got secrets %v, want %v", keys(got), want)
			}
		}
		return resp
	}
	ask("", "", sds.RootCASecret)
	r1 := recv(sds.RootCASecret)
	ask(r1.GetNonce(), r1.GetVersionInfo(), sds.RootCASecret) // ACK: no response
	ask(r1.GetNonce(), r1.GetVersionInfo(), sds.WorkloadCertSecret, "kubernetes://other")
	r2 := recv(sds.WorkloadCertSecret)
	if r2.GetVersionInfo() != r1.GetVersionInfo() {
		t.Fatalf("version %s -> %s without a rotation", r1.GetVersionInfo(), r2.GetVersionInfo())
	}
}
