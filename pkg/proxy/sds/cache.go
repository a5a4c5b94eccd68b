// Package sds is the proxy's secret cache and its local Secret Discovery
// Service, as Istio's agent runs them: the certificate rotator puts every
// new workload certificate into a Cache; the proxy's own TLS stack reads
// its certificate and roots from that Cache (ServerConfig, ClientConfig),
// and Server serves the same entries over
// envoy.service.secret.v3.SecretDiscoveryService on a Unix socket, so an
// Envoy next to the proxy can use them too: "default" (a tls.Secret with
// the certificate chain and private key) and "ROOTCA" (a validation
// context with the trusted roots, both roots during a root rotation
// overlap). Every Set pushes a new version to connected SDS clients.
package sds

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/ca/caclient"
)

// Secret names, as Istio's agent and the translator's SdsSecretConfigs
// name them.
const (
	WorkloadCertSecret = "default"
	RootCASecret       = "ROOTCA"
)

// ErrNoCertificate is returned by the TLS callbacks before the first Set.
var ErrNoCertificate = errors.New("sds: no workload certificate yet")

// entry is one cached secret with its content version.
type entry struct {
	secret  *tlsv3.Secret
	any     *anypb.Any // secret marshalled once per generation, shared by all streams
	version string     // hash of the content: unchanged roots keep their version
}

// state is one immutable generation of the cache.
type state struct {
	gen     int64
	cert    *tls.Certificate
	roots   *x509.CertPool
	secrets map[string]entry
	// changed is closed when a newer generation replaces this one.
	changed chan struct{}
}

// Cache holds the current workload certificate and roots, and the SDS
// secrets made from them. Safe for concurrent use; the zero value is not
// usable, call NewCache.
type Cache struct {
	mu  sync.Mutex // serializes Set
	cur atomic.Pointer[state]
}

// NewCache returns an empty cache (no secrets until the first Set).
func NewCache() *Cache {
	c := &Cache{}
	c.cur.Store(&state{changed: make(chan struct{})})
	return c
}

// Set makes b the current certificate: new handshakes use it and SDS
// clients receive the new secrets. Call it from
// caclient.RotatorOptions.OnRenew. On error the previous certificate stays.
func (c *Cache) Set(b *caclient.Bundle) error {
	if b == nil || len(b.Cert.Certificate) == 0 {
		return errors.New("sds: bundle without certificate")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(b.Cert.PrivateKey)
	if err != nil {
		return fmt.Errorf("sds: encode private key: %w", err)
	}
	var chain, roots []byte
	for _, der := range b.Cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, r := range b.RootCerts {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	secrets := map[string]entry{
		WorkloadCertSecret: {
			secret: &tlsv3.Secret{Name: WorkloadCertSecret, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(chain),
				PrivateKey:       inline(keyPEM),
			}}},
			version: contentVersion(chain, keyPEM),
		},
		RootCASecret: {
			secret: &tlsv3.Secret{Name: RootCASecret, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(roots),
			}}},
			version: contentVersion(roots),
		},
	}
	for n, e := range secrets {
		a, err := anypb.New(e.secret)
		if err != nil {
			return fmt.Errorf("sds: marshal %s: %w", n, err)
		}
		e.any = a
		secrets[n] = e
	}
	cert := b.Cert
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.cur.Load()
	c.cur.Store(&state{gen: old.gen + 1, cert: &cert, roots: b.Roots, secrets: secrets, changed: make(chan struct{})})
	close(old.changed) // after the Store: a woken reader sees the new state
	return nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func contentVersion(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// load returns the current generation without locking (per handshake).
func (c *Cache) load() *state { return c.cur.Load() }

// Version is the cache generation: 0 before the first Set, then one more
// per Set. SotW responses carry it as version_info.
func (c *Cache) Version() string { return strconv.FormatInt(c.load().gen, 10) }

// GetCertificate is a tls.Config.GetCertificate callback.
func (c *Cache) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s := c.load(); s.cert != nil {
		return s.cert, nil
	}
	return nil, ErrNoCertificate
}

// GetClientCertificate is a tls.Config.GetClientCertificate callback.
func (c *Cache) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.GetCertificate(nil)
}

// Roots returns the current trusted roots (empty before the first Set).
func (c *Cache) Roots() *x509.CertPool {
	if s := c.load(); s.roots != nil {
		return s.roots
	}
	return x509.NewCertPool()
}

// ServerConfig returns a mutual-TLS server config: the current
// certificate, and client certificates verified against the current roots
// with a SPIFFE ID required.
func (c *Cache) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		GetCertificate:        c.GetCertificate,
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: caclient.VerifyPeer(c.Roots),
	}
}

// ClientConfig returns a mutual-TLS client config presenting the current
// certificate and verifying the server against the current roots and a
// SPIFFE ID (workload certificates carry no DNS names).
func (c *Cache) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		GetClientCertificate:  c.GetClientCertificate,
		InsecureSkipVerify:    true, // verified by VerifyPeerCertificate below
		VerifyPeerCertificate: caclient.VerifyPeer(c.Roots),
	}
}
