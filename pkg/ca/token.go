package ca

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TokenPrefix starts every join token.
const TokenPrefix = "weft1."

// TokenFile is the token store's file name inside DataDir/ca.
const TokenFile = "tokens.json"

// Authentication errors; the gRPC service maps them to Unauthenticated.
var (
	ErrInvalidToken = errors.New("invalid token")
	ErrTokenExpired = errors.New("token expired")
)

// Authenticator proves a caller's identity from a credential (a bearer
// token). Implementations must be safe for concurrent use. The TokenStore is
// the embedded-mode implementation; a Kubernetes TokenReview one can plug in
// for clusters.
type Authenticator interface {
	Authenticate(ctx context.Context, credential string) (Identity, error)
}

var _ Authenticator = (*TokenStore)(nil)

// TokenStore keeps join tokens per service account in DataDir/ca/tokens.json.
// Only SHA-256 hashes of tokens are stored. The file is re-read when a token
// is not found, so tokens created by another process (`weft token create`)
// work without a restart. Safe for concurrent use.
type TokenStore struct {
	path  string
	clock func() time.Time

	mu      sync.Mutex
	entries map[string]tokenEntry // hex sha256 -> entry
	stamp   fileStamp             // of the file when entries were read
}

// fileStamp detects changes by other processes without re-reading the file
// on every unknown token.
type fileStamp struct {
	mod  time.Time
	size int64
}

type tokenEntry struct {
	Hash      string    `json:"hash"`
	Identity  Identity  `json:"identity"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

type tokenFile struct {
	Tokens []tokenEntry `json:"tokens"`
}

// NewTokenStore opens (or starts) the token store under dataDir. clock may be
// nil for time.Now.
func NewTokenStore(dataDir string, clock func() time.Time) (*TokenStore, error) {
	if dataDir == "" {
		return nil, errors.New("ca: token store needs a data dir")
	}
	if clock == nil {
		clock = time.Now
	}
	s := &TokenStore{path: filepath.Join(dataDir, "ca", TokenFile), clock: clock}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *TokenStore) loadLocked() error {
	st, err := os.Stat(s.path)
	if errors.Is(err, os.ErrNotExist) {
		s.entries, s.stamp = map[string]tokenEntry{}, fileStamp{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("ca: read token store: %w", err)
	}
	stamp := fileStamp{mod: st.ModTime(), size: st.Size()}
	if s.entries != nil && stamp == s.stamp {
		return nil // unchanged since the last read
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("ca: read token store: %w", err)
	}
	var f tokenFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("ca: parse token store %s: %w", s.path, err)
	}
	m := make(map[string]tokenEntry, len(f.Tokens))
	for _, e := range f.Tokens {
		m[e.Hash] = e
	}
	s.entries, s.stamp = m, stamp
	return nil
}

// Create makes a new token for ns/sa valid for ttl (0 = never expires) and
// returns it. The token itself is not stored; only its hash is.
func (s *TokenStore) Create(ns, sa string, ttl time.Duration) (string, error) {
	id := Identity{Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return "", err
	}
	if ttl < 0 {
		return "", fmt.Errorf("ca: token ttl %s is negative", ttl)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("ca: token: %w", err)
	}
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	now := s.clock()
	e := tokenEntry{Hash: hashToken(tok), Identity: id, CreatedAt: now.UTC()}
	if ttl > 0 {
		e.ExpiresAt = now.Add(ttl).UTC()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Pick up tokens written by other processes first.
	if err := s.loadLocked(); err != nil {
		return "", err
	}
	s.entries[e.Hash] = e
	f := tokenFile{Tokens: make([]tokenEntry, 0, len(s.entries))}
	for _, x := range s.entries {
		if !x.ExpiresAt.IsZero() && now.After(x.ExpiresAt) {
			continue // drop expired tokens while rewriting
		}
		f.Tokens = append(f.Tokens, x)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", fmt.Errorf("ca: encode token store: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	if err := writeFileAtomic(s.path, b, 0o600); err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	return tok, nil
}

// Authenticate returns the identity a token was created for. The context is
// unused (the store is local) but kept for the Authenticator interface.
func (s *TokenStore) Authenticate(_ context.Context, token string) (Identity, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return Identity{}, ErrInvalidToken
	}
	h := hashToken(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lookupLocked(h)
	if !ok {
		if err := s.loadLocked(); err != nil {
			return Identity{}, err
		}
		if e, ok = s.lookupLocked(h); !ok {
			return Identity{}, ErrInvalidToken
		}
	}
	if !e.ExpiresAt.IsZero() && s.clock().After(e.ExpiresAt) {
		return Identity{}, ErrTokenExpired
	}
	return e.Identity, nil
}

func (s *TokenStore) lookupLocked(h string) (tokenEntry, bool) {
	e, ok := s.entries[h]
	if !ok || subtle.ConstantTimeCompare([]byte(e.Hash), []byte(h)) != 1 {
		return tokenEntry{}, false
	}
	return e, true
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}
