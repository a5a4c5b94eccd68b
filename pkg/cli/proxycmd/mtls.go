package proxycmd

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/pkg/ca/caclient"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/sds"
)

// proxyMTLSFlags are weft proxy's workload-certificate flags.
type proxyMTLSFlags struct {
	addr, rootCert, token, tokenFile string
	wait                             time.Duration
	// sdsSocket is where the local SDS server listens; "" serves none,
	// sdsAuto is resolved by resolveSDSSocket.
	sdsSocket string
	// sdsDefault: sdsSocket is the default path, so a failure to listen
	// there is logged instead of stopping the proxy.
	sdsDefault bool
	// rootPoll is how often --ca-root-cert is checked for a new trust
	// bundle (default 10s).
	rootPoll time.Duration
}

// sdsAuto is --sds-socket's default: a per-workload socket under the
// proxy's working directory (several proxies may share one directory).
const sdsAuto = "auto"

// resolveSDSSocket turns --sds-socket auto into
// ./var/run/weft/NAMESPACE.WORKLOAD/sds.sock, Weft's counterpart of Istio's
// ./var/run/secrets/workload-spiffe-uds/socket.
func (m *proxyMTLSFlags) resolveSDSSocket(namespace, workload string) {
	if m.sdsSocket == sdsAuto {
		m.sdsSocket = filepath.Join("var", "run", "weft", namespace+"."+workload, "sds.sock")
		m.sdsDefault = true
	}
}

func (m *proxyMTLSFlags) register(f *pflag.FlagSet) {
	f.StringVar(&m.addr, "ca-address", "", "control plane CA HOST:PORT (e.g. 127.0.0.1:15012); with it the proxy gets a SPIFFE workload certificate and speaks mutual TLS to other sidecars")
	f.StringVar(&m.rootCert, "ca-root-cert", "", "PEM trust bundle the CA's serving certificate chains to (the control plane's <data-dir>/ca/root-cert.pem); re-read every 10s, a change renews the workload certificate and replaces the trusted roots")
	f.StringVar(&m.token, "ca-token", "", "join token from 'weft token create' (its identity is the certificate's)")
	f.StringVar(&m.tokenFile, "ca-token-file", "", "file holding the join token")
	f.DurationVar(&m.wait, "ca-wait", 30*time.Second, "how long to wait for the first workload certificate")
	f.StringVar(&m.sdsSocket, "sds-socket", sdsAuto, "Unix socket of the local SDS server (envoy.service.secret.v3) serving the workload certificate as \"default\" and the roots as \"ROOTCA\" (with --ca-address); auto is ./var/run/weft/NAMESPACE.WORKLOAD/sds.sock, empty disables")
}

