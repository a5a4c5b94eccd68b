package sds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server serves a Cache over envoy.service.secret.v3.SecretDiscoveryService:
// StreamSecrets (state of the world), DeltaSecrets (incremental) and
// FetchSecrets. A stream gets the names it asks for as soon as the cache
// holds a certificate, then again after every Set. Names other than
// "default" and "ROOTCA" are not served (logged once per stream). Safe for
// concurrent use.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	cache *Cache
	log   *slog.Logger
	nonce atomic.Int64
}

// NewServer returns a Server for cache; log may be nil (slog.Default()).
func NewServer(cache *Cache, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{cache: cache, log: log}
}

var _ secretv3.SecretDiscoveryServiceServer = (*Server)(nil)

// Listen removes a stale socket at path, creates its directory and listens
// on it (mode 0600: only the proxy's user, as Envoy runs next to it).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("sds socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sds socket %s: remove stale socket: %w", path, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("sds socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("sds socket %s: %w", path, err)
	}
	return lis, nil
}

// Serve serves SDS on lis until ctx ends, then stops the gRPC server
// (closing lis, which removes a Unix socket file). It returns nil after
// ctx ended, else the gRPC server's error.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(g, s)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		g.Stop()
	}()
	err := g.Serve(lis)
	if ctx.Err() != nil {
		err = nil
	} else {
		g.Stop()
	}
	wg.Wait()
	return err
}

// wanted returns st's secrets among names (all for none) and logs, once
// per stream (warned), each name this proxy does not serve.
func (s *Server) wanted(st *state, names []string, warned map[string]bool) map[string]entry {
	found, unknown := st.wanted(names)
	for _, n := range unknown {
		if !warned[n] {
			warned[n] = true
			s.log.Warn("SDS client asked for a secret this proxy does not serve", "name", n)
		}
	}
	return found
}

func (s *Server) nextNonce() string { return strconv.FormatInt(s.nonce.Add(1), 10) }

// wanted returns the cached secrets among names (all of them for an empty
// list, the SotW wildcard) and the names that are not served.
func (st *state) wanted(names []string) (map[string]entry, []string) {
	out := map[string]entry{}
	var unknown []string
	if len(names) == 0 {
		for n, e := range st.secrets {
			out[n] = e
		}
		return out, nil
	}
	for _, n := range names {
		if e, ok := st.secrets[n]; ok {
			out[n] = e
		} else {
			unknown = append(unknown, n)
		}
	}
	return out, unknown
}

func sortedNames(m map[string]entry) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// recvLoop forwards a stream's requests to the returned channel; the error
// channel gets the Recv error that ended it.
func recvLoop[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	reqs := make(chan T)
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}

func endOfStream(err error) error {
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// StreamSecrets serves state-of-the-world SDS: every response carries all
// of the stream's requested secrets, version_info is the cache generation.
func (s *Server) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	ctx := stream.Context()
	reqs, errc := recvLoop(ctx, stream.Recv)
	var (
		names      []string
		subscribed bool
		lastNonce  string
		sentGen    int64 = -1
		warned           = map[string]bool{}
	)
	st := s.cache.load()
	send := func() error {
		st = s.cache.load()
		if st.gen == 0 {
			return nil // nothing yet; sent once the first certificate is in
		}
		found := s.wanted(st, names, warned)
		resp := &discoveryv3.DiscoveryResponse{
			VersionInfo: strconv.FormatInt(st.gen, 10),
			TypeUrl:     resourcev3.SecretType,
			Nonce:       s.nextNonce(),
		}
		for _, n := range sortedNames(found) {
			resp.Resources = append(resp.Resources, found[n].any)
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		lastNonce, sentGen = resp.Nonce, st.gen
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return endOfStream(err)
		case <-st.changed:
			if !subscribed {
				st = s.cache.load()
				continue
			}
			if err := send(); err != nil {
				return err
			}
		case r := <-reqs:
			if t := r.GetTypeUrl(); t != "" && t != resourcev3.SecretType {
				return status.Errorf(codes.InvalidArgument, "sds: type_url %q, want %q", t, resourcev3.SecretType)
			}
			if r.GetResponseNonce() != "" && r.GetResponseNonce() != lastNonce {
				continue // answers an older response; a newer one is on its way
			}
			if d := r.GetErrorDetail(); d != nil {
				s.log.Warn("SDS client rejected secrets", "version", r.GetVersionInfo(), "err", d.GetMessage())
			}
			want := slices.Sorted(slices.Values(r.GetResourceNames()))
			if subscribed && slices.Equal(want, names) && sentGen == s.cache.load().gen {
				continue // ACK or NACK of the current secrets
			}
			names, subscribed = want, true
			if err := send(); err != nil {
				return err
			}
		}
	}
}

