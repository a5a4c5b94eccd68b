// Package catest runs a real Weft CA for tests: IstioCertificateService
// over gRPC with TLS on 127.0.0.1, with a join-token store.
package catest

import (
	"crypto/tls"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/pkg/ca"
)

// ServingHosts are the names the CA's serving certificate is valid for.
var ServingHosts = []string{"istiod.weft-system.svc", "localhost", "127.0.0.1"}

// CA is a running CA.
type CA struct {
	*ca.CA
	Tokens *ca.TokenStore
	Dir    string // its data directory; Dir/ca/root-cert.pem is the root
	Addr   string // host:port of the gRPC service
}

// Options configure Start.
type Options struct {
	// TTL is the CA's default certificate lifetime (0: the CA's default).
	TTL time.Duration
	// FixedServingCert serves one serving certificate for the CA's whole
	// life; by default it comes from a ServingCertSource and so follows a
	// root rotation.
	FixedServingCert bool
}

// Start serves a new CA until the test ends.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	dir := t.TempDir()
	c, err := ca.New(ca.Options{DataDir: dir, DefaultTTL: o.TTL, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := ca.NewTokenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tlsCfg *tls.Config
	if o.FixedServingCert {
		serving, err := c.ServingCertificate(ServingHosts)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{serving}, MinVersion: tls.VersionTLS12}
	} else {
		src, err := c.NewServingCertSource(ServingHosts)
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg = src.TLSConfig()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsCfg)))
	ca.RegisterGRPC(srv, c, tokens)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &CA{CA: c, Tokens: tokens, Dir: dir, Addr: lis.Addr().String()}
}

// Token creates a join token for namespace ns, service account sa.
func (c *CA) Token(t testing.TB, ns, sa string) string {
	t.Helper()
	tok, err := c.Tokens.Create(ns, sa, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
