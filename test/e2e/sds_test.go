package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestProxySDS: a real SDS client (go-control-plane's generated stubs) on
// weft proxy's --sds-socket gets "default" and "ROOTCA" from a proxy whose
// control plane issues 4 s certificates: the chain verifies against ROOTCA
// (which holds the control plane's root), the key matches the leaf, the
// leaf is the one the proxy presents (admin /certs), and a new version with
// a new certificate arrives after a rotation.
func TestProxySDS(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	dataDir := t.TempDir()
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", t.TempDir(), "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms", "--workload-cert-ttl", "4s")
	sock := filepath.Join(t.TempDir(), "sds.sock")
	px, proc := startMeshedProxy(t, dataDir, cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA"), "sdsclient",
		"--admin-address", "127.0.0.1:0", "--sds-socket", sock)

	cpRoots, err := os.ReadFile(filepath.Join(dataDir, "ca", "root-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cpRoot, err := caclient.ParseRoots(cpRoots, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"default", "ROOTCA"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	// recv returns the response's version and verified leaf, and ACKs it.
	recv := func() (string, *x509.Certificate) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("SDS Recv: %v; proxy log:\n%s", err, proc.Stderr())
		}
		got := map[string]*tlsv3.Secret{}
		for _, a := range resp.GetResources() {
			s := &tlsv3.Secret{}
			if err := a.UnmarshalTo(s); err != nil {
				t.Fatal(err)
			}
			got[s.GetName()] = s
		}
		def, rootca := got["default"].GetTlsCertificate(), got["ROOTCA"].GetValidationContext()
		if def == nil || rootca == nil {
			t.Fatalf("SDS response %v: want default (tls_certificate) and ROOTCA (validation_context)", resp.GetResources())
		}
		pair, err := tls.X509KeyPair(def.GetCertificateChain().GetInlineBytes(), def.GetPrivateKey().GetInlineBytes())
		if err != nil {
			t.Fatalf("default: %v", err)
		}
		roots, err := caclient.ParseRoots(rootca.GetTrustedCa().GetInlineBytes(), time.Now())
		if err != nil {
			t.Fatalf("ROOTCA: %v", err)
		}
		pool := x509.NewCertPool()
		hasCPRoot := false
		for _, r := range roots {
			pool.AddCert(r)
			hasCPRoot = hasCPRoot || r.Equal(cpRoot[0])
		}
		if !hasCPRoot {
			t.Fatal("ROOTCA lacks the control plane's root")
		}
		inter := x509.NewCertPool()
		for _, der := range pair.Certificate[1:] {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			inter.AddCert(c)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("default does not verify against ROOTCA: %v", err)
		}
		if len(leaf.URIs) == 0 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/sdsclient" {
			t.Fatalf("leaf URIs %v", leaf.URIs)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: names,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return resp.GetVersionInfo(), leaf
	}
	v1, leaf1 := recv()
	// The proxy presents the certificate SDS serves (unless it rotated in
	// between: then the next response must match).
	presented, err := leafSerial(px.Admin)
	if err != nil {
		t.Fatal(err)
	}
	v2, leaf2 := recv()
	if v2 == v1 || leaf2.SerialNumber.Cmp(leaf1.SerialNumber) == 0 {
		t.Fatalf("after a rotation: version %s -> %s, serial %x -> %x; want both new", v1, v2, leaf1.SerialNumber, leaf2.SerialNumber)
	}
	if presented != leaf1.SerialNumber.Text(16) && presented != leaf2.SerialNumber.Text(16) {
		t.Fatalf("admin /certs shows serial %s, SDS served %x then %x", presented, leaf1.SerialNumber, leaf2.SerialNumber)
	}
}
