package credentials

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/weftmesh/weft/pkg/xds/translate"
)

// Dir is a Source over the files in a directory (`weft control-plane
// --credentials-dir`): credentialName NAME is NAME.crt + NAME.key, or
// NAME/tls.crt + NAME/tls.key (the layout of a mounted kubernetes.io/tls
// Secret). The CA bundle for MUTUAL servers is NAME.ca.crt or NAME/ca.crt,
// else NAME-cacert.crt or NAME-cacert/ca.crt (Istio's separate
// NAME-cacert Secret). A "NAMESPACE/NAME" or Istio's "kubernetes://NAME"
// reference uses its last part; the gateway's namespace is not used.
// Files are read on every lookup; Run watches the directory so that a
// replaced file bumps Version and notifies subscribers. A missing,
// unreadable or invalid pair (the key must match the certificate) is
// logged and reported as not found.
type Dir struct {
	Notifier
	dir string
	log *slog.Logger
	// Debounce is the quiet time after a file event before subscribers
	// are told (default 100 ms): writing a pair is several events.
	Debounce time.Duration
}

// NewDir returns a Dir over dir; log may be nil.
func NewDir(dir string, log *slog.Logger) *Dir {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Dir{dir: dir, log: log, Debounce: 100 * time.Millisecond}
}

// Lookup implements Source.
func (d *Dir) Lookup(_, name string) (translate.Credential, bool) {
	cr, err := readCredential(d.dir, name)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("gateway credential unusable", "credentialName", name, "dir", d.dir, "err", err)
		}
		return translate.Credential{}, false
	}
	return cr, true
}

// Run watches the directory and its subdirectories until ctx ends.
func (d *Dir) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("credentials dir %s: watch: %w", d.dir, err)
	}
	defer w.Close()
	if err := w.Add(d.dir); err != nil {
		// Lookups still read the files; only change pushes are lost.
		d.log.Warn("credentials dir not watched: changed files are served from the next push only", "dir", d.dir, "err", err)
		<-ctx.Done()
		return nil
	}
	if ents, err := os.ReadDir(d.dir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				_ = w.Add(filepath.Join(d.dir, e.Name()))
			}
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Has(fsnotify.Create) {
				// A new NAME/ directory (or a Kubernetes ..data swap).
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					_ = w.Add(ev.Name)
				}
			}
			timer.Reset(d.Debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			d.log.Warn("credentials dir watch", "dir", d.dir, "err", err)
			timer.Reset(d.Debounce)
		case <-timer.C:
			d.log.Info("gateway credentials changed", "dir", d.dir)
			d.Changed()
		}
	}
}

func readCredential(dir, name string) (translate.Credential, error) {
	name = strings.TrimPrefix(name, "kubernetes://")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `\`) {
		return translate.Credential{}, fmt.Errorf("credentialName %q: %w", name, os.ErrNotExist)
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
			return translate.Credential{}, err
		}
		key, err := os.ReadFile(p[1])
		if err != nil {
			return translate.Credential{}, fmt.Errorf("%s: %w", p[1], err)
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			return translate.Credential{}, fmt.Errorf("%s, %s: %w", p[0], p[1], err)
		}
		cr := translate.Credential{Cert: cert, Key: key}
		for _, ca := range []string{name + ".ca.crt", filepath.Join(name, "ca.crt"), name + "-cacert.crt", filepath.Join(name+"-cacert", "ca.crt")} {
			if b, err := os.ReadFile(filepath.Join(dir, ca)); err == nil {
				cr.CA = b
				break
			}
		}
		return cr, nil
	}
	return translate.Credential{}, fmt.Errorf("credentialName %q in %s: %w", name, dir, os.ErrNotExist)
}

var _ Source = (*Dir)(nil)
