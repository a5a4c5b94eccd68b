package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Sentinel errors callers map to status codes at the edge.
var (
	// ErrBadCSR reports an unparsable CSR or one whose signature is wrong.
	ErrBadCSR = errors.New("invalid certificate signing request")
	// ErrBadCACerts reports a cacerts directory that cannot be used.
	ErrBadCACerts = errors.New("invalid plug-in CA certificates")
	// ErrRotateUnsupported is returned by Rotate for a plug-in CA, whose root
	// is owned by the user.
	ErrRotateUnsupported = errors.New("root rotation is not supported with a plug-in (cacerts) CA")
)

const (
	// DefaultTTL is the workload certificate lifetime when none is asked for.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxTTL caps requested lifetimes.
	DefaultMaxTTL = 90 * 24 * time.Hour
	// RootTTL is the lifetime of a generated self-signed root.
	RootTTL = 10 * 365 * 24 * time.Hour
	// backdate is subtracted from NotBefore to absorb clock skew.
	backdate = time.Minute
)

// File names inside <DataDir>/ca and inside a cacerts directory.
const (
	rootCertFile    = "root-cert.pem"
	rootKeyFile     = "root-key.pem"
	trustBundleFile = "trust-bundle.pem"
	caCertFile      = "ca-cert.pem"
	caKeyFile       = "ca-key.pem"
	certChainFile   = "cert-chain.pem"
)

// Options configures New.
type Options struct {
	// DataDir is the control plane's data directory; the self-signed root is
	// kept in DataDir/ca (root-cert.pem, root-key.pem mode 0600,
	// trust-bundle.pem). Required unless CACertsDir is set.
	DataDir string
	// CACertsDir, when set, names an Istio-style plug-in CA directory holding
	// ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem. It wins over
	// DataDir.
	CACertsDir string
	// TrustDomain of issued SPIFFE IDs. Default "cluster.local".
	TrustDomain string
	// DefaultTTL is the leaf lifetime when a request asks for none. Default 24h.
	DefaultTTL time.Duration
	// MaxTTL caps requested lifetimes (longer requests are shortened).
	// Default 90 days.
	MaxTTL time.Duration
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives CA events. Default slog.Default().
	Logger *slog.Logger
}

// CA signs workload certificates. It is safe for concurrent use.
type CA struct {
	opts   Options
	log    *slog.Logger
	dir    string // DataDir/ca, empty for plug-in mode
	plugin bool

	mu    sync.RWMutex
	key   crypto.Signer
	cert  *x509.Certificate   // signing certificate
	chain []*x509.Certificate // signing cert's issuers, ending with its root (excludes cert for self-signed)
	roots []*x509.Certificate // trusted roots, newest last
}

// New loads or creates the CA described by opts.
func New(opts Options) (*CA, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	if opts.DefaultTTL <= 0 {
		opts.DefaultTTL = DefaultTTL
	}
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.DefaultTTL > opts.MaxTTL {
		opts.DefaultTTL = opts.MaxTTL
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Validate the trust domain once, up front.
	if _, err := SPIFFEID(opts.TrustDomain, Identity{Namespace: "default", ServiceAccount: "default"}); err != nil {
		return nil, err
	}
	c := &CA{opts: opts, log: opts.Logger.With("component", "ca")}
	switch {
	case opts.CACertsDir != "":
		c.plugin = true
		if err := c.loadPlugin(opts.CACertsDir); err != nil {
			return nil, err
		}
		c.log.Info("loaded plug-in CA", "dir", opts.CACertsDir, "subject", c.cert.Subject.String(), "notAfter", c.cert.NotAfter)
	case opts.DataDir != "":
		c.dir = filepath.Join(opts.DataDir, "ca")
		if err := c.loadOrCreateRoot(); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("ca: Options.DataDir or Options.CACertsDir is required")
	}
	return c, nil
}

// TrustDomain returns the trust domain of issued identities.
func (c *CA) TrustDomain() string { return c.opts.TrustDomain }

// Roots returns the trusted roots, oldest first, newest (the signing one) last.
func (c *CA) Roots() []*x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]*x509.Certificate(nil), c.roots...)
}

// RootsPEM returns Roots() PEM-encoded and concatenated.
func (c *CA) RootsPEM() []byte {
	return encodeCerts(c.Roots())
}

// RootPool returns a pool of all trusted roots.
func (c *CA) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.Roots() {
		p.AddCert(r)
	}
	return p
}

