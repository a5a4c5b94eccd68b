package server

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unique"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// State-of-the-world ADS. Each stream keeps, per resource type, only what
// the protocol needs: whether the type is subscribed, the requested names
// (interned, so streams asking for the same names share one string), the
// set last sent (a pointer into the proxy's generated sets) and its nonce.
// A push updates the proxy's sets and wakes its streams; each stream's own
// goroutine sends what changed, in ADS order (CDS, EDS, LDS, RDS), as one
// shared pre-encoded body per (set, names) plus its nonce (see shared.go).
//
// Protocol rules kept here:
//   - a request with an empty nonce (first request of a type, or after a
//     reconnect) is always answered with the current set;
//   - a request carrying a nonce other than the last one sent for its type
//     is stale and ignored;
//   - an ACK (current nonce, no error_detail) records the version; a NACK
//     records the error and the rejected set is not sent again: the stream
//     answers only when the proxy's set for that type changes (or the client
//     asks for other names);
//   - a request whose names differ from the names last answered is answered
//     with the current set filtered to those names;
//   - no names (or "*") means every resource of the type; requested names
//     that do not exist are left out of the response.

// adsOrder is the order in which a stream sends types that are due.
var adsOrder = [numTypes]int{cds, eds, lds, rds}

// nameKey identifies a requested name set: all, or the sorted names joined
// by NUL, interned.
type nameKey struct {
	all   bool
	names unique.Handle[string]
}

func keyOf(names []string) nameKey {
	if len(names) == 0 || slices.Contains(names, "*") {
		return nameKey{all: true}
	}
	if !slices.IsSorted(names) {
		names = slices.Clone(names)
		slices.Sort(names)
	}
	names = slices.Compact(names)
	return nameKey{names: unique.Make(strings.Join(names, "\x00"))}
}

// list returns the names of a non-wildcard key.
func (k nameKey) list() []string {
	if k.all {
		return nil
	}
	return strings.Split(k.names.Value(), "\x00")
}

// streamType is one stream's state for one resource type.
type streamType struct {
	subscribed bool
	names      nameKey
	// due is set when the client asked for an answer regardless of change
	// (a request without nonce).
	due       bool
	sent      *sharedResources // nil: nothing sent yet
	sentNames nameKey
	nonce     string
}

// adsStream is one SotW ADS stream.
type adsStream struct {
	streamProxy
	s   *Server
	srv discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer

	// mu (streamProxy's) also guards these.
	nonces uint64
	types  [numTypes]streamType
}

// streamProxy is what the SotW and the delta stream share: the wake-up
// channel and the proxy the stream serves, registered by its first request
// and unregistered when the stream's handler returns.
type streamProxy struct {
	wake chan struct{}

	mu     sync.Mutex
	p      *proxyState // set by the first request
	closed bool        // the handler returned: p must not be set any more
}

func newStreamProxy() streamProxy { return streamProxy{wake: make(chan struct{}, 1)} }

// signal asks the stream's goroutine to send whatever is due.
func (sp *streamProxy) signal() {
	select {
	case sp.wake <- struct{}{}:
	default:
	}
}

// attach returns the stream's proxy; the stream's first request registers
// it with s from its node. w is the stream itself.
func (sp *streamProxy) attach(s *Server, node *corev3.Node, w waker) (*proxyState, error) {
	sp.mu.Lock()
	p := sp.p
	sp.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := s.connect(node, w)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	sp.mu.Lock()
	if sp.closed {
		sp.mu.Unlock()
		s.streamClosed(p, w)
		return nil, status.Error(codes.Canceled, "stream closed")
	}
	sp.p = p
	sp.mu.Unlock()
	return p, nil
}

// detach runs when the stream's handler returns: either it sees the proxy
// the first request registered, or attach sees closed and unregisters it
// itself.
func (sp *streamProxy) detach(s *Server, w waker) {
	sp.mu.Lock()
	sp.closed = true
	p := sp.p
	sp.mu.Unlock()
	if p != nil {
		s.streamClosed(p, w)
	}
}

// adsService is the gRPC ADS service of a Server.
type adsService struct{ s *Server }

var _ discoveryv3.AggregatedDiscoveryServiceServer = adsService{}

