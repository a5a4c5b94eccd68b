// Package oidc resolves a JWT issuer's jwks_uri from its OpenID Connect
// discovery document (ISSUER/.well-known/openid-configuration), as istiod
// does for a RequestAuthentication jwtRule that names an issuer but neither
// jwks nor jwksUri.
//
// Resolution never blocks translation: Lookup answers from a cache and, on a
// miss, starts a fetch in the background; when the answer arrives (or
// changes) the Resolver's version moves and subscribers (the xDS server) are
// called, so proxies get the resolved URI in the next push. Until then, and
// while the document cannot be fetched, the translator gives the provider no
// keys, so its tokens are rejected (401): a fetch failure is logged and
// retried, never a silent allow.
package oidc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/pkg/credentials"
)

// Resolver caches issuer → jwks_uri. The zero value is not usable; call New.
type Resolver struct {
	credentials.Notifier // version + subscribers

	client  *http.Client
	log     *slog.Logger
	refresh time.Duration // re-fetch a resolved issuer this often
	retry   time.Duration // first retry after a failure (doubles, capped at refresh)
	ctx     context.Context

	mu      sync.Mutex
	issuers map[string]*entry
}

type entry struct {
	uri    string // "" until resolved
	err    error  // last failure
	cancel context.CancelFunc
}

// Options configure a Resolver; zero values take the defaults.
type Options struct {
	// Client fetches the documents (default: 10 s timeout).
	Client *http.Client
	// Refresh is how often a resolved issuer is fetched again (default
	// 20 minutes, istiod's JWKS refresh interval).
	Refresh time.Duration
	// Retry is the first delay after a failed fetch (default 5 s, doubling
	// up to Refresh).
	Retry  time.Duration
	Logger *slog.Logger
}

// New returns a Resolver whose background fetches stop when ctx ends.
func New(ctx context.Context, o Options) *Resolver {
	r := &Resolver{client: o.Client, log: o.Logger, refresh: o.Refresh, retry: o.Retry, ctx: ctx, issuers: map[string]*entry{}}
	if r.client == nil {
		r.client = &http.Client{Timeout: 10 * time.Second}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.refresh <= 0 {
		r.refresh = 20 * time.Minute
	}
	if r.retry <= 0 {
		r.retry = 5 * time.Second
	}
	return r
}

// Lookup returns the issuer's jwks_uri if it has been resolved. On the first
// call for an issuer it starts resolving it in the background.
func (r *Resolver) Lookup(issuer string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.issuers[issuer]
	if !ok {
		ctx, cancel := context.WithCancel(r.ctx)
		e = &entry{cancel: cancel}
		r.issuers[issuer] = e
		go r.loop(ctx, issuer, e)
	}
	return e.uri, e.uri != ""
}

// Retain forgets the issuers keep rejects (no RequestAuthentication needs
// them any more): their background fetches stop, and a later Lookup
// starts over.
func (r *Resolver) Retain(keep func(issuer string) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for issuer, e := range r.issuers {
		if !keep(issuer) {
			e.cancel()
			delete(r.issuers, issuer)
		}
	}
}

// Len is how many issuers are being resolved.
func (r *Resolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.issuers)
}

// Err returns the last fetch failure for issuer (nil when resolved or not
// tried yet).
func (r *Resolver) Err(issuer string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.issuers[issuer]; ok {
		return e.err
	}
	return nil
}

// loop resolves issuer into e, then keeps it fresh until ctx ends (the
// Resolver's context, or Retain forgetting the issuer).
func (r *Resolver) loop(ctx context.Context, issuer string, e *entry) {
	delay := r.retry
	for {
		uri, err := Discover(ctx, r.client, issuer)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		changed := err == nil && uri != e.uri
		if err == nil {
			e.uri, e.err = uri, nil
		} else {
			e.err = err
		}
		r.mu.Unlock()
		next := r.refresh
		if err != nil {
			r.log.Warn("OpenID discovery failed; tokens of this issuer are rejected until it succeeds",
				"issuer", issuer, "err", err, "retry_in", delay)
			next = delay
			delay = min(2*delay, r.refresh)
		} else {
			delay = r.retry
			if changed {
				r.log.Info("OpenID discovery resolved jwks_uri", "issuer", issuer, "jwks_uri", uri)
			}
		}
		if changed {
			r.Changed()
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Discover fetches ISSUER/.well-known/openid-configuration and returns its
// jwks_uri (an absolute http(s) URL).
func Discover(ctx context.Context, c *http.Client, issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("issuer %q is not an http(s) URL, so it has no OpenID discovery document", issuer)
	}
	doc := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, doc, nil)
	if err != nil {
		return "", fmt.Errorf("%s: %w", doc, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", doc, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch %s: %s", doc, resp.Status)
	}
	var d struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&d); err != nil {
		return "", fmt.Errorf("%s: decode: %w", doc, err)
	}
	if d.JWKSURI == "" {
		return "", fmt.Errorf("%s: no jwks_uri", doc)
	}
	// OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the
	// one it was fetched for.
	if d.Issuer != "" && strings.TrimSuffix(d.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
		return "", fmt.Errorf("%s: issuer %q does not match %q", doc, d.Issuer, issuer)
	}
	ju, err := url.Parse(d.JWKSURI)
	if err != nil || (ju.Scheme != "https" && ju.Scheme != "http") || ju.Host == "" {
		return "", fmt.Errorf("%s: jwks_uri %q is not an absolute http(s) URL", doc, d.JWKSURI)
	}
	return d.JWKSURI, nil
}
