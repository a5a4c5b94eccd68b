package demo

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/weftmesh/weft/pkg/ca"
)

// identity is the namespace and service account a workload's sidecar runs
// as; its workload certificate carries
// spiffe://cluster.local/ns/NS/sa/SA.
func identity(w Workload) (ns, sa string) {
	if w.AppPort == 0 {
		return "weft-system", "istio-ingressgateway-service-account"
	}
	return "default", "bookinfo-" + w.Service
}

// storeDir is the control plane's --data-dir (config.db, ca/).
func (m *mesh) storeDir() string { return filepath.Join(m.o.DataDir, "store") }

// caControlPlaneArgs turns the control plane's CA on (and with it mutual TLS
// in the translation) unless the demo runs plaintext.
func (m *mesh) caControlPlaneArgs() []string {
	if m.o.Plaintext {
		return nil
	}
	return []string{"--ca-address", m.plan.CA}
}

// issueTokens waits for the CA's root certificate and writes one join token
// per workload service account to DataDir/tokens/NS.SA (mode 0600), which
// the sidecars read with --ca-token-file.
func (m *mesh) issueTokens() error {
	if m.o.Plaintext {
		return nil
	}
	root := filepath.Join(m.storeDir(), "ca", "root-cert.pem")
	deadline := time.Now().Add(m.o.ReadyTimeout)
	for {
		_, err := os.Stat(root)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || time.Now().After(deadline) {
			return fmt.Errorf("CA root certificate %s: %w", root, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	store, err := ca.NewTokenStore(m.storeDir(), nil)
	if err != nil {
		return err
	}
	dir := filepath.Join(m.o.DataDir, "tokens")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, w := range append(append([]Workload(nil), m.plan.Workloads...), m.plan.Ingress) {
		ns, sa := identity(w)
		path := filepath.Join(dir, ns+"."+sa)
		if _, err := os.Stat(path); err == nil {
			continue // reviews v1/v2/v3 share one service account
		}
		tok, err := store.Create(ns, sa, 0)
		if err != nil {
			return fmt.Errorf("join token for %s/%s: %w", ns, sa, err)
		}
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("write join token: %w", err)
		}
	}
	return nil
}

// proxyCAArgs are a sidecar's or the gateway's CA credentials.
func (m *mesh) proxyCAArgs(w Workload) []string {
	if m.o.Plaintext {
		return nil
	}
	ns, sa := identity(w)
	return []string{"--ca-address", m.plan.CA,
		"--ca-root-cert", filepath.Join(m.storeDir(), "ca", "root-cert.pem"),
		"--ca-token-file", filepath.Join(m.o.DataDir, "tokens", ns+"."+sa)}
}