// StreamAggregatedResources serves one SotW ADS stream.
func (x adsService) StreamAggregatedResources(srv discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	s := x.s
	a := &adsStream{streamProxy: newStreamProxy(), s: s, srv: srv}
	ctx := srv.Context()
	recvErr := make(chan error, 1)
	go func() { recvErr <- a.recvLoop() }()
	defer a.detach(s, a)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		case <-a.wake:
			if err := a.sendDue(); err != nil {
				return err
			}
		}
	}
}

func (a *adsStream) recvLoop() error {
	for {
		req, err := a.srv.Recv()
		if err != nil {
			return err
		}
		if err := a.onRequest(req); err != nil {
			return err
		}
	}
}

func (a *adsStream) onRequest(req *discoveryv3.DiscoveryRequest) error {
	s := a.s
	p, err := a.attach(s, req.GetNode(), a)
	if err != nil {
		return err
	}
	ti := typeOf(req.GetTypeUrl())
	if ti < 0 {
		s.log.Debug("ignoring request for an unserved type", "node", p.proxy.ID, "type", req.GetTypeUrl())
		return nil
	}
	nonce := req.GetResponseNonce()
	a.mu.Lock()
	t := &a.types[ti]
	if nonce != "" && nonce != t.nonce {
		a.mu.Unlock()
		return nil // stale: the client has not seen our latest response yet
	}
	t.subscribed = true
	t.names = keyOf(req.GetResourceNames())
	if nonce == "" {
		t.due = true
	}
	a.mu.Unlock()
	if nonce != "" {
		if d := req.GetErrorDetail(); d != nil {
			s.recordNACK(p, ti, d.GetMessage())
		} else {
			s.recordACK(p, ti, req.GetVersionInfo())
		}
	}
	a.signal()
	return nil
}

// sendDue sends, in ADS order, every subscribed type whose current set or
// requested names differ from what the stream last sent.
func (a *adsStream) sendDue() error {
	s := a.s
	a.mu.Lock()
	p := a.p
	a.mu.Unlock()
	if p == nil {
		return nil
	}
	var sets [numTypes]*sharedResources
	s.mu.Lock()
	for i := range numTypes {
		sets[i] = p.gen[i].shared
	}
	s.mu.Unlock()
	for _, ti := range adsOrder {
		set := sets[ti]
		a.mu.Lock()
		t := &a.types[ti]
		if !t.subscribed || set == nil || (!t.due && t.sent == set && t.sentNames == t.names) {
			a.mu.Unlock()
			continue
		}
		a.nonces++
		nonce := strconv.FormatUint(a.nonces, 10)
		names := t.names
		t.due, t.sent, t.sentNames, t.nonce = false, set, names, nonce
		a.mu.Unlock()
		body, err := set.prepare(&s.prepared, typeURLs[ti], names)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		s.recordSent(p, ti, set.version, nonce)
		if err := a.srv.SendMsg(&outMsg{body: body, nonce: nonce}); err != nil {
			return fmt.Errorf("send %s to %s: %w", typeNames[ti], p.proxy.ID, err)
		}
		s.lastSend.Store(s.now().UnixNano())
	}
	return nil
}

// recordSent notes a response in the proxy's status.
func (s *Server) recordSent(p *proxyState, ti int, version, nonce string) {
	s.metrics.pushes.WithLabelValues(typeNames[ti]).Inc()
	now := s.now()
	s.mu.Lock()
	t := &p.xds[ti]
	t.sentVersion, t.sentNonce, t.sentAt = version, nonce, now
	s.mu.Unlock()
}

func (s *Server) recordACK(p *proxyState, ti int, version string) {
	s.mu.Lock()
	p.xds[ti].ackedVersion = version
	s.mu.Unlock()
	s.notify()
}

func (s *Server) recordNACK(p *proxyState, ti int, msg string) {
	s.mu.Lock()
	t := &p.xds[ti]
	first := t.nackVersion != t.sentVersion || t.nackErr != msg
	t.nackVersion, t.nackErr = t.sentVersion, msg
	version := t.sentVersion
	s.mu.Unlock()
	s.metrics.nacks.WithLabelValues(typeNames[ti]).Inc()
	if first {
		s.log.Warn("proxy rejected config (NACK)", "node", p.proxy.ID, "type", typeNames[ti], "version", version, "error", msg)
	}
	s.notify()
}

// wakeStreams asks every SotW stream of p to send what changed.
func (s *Server) wakeStreams(p *proxyState) {
	s.mu.Lock()
	streams := slices.Clone(p.sotw)
	s.mu.Unlock()
	for _, a := range streams {
		a.signal()
	}
}
