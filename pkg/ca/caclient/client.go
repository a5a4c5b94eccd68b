// Package caclient is the workload side of Weft's CA: it makes a P-256 key
// locally (the key never leaves the process), sends a CSR to
// IstioCertificateService/CreateCertificate over TLS, and keeps the
// certificate fresh with a Rotator. It has no Kubernetes dependencies so the
// sidecar proxy can import it.
package caclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
	securityv1 "istio.io/api/security/v1alpha1"
)

// Config says where and how to ask for a certificate.
type Config struct {
	// Addr is the CA's host:port (the control plane's 15012).
	Addr string
	// RootsPEM are the roots that the CA's serving certificate must chain to.
	// They are also trusted for peers, together with the root of each
	// issued chain.
	RootsPEM []byte
	// ServerName overrides the TLS server name. Default: Addr's host.
	ServerName string
	// Token is sent as "authorization: Bearer <Token>".
	Token string
	// TTL is the requested lifetime; 0 lets the CA choose (24h by default).
	TTL time.Duration
	// RequestedIdentity, if set, is sent as the Istio ImpersonatedIdentity
	// metadata; the CA refuses it unless it matches the token's identity.
	RequestedIdentity string
	// DialTimeout bounds one CreateCertificate call. Default 10s.
	DialTimeout time.Duration
	// ExpectNamespace and ExpectServiceAccount, if set, are the identity
	// the workload claims (the proxy's --namespace/--service-account): an
	// issued certificate for any other identity is refused with an
	// *IdentityMismatchError, so a proxy never serves an identity it was
	// not started as (the CA issues what the credential proves).
	ExpectNamespace, ExpectServiceAccount string
}

// IdentityMismatchError: the CA issued a certificate for another identity
// than the one the workload claims.
type IdentityMismatchError struct {
	Got                       string // the certificate's SPIFFE ID
	Namespace, ServiceAccount string // what the workload claims
}

func (e *IdentityMismatchError) Error() string {
	return fmt.Sprintf("caclient: the CA issued %s, but this workload is namespace %q service account %q: the credential (join token or service-account token) proves another identity",
		e.Got, e.Namespace, e.ServiceAccount)
}

// checkIdentity compares leaf's SPIFFE ID path (any trust domain) with the
// expected /ns/NS/sa/SA.
func (cfg Config) checkIdentity(leaf *x509.Certificate) error {
	if cfg.ExpectNamespace == "" && cfg.ExpectServiceAccount == "" {
		return nil
	}
	want := "/ns/" + cfg.ExpectNamespace + "/sa/" + cfg.ExpectServiceAccount
	got := ""
	for _, u := range leaf.URIs {
		if u.Scheme == "spiffe" {
			got = u.String()
			if u.Path == want {
				return nil
			}
		}
	}
	if got == "" {
		got = "a certificate without a SPIFFE ID"
	}
	return &IdentityMismatchError{Got: got, Namespace: cfg.ExpectNamespace, ServiceAccount: cfg.ExpectServiceAccount}
}

// Bundle is an issued certificate with its key and the trusted roots.
type Bundle struct {
	// Cert holds the chain (leaf first) and the private key.
	Cert tls.Certificate
	// Leaf is Cert's parsed leaf.
	Leaf *x509.Certificate
	// Roots trusts Config.RootsPEM plus the issued chain's root.
	Roots *x509.CertPool
	// RootCerts are Roots' certificates (Config.RootsPEM's first, then the
	// chain's root if it is another one): during a root rotation overlap
	// both the old and the new root. SDS serves them as ROOTCA.
	RootCerts []*x509.Certificate
	// IssuedAt is when the client received the certificate.
	IssuedAt time.Time
}

// Fetch makes a new key and CSR and asks the CA to sign it.
func Fetch(ctx context.Context, cfg Config) (*Bundle, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cfg.RootsPEM) {
		return nil, errors.New("caclient: RootsPEM holds no certificate")
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("caclient: generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("caclient: create CSR: %w", err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	tlsCfg := &tls.Config{RootCAs: roots, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
	conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("caclient: dial %s: %w", cfg.Addr, err)
	}
	defer conn.Close()
	req := &securityv1.IstioCertificateRequest{Csr: string(csrPEM), ValidityDuration: int64(cfg.TTL / time.Second)}
	if cfg.RequestedIdentity != "" {
		md, err := structpb.NewStruct(map[string]any{"ImpersonatedIdentity": cfg.RequestedIdentity})
		if err != nil {
			return nil, fmt.Errorf("caclient: metadata: %w", err)
		}
		req.Metadata = md
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cfg.Token)
	resp, err := securityv1.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("caclient: CreateCertificate: %w", err)
	}
	b, err := bundleFromChain(resp.GetCertChain(), key, roots, parseCerts(cfg.RootsPEM))
	if err != nil {
		return nil, err
	}
	if err := cfg.checkIdentity(b.Leaf); err != nil {
		return nil, err
	}
	b.IssuedAt = time.Now()
	return b, nil
}

// parseCerts returns the parsable CERTIFICATE blocks of pemBytes.
func parseCerts(pemBytes []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func bundleFromChain(chain []string, key *ecdsa.PrivateKey, roots *x509.CertPool, rootCerts []*x509.Certificate) (*Bundle, error) {
	if len(chain) == 0 {
		return nil, errors.New("caclient: CA returned an empty chain")
	}
	tc := tls.Certificate{PrivateKey: key}
	var certs []*x509.Certificate
	for i, p := range chain {
		rest := []byte(p)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("caclient: chain[%d]: %w", i, err)
			}
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("caclient: CA chain holds no certificate")
	}
	leaf := certs[0]
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return nil, errors.New("caclient: issued certificate is not for our key")
	}
	// The chain ends with the root: trust it, and send only leaf and
	// intermediates in handshakes.
	pool := roots.Clone()
	send := certs
	if last := certs[len(certs)-1]; len(certs) > 1 && last.IsCA && last.CheckSignatureFrom(last) == nil {
		pool.AddCert(last)
		send = certs[:len(certs)-1]
		if !slices.ContainsFunc(rootCerts, last.Equal) {
			rootCerts = append(slices.Clip(rootCerts), last)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range send {
		tc.Certificate = append(tc.Certificate, c.Raw)
		if c != leaf {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("caclient: issued certificate does not verify: %w", err)
	}
	tc.Leaf = leaf
	return &Bundle{Cert: tc, Leaf: leaf, Roots: pool, RootCerts: rootCerts}, nil
}

// VerifyPeer returns a tls.Config.VerifyPeerCertificate callback (use it
// with InsecureSkipVerify: true, since workload certificates carry no DNS
// names) that checks the peer chain against roots() and that the leaf has a
// spiffe:// URI SAN. roots is called per handshake so rotated roots apply.
func VerifyPeer(roots func() *x509.CertPool) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("peer sent no certificate")
		}
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("peer certificate: %w", err)
			}
			certs = append(certs, c)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		for _, u := range certs[0].URIs {
			if u.Scheme == "spiffe" {
				return nil
			}
		}
		return errors.New("peer certificate has no SPIFFE ID")
	}
}