// start returns nil without --ca-address; otherwise it runs a certificate
// rotator until ctx ends and returns it once it holds a certificate.
//
// namespace and serviceAccount are the proxy's claimed identity: a
// certificate for another one (the token proves a different service
// account) stops the start-up with exit code 2.
func (m *proxyMTLSFlags) start(ctx context.Context, log *slog.Logger, namespace, serviceAccount string) (proxy.WorkloadCerts, error) {
	if m.addr == "" {
		if m.rootCert != "" || m.token != "" || m.tokenFile != "" {
			return nil, &ExitError{Code: 2, Err: errors.New("--ca-root-cert/--ca-token need --ca-address")}
		}
		return nil, nil
	}
	if m.rootCert == "" {
		return nil, &ExitError{Code: 2, Err: errors.New("--ca-address needs --ca-root-cert")}
	}
	roots, err := os.ReadFile(m.rootCert)
	if err != nil {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("--ca-root-cert: %w", err)}
	}
	if _, err := caclient.ParseRoots(roots, time.Now()); err != nil {
		return nil, &ExitError{Code: 2, Err: fmt.Errorf("--ca-root-cert %s: %w", m.rootCert, err)}
	}
	tok := m.token
	if m.tokenFile != "" {
		b, err := os.ReadFile(m.tokenFile)
		if err != nil {
			return nil, &ExitError{Code: 2, Err: fmt.Errorf("--ca-token-file: %w", err)}
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, &ExitError{Code: 2, Err: errors.New("--ca-address needs --ca-token or --ca-token-file")}
	}
	cfg := caclient.Config{Addr: m.addr, RootsPEM: roots, Token: tok, ExpectNamespace: namespace, ExpectServiceAccount: serviceAccount}
	mismatch := make(chan error, 1)
	// The trust bundle file changes during a root rotation (Kubernetes
	// updates the mounted istio-ca-root-cert ConfigMap in place): every
	// fetch uses its latest valid content, so a new root is trusted and a
	// dropped one is no longer, without a restart.
	trust := &rootsFile{path: m.rootCert, pem: roots, log: log}
	// One source of truth: the proxy's TLS stack and the SDS server both
	// read the cache the rotator fills.
	cache := sds.NewCache()
	r := caclient.NewRotator(caclient.RotatorOptions{
		Fetch: func(ctx context.Context) (*caclient.Bundle, error) {
			c := cfg
			c.RootsPEM = trust.current()
			if m.tokenFile != "" {
				// Re-read on every renewal: Kubernetes rotates projected
				// service-account tokens in place (they expire).
				if b, err := os.ReadFile(m.tokenFile); err == nil && len(strings.TrimSpace(string(b))) > 0 {
					c.Token = strings.TrimSpace(string(b))
				}
			}
			b, err := caclient.Fetch(ctx, c)
			if _, ok := errors.AsType[*caclient.IdentityMismatchError](err); ok {
				select {
				case mismatch <- err:
				default:
				}
			}
			return b, err
		},
		Logger: log.With("component", "cert-rotator"),
		OnRenew: func(b *caclient.Bundle) {
			if err := cache.Set(b); err != nil {
				log.Error("workload certificate not installed", "err", err)
			}
		},
	})
	go func() {
		if err := r.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("certificate rotator stopped", "err", err)
		}
	}()
	go trust.watch(ctx, cmp.Or(m.rootPoll, 10*time.Second), r.RenewNow)
	t := time.NewTimer(m.wait)
	defer t.Stop()
	select {
	case <-r.Ready():
		log.Info("workload certificate issued", "spiffe_id", r.Current().Leaf.URIs[0].String(), "expires", r.Current().Leaf.NotAfter)
		if err := m.serveSDS(ctx, log, cache); err != nil {
			return nil, err
		}
		return cache, nil
	case err := <-mismatch:
		return nil, &ExitError{Code: 2, Err: err}
	case <-t.C:
		return nil, fmt.Errorf("no workload certificate from %s after %s (%d failed attempts)", m.addr, m.wait, r.Failures())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// serveSDS starts the SDS server on m.sdsSocket until ctx ends. A failure
// to listen on the default path is logged (the proxy's own mTLS does not
// need SDS); on a path given with --sds-socket it is a usage error.
func (m *proxyMTLSFlags) serveSDS(ctx context.Context, log *slog.Logger, cache *sds.Cache) error {
	if m.sdsSocket == "" {
		return nil
	}
	lis, err := sds.Listen(m.sdsSocket)
	if err != nil {
		if m.sdsDefault {
			log.Warn("SDS server not started", "err", err)
			return nil
		}
		return &ExitError{Code: 2, Err: fmt.Errorf("--sds-socket: %w", err)}
	}
	log = log.With("component", "sds")
	go func() {
		if err := sds.NewServer(cache, log).Serve(ctx, lis); err != nil {
			log.Error("SDS server stopped", "err", err)
		}
	}()
	log.Info("SDS server listening", "socket", m.sdsSocket)
	return nil
}

// rootsFile is --ca-root-cert: the last valid trust bundle read from it.
type rootsFile struct {
	path    string
	log     *slog.Logger
	mu      sync.Mutex
	pem     []byte
	lastErr string // logged once, not every poll
}

func (f *rootsFile) current() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pem
}

// reload reads the file and reports whether it holds a new valid bundle.
// Unreadable, empty or invalid content (e.g. an expired root) keeps the
// last good bundle and is logged.
func (f *rootsFile) reload() bool {
	b, err := os.ReadFile(f.path)
	if err == nil {
		_, err = caclient.ParseRoots(b, time.Now())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		if err.Error() != f.lastErr {
			f.lastErr = err.Error()
			f.log.Warn("--ca-root-cert not reloaded; keeping the last good roots", "path", f.path, "err", err)
		}
		return false
	}
	f.lastErr = ""
	if bytes.Equal(b, f.pem) {
		return false
	}
	f.pem = b
	return true
}

// watch polls the file every interval and calls changed after it took a
// new bundle.
func (f *rootsFile) watch(ctx context.Context, interval time.Duration, changed func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if f.reload() {
				f.log.Info("trusted roots changed; renewing the workload certificate", "path", f.path)
				changed()
			}
		}
	}
}
