package ca

import (
	"crypto/tls"
	"sync"
)

// ServingCertSource hands out the control plane's own serving certificate
// and re-issues it from the CA once half of its lifetime has passed (or
// after a root rotation), so a long-running control plane never serves an
// expired certificate. Safe for concurrent use.
type ServingCertSource struct {
	ca    *CA
	hosts []string

	mu   sync.Mutex
	cert *tls.Certificate
}

// NewServingCertSource issues the first certificate for hosts right away so
// configuration errors surface at start-up.
func (c *CA) NewServingCertSource(hosts []string) (*ServingCertSource, error) {
	s := &ServingCertSource{ca: c, hosts: append([]string(nil), hosts...)}
	if _, err := s.current(); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate is a tls.Config.GetCertificate callback.
func (s *ServingCertSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current()
}

// TLSConfig returns a server tls.Config using GetCertificate.
func (s *ServingCertSource) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.GetCertificate}
}

func (s *ServingCertSource) current() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.ca.opts.Clock()
	if s.cert != nil {
		leaf := s.cert.Leaf
		half := leaf.NotBefore.Add(backdate).Add(leaf.NotAfter.Sub(leaf.NotBefore.Add(backdate)) / 2)
		s.ca.mu.RLock()
		sameIssuer := leaf.CheckSignatureFrom(s.ca.cert) == nil
		s.ca.mu.RUnlock()
		if now.Before(half) && sameIssuer {
			return s.cert, nil
		}
	}
	c, err := s.ca.ServingCertificate(s.hosts)
	if err != nil {
		return nil, err
	}
	s.cert = &c
	return s.cert, nil
}
