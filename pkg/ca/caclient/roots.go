package caclient

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// ParseRoots parses a PEM bundle of trusted roots and refuses it if it
// holds no certificate, a certificate that is not a CA, or one that is
// expired or not yet valid at now: a proxy must not silently trust (or
// fail handshakes against) a dead root.
func ParseRoots(pemBytes []byte, now time.Time) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("root %d: %w", len(out)+1, err)
		}
		switch {
		case !c.IsCA:
			return nil, fmt.Errorf("root %q is not a CA certificate", c.Subject.String())
		case now.After(c.NotAfter):
			return nil, fmt.Errorf("root %q expired at %s", c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(c.NotBefore):
			return nil, fmt.Errorf("root %q is not valid before %s", c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339))
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}
