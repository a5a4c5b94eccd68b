package jwt

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// maxJWKSSize bounds a fetched JWKS document.
const maxJWKSSize = 1 << 20

// failureBackoff is how long a failed fetch is remembered before the next
// request retries it.
const failureBackoff = time.Second

// jwksCache fetches remote JWKS on demand and keeps them for their cache
// duration. A failed refresh keeps serving the previous keys (logged);
// with no keys at all, tokens fail (never a silent allow).
type jwksCache struct {
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	mu      sync.Mutex
	entries map[string]*jwksEntry
}

type jwksEntry struct {
	mu      sync.Mutex // serializes fetches of one URI
	set     jwk.Set
	expires time.Time
	failed  time.Time
	lastErr error
}

func newJWKSCache(c *http.Client, now func() time.Time, log *slog.Logger) *jwksCache {
	return &jwksCache{client: c, now: now, log: log, entries: map[string]*jwksEntry{}}
}

func (c *jwksCache) entry(uri string) *jwksEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[uri]
	if e == nil {
		e = &jwksEntry{}
		c.entries[uri] = e
	}
	return e
}

// get returns the key set of uri, fetching it when absent or expired.
func (c *jwksCache) get(ctx context.Context, uri string, timeout, ttl time.Duration) (jwk.Set, error) {
	e := c.entry(uri)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.now()
	if e.set != nil && now.Before(e.expires) {
		return e.set, nil
	}
	if !e.failed.IsZero() && now.Sub(e.failed) < failureBackoff {
		if e.set != nil {
			return e.set, nil
		}
		return nil, e.lastErr
	}
	set, err := c.fetch(ctx, uri, timeout)
	if err != nil {
		e.failed, e.lastErr = now, err
		if e.set != nil {
			c.log.Warn("jwks refresh failed; keeping previous keys", "uri", uri, "error", err)
			return e.set, nil
		}
		c.log.Warn("jwks fetch failed", "uri", uri, "error", err)
		return nil, err
	}
	e.set, e.expires, e.failed, e.lastErr = set, now.Add(ttl), time.Time{}, nil
	return set, nil
}

func (c *jwksCache) fetch(ctx context.Context, uri string, timeout time.Duration) (jwk.Set, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: status %s", uri, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	if len(b) > maxJWKSSize {
		return nil, fmt.Errorf("jwks %s: larger than %d bytes", uri, maxJWKSSize)
	}
	set, err := jwk.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", uri, err)
	}
	return set, nil
}