func (c *CA) loadOrCreateRoot() error {
	certPEM, certErr := os.ReadFile(filepath.Join(c.dir, rootCertFile))
	keyPEM, keyErr := os.ReadFile(filepath.Join(c.dir, rootKeyFile))
	switch {
	case certErr == nil && keyErr == nil:
		cert, err := parseOneCert(certPEM)
		if err != nil {
			return fmt.Errorf("ca: %s: %w", filepath.Join(c.dir, rootCertFile), err)
		}
		key, err := parseKey(keyPEM)
		if err != nil {
			return fmt.Errorf("ca: %s: %w", filepath.Join(c.dir, rootKeyFile), err)
		}
		if err := keyMatches(cert, key); err != nil {
			return fmt.Errorf("ca: %s: %w", c.dir, err)
		}
		now := c.opts.Clock()
		if now.After(cert.NotAfter) {
			return fmt.Errorf("ca: root in %s expired at %s; move it away to generate a new one", c.dir, cert.NotAfter.Format(time.RFC3339))
		}
		roots := []*x509.Certificate{cert}
		if b, err := os.ReadFile(filepath.Join(c.dir, trustBundleFile)); err == nil {
			all, err := parseCerts(b)
			if err != nil {
				return fmt.Errorf("ca: %s: %w", filepath.Join(c.dir, trustBundleFile), err)
			}
			roots = roots[:0]
			for _, r := range all {
				if !r.Equal(cert) && now.Before(r.NotAfter) {
					roots = append(roots, r)
				}
			}
			roots = append(roots, cert)
		}
		c.key, c.cert, c.chain, c.roots = key, cert, nil, roots
		c.log.Info("loaded CA root", "dir", c.dir, "notAfter", cert.NotAfter, "trustedRoots", len(roots))
		return nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		cert, key, err := c.newRoot()
		if err != nil {
			return err
		}
		if err := c.persistRoot(cert, key, []*x509.Certificate{cert}); err != nil {
			return err
		}
		c.key, c.cert, c.chain, c.roots = key, cert, nil, []*x509.Certificate{cert}
		c.log.Info("generated CA root", "dir", c.dir, "notAfter", cert.NotAfter)
		return nil
	default:
		return fmt.Errorf("ca: %s must hold both %s and %s: %w", c.dir, rootCertFile, rootKeyFile, errors.Join(certErr, keyErr))
	}
}

func (c *CA) newRoot() (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	now := c.opts.Clock()
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{c.opts.TrustDomain}, CommonName: "weft root CA " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: parse root: %w", err)
	}
	return cert, key, nil
}

func (c *CA) persistRoot(cert *x509.Certificate, key crypto.Signer, bundle []*x509.Certificate) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("ca: marshal root key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(c.dir, rootKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(c.dir, rootCertFile), encodeCerts([]*x509.Certificate{cert}), 0o644); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.dir, trustBundleFile), encodeCerts(bundle), 0o644)
}

// Rotate creates a new self-signed root and signs with it from now on. The
// previous roots stay trusted (they are still in Roots and the persisted
// trust bundle) until they expire or DropRoot removes them, so certificates
// they issued keep verifying during the overlap.
func (c *CA) Rotate() error {
	if c.plugin {
		return ErrRotateUnsupported
	}
	cert, key, err := c.newRoot()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	roots := append(append([]*x509.Certificate(nil), c.roots...), cert)
	if err := c.persistRoot(cert, key, roots); err != nil {
		return err
	}
	c.key, c.cert, c.chain, c.roots = key, cert, nil, roots
	c.log.Info("rotated CA root", "trustedRoots", len(roots), "notAfter", cert.NotAfter)
	return nil
}

// DropRoot stops trusting root (ending a rotation overlap). The signing root
// cannot be dropped.
func (c *CA) DropRoot(root *x509.Certificate) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if root.Equal(c.cert) {
		return errors.New("ca: cannot drop the signing root")
	}
	var keep []*x509.Certificate
	for _, r := range c.roots {
		if !r.Equal(root) {
			keep = append(keep, r)
		}
	}
	if !c.plugin {
		if err := writeFileAtomic(filepath.Join(c.dir, trustBundleFile), encodeCerts(keep), 0o644); err != nil {
			return err
		}
	}
	c.roots = keep
	return nil
}

