package caclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"
)

// ErrNoCertificate is returned by the TLS callbacks before the first
// certificate arrived.
var ErrNoCertificate = errors.New("caclient: no certificate yet")

// RotatorOptions configures a Rotator.
type RotatorOptions struct {
	// Fetch obtains a new bundle; usually func(ctx) { return Fetch(ctx, cfg) }.
	Fetch func(ctx context.Context) (*Bundle, error)
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// RenewFraction of the lifetime (from IssuedAt to NotAfter) after which
	// the certificate is renewed. Default 0.5.
	RenewFraction float64
	// MinBackoff and MaxBackoff bound the exponential retry delay after a
	// failed fetch. Defaults 100ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Logger receives rotation events. Default slog.Default().
	Logger *slog.Logger
	// OnRenew, if set, is called with every new bundle (the first one
	// included) right after it became Current, serially from Run's
	// goroutine; e.g. sds.Cache.Set, which pushes it to SDS clients.
	OnRenew func(*Bundle)
}

// Rotator keeps a current certificate and renews it at half life. Its
// callbacks read the current certificate atomically: new handshakes use the
// newest certificate while established connections are untouched. Safe for
// concurrent use.
type Rotator struct {
	o     RotatorOptions
	cur   atomic.Pointer[Bundle]
	ready chan struct{}
	kick  chan struct{} // RenewNow
	// Renewals counts successful fetches (including the first).
	renewals atomic.Int64
	failures atomic.Int64
}

// NewRotator builds a Rotator; call Run to start it.
func NewRotator(o RotatorOptions) *Rotator {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.RenewFraction <= 0 || o.RenewFraction >= 1 {
		o.RenewFraction = 0.5
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Rotator{o: o, ready: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// RenewNow makes Run fetch a new certificate at once instead of at its
// renewal time (e.g. because the trusted roots changed). Calls while a
// renewal is already due coalesce.
func (r *Rotator) RenewNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Ready is closed once the first certificate is available.
func (r *Rotator) Ready() <-chan struct{} { return r.ready }

// Current returns the current bundle, or nil before the first fetch.
func (r *Rotator) Current() *Bundle { return r.cur.Load() }

// Renewals returns how many certificates were obtained so far.
func (r *Rotator) Renewals() int64 { return r.renewals.Load() }

// Failures returns how many fetches failed so far.
func (r *Rotator) Failures() int64 { return r.failures.Load() }

// Run fetches a certificate, then renews it at RenewFraction of its lifetime
// until ctx ends; failures are retried with exponential backoff. It returns
// ctx's error.
func (r *Rotator) Run(ctx context.Context) error {
	backoff := r.o.MinBackoff
	for {
		var wait time.Duration
		b, err := r.o.Fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.failures.Add(1)
			wait = backoff
			backoff = min(backoff*2, r.o.MaxBackoff)
			r.o.Logger.Warn("certificate fetch failed", "err", err, "retryIn", wait)
		} else {
			backoff = r.o.MinBackoff
			b.IssuedAt = r.o.Clock() // measure the lifetime on our clock
			r.cur.Store(b)
			if r.o.OnRenew != nil {
				r.o.OnRenew(b)
			}
			if r.renewals.Add(1) == 1 {
				close(r.ready)
			}
			wait = r.renewIn(b)
			r.o.Logger.Debug("certificate renewed", "notAfter", b.Leaf.NotAfter, "renewIn", wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-r.kick:
			t.Stop()
		}
	}
}

// renewIn is how long from now until b should be replaced.
func (r *Rotator) renewIn(b *Bundle) time.Duration {
	life := b.Leaf.NotAfter.Sub(b.IssuedAt)
	at := b.IssuedAt.Add(time.Duration(float64(life) * r.o.RenewFraction))
	return max(at.Sub(r.o.Clock()), 0)
}

// GetCertificate is a tls.Config.GetCertificate callback.
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	b := r.cur.Load()
	if b == nil {
		return nil, ErrNoCertificate
	}
	return &b.Cert, nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate callback.
func (r *Rotator) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	b := r.cur.Load()
	if b == nil {
		return nil, ErrNoCertificate
	}
	return &b.Cert, nil
}

// Roots returns the current trusted roots (an empty pool before the first
// fetch).
func (r *Rotator) Roots() *x509.CertPool {
	b := r.cur.Load()
	if b == nil {
		return x509.NewCertPool()
	}
	return b.Roots
}

// ServerConfig returns a mutual-TLS server config: the current certificate,
// and client certificates verified against the current roots with a SPIFFE
// ID required.
func (r *Rotator) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		GetCertificate:        r.GetCertificate,
		ClientAuth:            tls.RequireAnyClientCert,
		VerifyPeerCertificate: VerifyPeer(r.Roots),
	}
}

// ClientConfig returns a mutual-TLS client config presenting the current
// certificate and verifying the server against the current roots and a
// SPIFFE ID (not a DNS name).
func (r *Rotator) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS12,
		GetClientCertificate:  r.GetClientCertificate,
		InsecureSkipVerify:    true, // verified by VerifyPeerCertificate below
		VerifyPeerCertificate: VerifyPeer(r.Roots),
	}
}
