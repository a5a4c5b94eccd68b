package ca

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// DirCredentials returns a gateway credential lookup (translate.Input's
// Credentials) over the files in dir: credentialName NAME is read from
// NAME.crt and NAME.key, or from NAME/tls.crt and NAME/tls.key (the layout
// of a mounted kubernetes.io/tls Secret). A "NAMESPACE/NAME" or Istio's
// "kubernetes://NAME" reference uses its last part. Files are read on every
// lookup, so replaced certificates are served from the next push on. A
// missing, unreadable or invalid pair (the key must match the certificate)
// is logged and reported as not found.
func DirCredentials(dir string, log *slog.Logger) func(name string) (certPEM, keyPEM []byte, ok bool) {
	if log == nil {
		log = slog.Default()
	}
	return func(name string) ([]byte, []byte, bool) {
		cert, key, err := readCredential(dir, name)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				log.Warn("gateway credential unusable", "credentialName", name, "dir", dir, "err", err)
			}
			return nil, nil, false
		}
		return cert, key, true
	}
}

func readCredential(dir, name string) ([]byte, []byte, error) {
	name = strings.TrimPrefix(name, "kubernetes://")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `\`) {
		return nil, nil, fmt.Errorf("credentialName %q: %w", name, os.ErrNotExist)
	}
	pairs := [][2]string{
		{filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")},
		{filepath.Join(dir, name, "tls.crt"), filepath.Join(dir, name, "tls.key")},
	}
	for _, p := range pairs {
		cert, err := os.ReadFile(p[0])
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		key, err := os.ReadFile(p[1])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p[1], err)
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			return nil, nil, fmt.Errorf("%s, %s: %w", p[0], p[1], err)
		}
		return cert, key, nil
	}
	return nil, nil, fmt.Errorf("credentialName %q in %s: %w", name, dir, os.ErrNotExist)
}