// loadPlugin loads and verifies an Istio-style cacerts directory.
func (c *CA) loadPlugin(dir string) error {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCACerts, err)
		}
		return b, nil
	}
	certPEM, err := read(caCertFile)
	if err != nil {
		return err
	}
	keyPEM, err := read(caKeyFile)
	if err != nil {
		return err
	}
	rootPEM, err := read(rootCertFile)
	if err != nil {
		return err
	}
	chainPEM, err := read(certChainFile)
	if err != nil {
		return err
	}
	cert, err := parseOneCert(certPEM)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCACerts, caCertFile, err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCACerts, caKeyFile, err)
	}
	if err := keyMatches(cert, key); err != nil {
		return fmt.Errorf("%w: %s does not match %s: %w", ErrBadCACerts, caKeyFile, caCertFile, err)
	}
	roots, err := parseCerts(rootPEM)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCACerts, rootCertFile, err)
	}
	chain, err := parseCerts(chainPEM)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCACerts, certChainFile, err)
	}
	now := c.opts.Clock()
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: %s is not a CA certificate (needs basicConstraints CA:TRUE and keyCertSign)", ErrBadCACerts, caCertFile)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		if now.After(r.NotAfter) {
			return fmt.Errorf("%w: root %q in %s expired at %s", ErrBadCACerts, r.Subject.String(), filepath.Join(dir, rootCertFile), r.NotAfter.Format(time.RFC3339))
		}
		if now.Before(r.NotBefore) {
			return fmt.Errorf("%w: root %q in %s is not valid before %s", ErrBadCACerts, r.Subject.String(), filepath.Join(dir, rootCertFile), r.NotBefore.Format(time.RFC3339))
		}
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, ch := range chain {
		if ch.Equal(cert) {
			continue
		}
		isRoot := false
		for _, r := range roots {
			isRoot = isRoot || r.Equal(ch)
		}
		if isRoot {
			continue
		}
		inter.AddCert(ch)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return fmt.Errorf("%w: %s does not chain to %s: %w", ErrBadCACerts, caCertFile, rootCertFile, err)
	}
	// Keep the verified chain: the issuers up to and including the root.
	c.key, c.cert, c.chain, c.roots = key, cert, chains[0][1:], roots
	return nil
}

// Sign issues a leaf certificate for identity from a PEM CSR. Whatever
// subject and SANs the CSR asks for are ignored: the leaf has exactly one
// URI SAN, spiffe://<td>/ns/<ns>/sa/<sa>. ttl <= 0 means Options.DefaultTTL;
// longer than MaxTTL is shortened, and the leaf never outlives its issuer.
// The result is PEM certificates, leaf first and root last.
func (c *CA) Sign(csrPEM []byte, identity Identity, ttl time.Duration) ([]string, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE REQUEST block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	sid, err := SPIFFEID(c.opts.TrustDomain, identity)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = c.opts.DefaultTTL
	}
	if ttl > c.opts.MaxTTL {
		ttl = c.opts.MaxTTL
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	c.mu.RLock()
	key, issuer, chain := c.key, c.cert, c.chain
	c.mu.RUnlock()

	now := c.opts.Clock()
	notAfter := now.Add(ttl)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{sid.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, csr.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign %s: %w", sid, err)
	}
	out := make([]string, 0, 2+len(chain))
	out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	out = append(out, string(encodeCerts([]*x509.Certificate{issuer})))
	for _, ch := range chain {
		out = append(out, string(encodeCerts([]*x509.Certificate{ch})))
	}
	c.log.Debug("signed certificate", "id", sid.String(), "notAfter", notAfter, "serial", serial.Text(16))
	return out, nil
}

// ServingCertificate issues a TLS serving certificate for the control plane
// itself (for example the xDS+CA port 15012) with the given DNS names and IP
// addresses as SANs, valid for Options.DefaultTTL. The returned certificate
// carries its chain up to the root.
func (c *CA) ServingCertificate(hosts []string) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("ca: serving certificate needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: serving key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	c.mu.RLock()
	caKey, issuer, chain := c.key, c.cert, c.chain
	c.mu.RUnlock()
	now := c.opts.Clock()
	notAfter := now.Add(c.opts.DefaultTTL)
	if notAfter.After(issuer.NotAfter) {
		notAfter = issuer.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("ca: serving certificate: %w", err)
	}
	tc := tls.Certificate{Certificate: [][]byte{der, issuer.Raw}, PrivateKey: key, Leaf: leaf}
	for _, ch := range chain {
		tc.Certificate = append(tc.Certificate, ch.Raw)
	}
	return tc, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

func parseOneCert(b []byte) (*x509.Certificate, error) {
	cs, err := parseCerts(b)
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM private key block")
	}
	var k any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key type %T cannot sign", k)
	}
	return s, nil
}

func keyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return errors.New("private key does not match certificate")
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
