package oidc

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// idp is a real OpenID provider's discovery endpoint on 127.0.0.1 whose
// answer the test can break and mend.
type idp struct {
	*httptest.Server
	broken atomic.Bool
	jwks   atomic.Value // string
	hits   atomic.Int32
}

func newIDP(t *testing.T) *idp {
	i := &idp{}
	i.jwks.Store("/keys")
	i.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i.hits.Add(1)
		if r.URL.Path != "/.well-known/openid-configuration" || i.broken.Load() {
			http.Error(w, "nope", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, i.URL, i.URL+i.jwks.Load().(string))
	}))
	t.Cleanup(i.Close)
	return i
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResolver(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	i := newIDP(t)
	i.broken.Store(true)
	r := New(ctx, Options{Refresh: 200 * time.Millisecond, Retry: 20 * time.Millisecond})
	kicks := atomic.Int32{}
	defer r.Subscribe(func() { kicks.Add(1) })()

	// First lookup: not known yet, fetched in the background; failures
	// are kept as an error and retried, and nothing is resolved.
	if uri, ok := r.Lookup(i.URL); ok {
		t.Fatalf("first lookup resolved %q at once", uri)
	}
	waitUntil(t, "a recorded failure", func() bool { return r.Err(i.URL) != nil })
	if !strings.Contains(r.Err(i.URL).Error(), "500") {
		t.Errorf("failure %v does not say what the server answered", r.Err(i.URL))
	}
	if _, ok := r.Lookup(i.URL); ok || kicks.Load() != 0 || r.Version() != 0 {
		t.Fatalf("a failed discovery resolved something (kicks %d, version %d)", kicks.Load(), r.Version())
	}
	// The provider comes back: resolved, subscribers told.
	i.broken.Store(false)
	waitUntil(t, "resolution", func() bool { _, ok := r.Lookup(i.URL); return ok })
	if uri, _ := r.Lookup(i.URL); uri != i.URL+"/keys" {
		t.Fatalf("jwks_uri %q", uri)
	}
	waitUntil(t, "a change notification", func() bool { return kicks.Load() == 1 })
	// A refresh with the same answer is no change; a new jwks_uri is.
	hits := i.hits.Load()
	waitUntil(t, "a refresh", func() bool { return i.hits.Load() > hits+1 })
	if kicks.Load() != 1 {
		t.Fatalf("unchanged refresh notified (%d)", kicks.Load())
	}
	i.jwks.Store("/keys-v2")
	waitUntil(t, "the new jwks_uri", func() bool { uri, _ := r.Lookup(i.URL); return uri == i.URL+"/keys-v2" })
	// A failure after success keeps the last good answer.
	i.broken.Store(true)
	hits = i.hits.Load()
	waitUntil(t, "a failed refresh", func() bool { return i.hits.Load() > hits && r.Err(i.URL) != nil })
	if uri, ok := r.Lookup(i.URL); !ok || uri != i.URL+"/keys-v2" {
		t.Fatalf("after a failed refresh: %q %v", uri, ok)
	}
}

func TestDiscoverRejects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/other/"):
			fmt.Fprint(w, `{"issuer":"https://evil.example.com","jwks_uri":"https://evil.example.com/keys"}`)
		case strings.HasPrefix(r.URL.Path, "/relative/"):
			fmt.Fprint(w, `{"jwks_uri":"/keys"}`)
		case strings.HasPrefix(r.URL.Path, "/none/"):
			fmt.Fprint(w, `{}`)
		case strings.HasPrefix(r.URL.Path, "/junk/"):
			fmt.Fprint(w, `not json`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct{ issuer, want string }{
		{"urn:example", "not an http(s) URL"},
		{srv.URL + "/other", "does not match"},
		{srv.URL + "/relative", "not an absolute http(s) URL"},
		{srv.URL + "/none", "no jwks_uri"},
		{srv.URL + "/junk", "decode"},
		{srv.URL + "/missing", "404"},
	} {
		_, err := Discover(context.Background(), srv.Client(), tc.issuer)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.issuer, err, tc.want)
		}
	}
}

// TestRetainForgets: an issuer no rule needs any more stops being fetched,
// the ones still needed keep refreshing.
func TestRetainForgets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone, kept := newIDP(t), newIDP(t)
	r := New(ctx, Options{Refresh: 20 * time.Millisecond, Retry: 20 * time.Millisecond})
	r.Lookup(gone.URL)
	r.Lookup(kept.URL)
	waitUntil(t, "both resolved", func() bool {
		_, a := r.Lookup(gone.URL)
		_, b := r.Lookup(kept.URL)
		return a && b
	})
	r.Retain(func(issuer string) bool { return issuer == kept.URL })
	if r.Len() != 1 {
		t.Fatalf("%d issuers after Retain, want 1", r.Len())
	}
	time.Sleep(30 * time.Millisecond) // a fetch in flight may still land
	goneHits, keptHits := gone.hits.Load(), kept.hits.Load()
	waitUntil(t, "refreshes of the kept issuer", func() bool { return kept.hits.Load() > keptHits+3 })
	if got := gone.hits.Load(); got != goneHits {
		t.Fatalf("a forgotten issuer was fetched %d more times", got-goneHits)
	}
}