// DeltaSecrets serves incremental SDS: a response carries the subscribed
// secrets whose content version the client does not have, and the
// unsubscribed names are forgotten. Wildcard subscriptions (no names)
// subscribe to all secrets.
func (s *Server) DeltaSecrets(stream grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]) error {
	ctx := stream.Context()
	reqs, errc := recvLoop(ctx, stream.Recv)
	var (
		subs     = map[string]bool{}
		wildcard bool
		first    = true
		have     = map[string]string{} // name -> version the client holds
		warned   = map[string]bool{}
	)
	st := s.cache.load()
	send := func() error {
		st = s.cache.load()
		if st.gen == 0 {
			return nil
		}
		var names []string
		if !wildcard {
			for n := range subs {
				names = append(names, n)
			}
		}
		found := s.wanted(st, names, warned)
		resp := &discoveryv3.DeltaDiscoveryResponse{
			SystemVersionInfo: strconv.FormatInt(st.gen, 10),
			TypeUrl:           resourcev3.SecretType,
		}
		for _, n := range sortedNames(found) {
			e := found[n]
			if have[n] == e.version {
				continue
			}
			resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: n, Version: e.version, Resource: e.any})
		}
		if len(resp.Resources) == 0 {
			return nil
		}
		resp.Nonce = s.nextNonce()
		if err := stream.Send(resp); err != nil {
			return err
		}
		for _, r := range resp.Resources {
			have[r.Name] = r.Version
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return endOfStream(err)
		case <-st.changed:
			if err := send(); err != nil {
				return err
			}
		case r := <-reqs:
			if t := r.GetTypeUrl(); t != "" && t != resourcev3.SecretType {
				return status.Errorf(codes.InvalidArgument, "sds: type_url %q, want %q", t, resourcev3.SecretType)
			}
			if d := r.GetErrorDetail(); d != nil {
				s.log.Warn("SDS client rejected secrets", "nonce", r.GetResponseNonce(), "err", d.GetMessage())
			}
			if first {
				first = false
				wildcard = len(r.GetResourceNamesSubscribe()) == 0
				for n, v := range r.GetInitialResourceVersions() {
					have[n] = v
				}
			}
			for _, n := range r.GetResourceNamesSubscribe() {
				if n == "*" {
					wildcard = true
					continue
				}
				subs[n] = true
			}
			for _, n := range r.GetResourceNamesUnsubscribe() {
				if n == "*" {
					wildcard = false
				}
				delete(subs, n)
				delete(have, n)
			}
			if err := send(); err != nil {
				return err
			}
		}
	}
}

// FetchSecrets answers one request with the current secrets it names.
func (s *Server) FetchSecrets(_ context.Context, r *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	st := s.cache.load()
	if st.gen == 0 {
		return nil, status.Error(codes.Unavailable, "sds: no workload certificate yet")
	}
	found, unknown := st.wanted(r.GetResourceNames())
	if len(unknown) > 0 {
		return nil, status.Errorf(codes.NotFound, "sds: no secret %q (this proxy serves %q and %q)", unknown[0], WorkloadCertSecret, RootCASecret)
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: strconv.FormatInt(st.gen, 10), TypeUrl: resourcev3.SecretType, Nonce: s.nextNonce()}
	for _, n := range sortedNames(found) {
		resp.Resources = append(resp.Resources, found[n].any)
	}
	return resp, nil
}
