// Package credentials resolves Gateway TLS credentialNames for the
// translator (translate.Input.Credentials) and tells the xDS server when
// they change, so that gateways are re-pushed without waiting for another
// change: Dir reads a watched directory (embedded mode), and
// pkg/kube/credentials reads Kubernetes Secrets.
package credentials

import (
	"sync"

	"github.com/weftmesh/weft/pkg/xds/translate"
)

// Source resolves credentialNames. Implementations are safe for
// concurrent use.
type Source interface {
	// Lookup returns the credential credentialName name resolves to for a
	// gateway proxy in namespace ns.
	Lookup(ns, name string) (translate.Credential, bool)
	// Version changes whenever a credential may have changed; the xDS
	// server's translation cache keys on it.
	Version() uint64
	// Subscribe calls fn (without locks held) after each change, until
	// cancel is called.
	Subscribe(fn func()) (cancel func())
}

// Notifier is the version counter and subscriber list of a Source; embed
// it and call Changed after a change.
type Notifier struct {
	mu      sync.Mutex
	version uint64
	next    int
	subs    map[int]func()
}

// Version implements Source.
func (n *Notifier) Version() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.version
}

// Subscribe implements Source.
func (n *Notifier) Subscribe(fn func()) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[int]func(){}
	}
	id := n.next
	n.next++
	n.subs[id] = fn
	return func() {
		n.mu.Lock()
		delete(n.subs, id)
		n.mu.Unlock()
	}
}

// Changed bumps the version and calls the subscribers.
func (n *Notifier) Changed() {
	n.mu.Lock()
	n.version++
	fns := make([]func(), 0, len(n.subs))
	for _, fn := range n.subs {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Chain looks a name up in each source in turn (e.g. Kubernetes Secrets,
// then --credentials-dir); its version is the sum of theirs.
type Chain []Source

// Lookup implements Source.
func (c Chain) Lookup(ns, name string) (translate.Credential, bool) {
	for _, s := range c {
		if cr, ok := s.Lookup(ns, name); ok {
			return cr, true
		}
	}
	return translate.Credential{}, false
}

// Version implements Source.
func (c Chain) Version() uint64 {
	var v uint64
	for _, s := range c {
		v += s.Version()
	}
	return v
}

// Subscribe implements Source.
func (c Chain) Subscribe(fn func()) func() {
	cancels := make([]func(), 0, len(c))
	for _, s := range c {
		cancels = append(cancels, s.Subscribe(fn))
	}
	return func() {
		for _, cancel := range cancels {
			cancel()
		}
	}
}

var _ Source = Chain(nil)
