package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/xds/model"
)

// proxyState is one proxy's identity, generated resources and xDS status.
// Fields other than pushMu are guarded by Server.mu, except proxy (set once)
// and gen/computed/rev, which pushProxy writes under both locks.
type proxyState struct {
	proxy  *model.Proxy
	pushMu sync.Mutex // serializes generate+set for this proxy

	streams     int
	sotw        []waker // open SotW and weft delta streams (woken after a push)
	deltaOpen   int     // open delta streams (their snapshots go to deltaCache)
	removeTimer *time.Timer

	computed bool
	rev      int64 // store revision the resources were generated from
	gen      [numTypes]generated
	out      *Resources // the generator's output gen was computed from
	genErr   error

	xds [numTypes]typeState
}

// waker is a stream the server wakes after a push (SotW or weft delta).
type waker interface{ signal() }

type generated struct {
	hash      [32]byte
	size      int
	version   string
	resources []types.Resource
	shared    *sharedResources // the push memo's set these came from
}

type typeState struct {
	sentVersion  string
	sentNonce    string
	sentAt       time.Time
	ackedVersion string
	nackVersion  string
	nackErr      string
}

// State of one resource type for one proxy, as proxy-status shows it.
const (
	StateSynced  = "SYNCED"
	StateNotSent = "NOT SENT"
	StateStale   = "STALE"
	StateNacked  = "NACKED"
)

func (t *typeState) state() string {
	switch {
	case t.sentVersion == "":
		return StateNotSent
	case t.nackVersion != "" && t.nackVersion == t.sentVersion:
		return StateNacked
	case t.ackedVersion == t.sentVersion:
		return StateSynced
	default:
		return StateStale
	}
}

// TypeStatus is one type's xDS state for one proxy.
type TypeStatus struct {
	State string `json:"state"`
	// Version is the last version sent; Acked the last one the proxy accepted.
	Version string `json:"version,omitempty"`
	Acked   string `json:"acked,omitempty"`
	// Error is the proxy's NACK message when State is NACKED.
	Error    string    `json:"error,omitempty"`
	LastSent time.Time `json:"lastSent,omitzero"`
}

// ProxyStatus is what `weft proxy-status` shows for one proxy.
type ProxyStatus struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	Namespace string `json:"namespace"`
	Workload  string `json:"workload"`
	Connected bool   `json:"connected"`
	// Version is the newest version generated for the proxy.
	Version string `json:"version,omitempty"`
	// Revision is the store revision its resources were generated from.
	Revision int64     `json:"revision"`
	LastPush time.Time `json:"lastPush,omitzero"`
	// Error is a generation error (translator failure, inconsistent snapshot).
	Error string `json:"error,omitempty"`
	// Warnings are problems with the proxy's configuration that did not
	// stop it: EnvoyFilter patches skipped, or not executed by weft proxy.
	Warnings []string `json:"warnings,omitempty"`
	// Types is keyed by CDS, LDS, EDS, RDS.
	Types map[string]TypeStatus `json:"types"`
	// Labels and MetricsAddress (node metadata METRICS_ADDRESS) let the
	// dashboard place the proxy in the graph and scrape its metrics.
	Labels         map[string]string `json:"labels,omitempty"`
	MetricsAddress string            `json:"metricsAddress,omitempty"`
}

// Status reports every known proxy, sorted by ID.
func (s *Server) Status() []ProxyStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for _, p := range s.proxies {
		out = append(out, s.statusLocked(p))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *Server) statusLocked(p *proxyState) ProxyStatus {
	ps := ProxyStatus{ID: p.proxy.ID, Type: string(p.proxy.Type), Namespace: p.proxy.Namespace, Workload: p.proxy.Workload,
		Connected: p.streams > 0, Revision: p.rev, Types: map[string]TypeStatus{},
		Labels: p.proxy.Labels, MetricsAddress: p.proxy.Metadata["METRICS_ADDRESS"]}
	if p.genErr != nil {
		ps.Error = p.genErr.Error()
	}
	if p.out != nil {
		ps.Warnings = p.out.Warnings
	}
	best := int64(0)
	for i := range numTypes {
		t := &p.xds[i]
		ts := TypeStatus{State: t.state(), Version: t.sentVersion, Acked: t.ackedVersion, LastSent: t.sentAt}
		if ts.State == StateNacked {
			ts.Error = t.nackErr
		}
		ps.Types[typeNames[i]] = ts
		if t.sentAt.After(ps.LastPush) {
			ps.LastPush = t.sentAt
		}
		var v int64
		if _, err := fmt.Sscan(p.gen[i].version, &v); err == nil && v > best {
			best = v
			ps.Version = p.gen[i].version
		}
	}
	return ps
}

// notify wakes WaitForRevision callers.
func (s *Server) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// ErrNacked is returned by WaitForRevision when a proxy rejected its config.
var ErrNacked = fmt.Errorf("proxy rejected config (NACK)")

// WaitForRevision blocks until every connected proxy runs config generated
// from store revision rev or later: generated, sent and ACKed for every type
// that was sent. It fails wrapping ErrNacked when a proxy rejects it, and
// with ctx's error on timeout. For `weft apply --wait`.
func (s *Server) WaitForRevision(ctx context.Context, rev int64) error {
	for {
		s.mu.Lock()
		ch := s.changed
		done, err := s.revisionReachedLocked(rev)
		s.mu.Unlock()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			pending := s.pendingLocked(rev)
			s.mu.Unlock()
			if len(pending) > 0 {
				return fmt.Errorf("wait for revision %d: %w; not yet acknowledged by %s", rev, ctx.Err(), strings.Join(pending, ", "))
			}
			return fmt.Errorf("wait for revision %d: %w (the change has not been pushed yet)", rev, ctx.Err())
		case <-ch:
		}
	}
}

// pendingLocked lists the connected proxies that have not yet acknowledged
// config computed from store revision rev, sorted by ID.
func (s *Server) pendingLocked(rev int64) []string {
	var out []string
	for _, p := range s.proxies {
		if p.streams == 0 {
			continue
		}
		pending := !p.computed || p.rev < rev
		for i := range numTypes {
			if st := p.xds[i].state(); st == StateStale || st == StateNacked {
				pending = true
			}
		}
		if pending {
			out = append(out, p.proxy.ID)
		}
	}
	sort.Strings(out)
	return out
}

func (s *Server) revisionReachedLocked(rev int64) (bool, error) {
	if s.flushedRev < rev {
		return false, nil
	}
	for _, p := range s.proxies {
		if p.streams == 0 {
			continue
		}
		if !p.computed || p.rev < rev {
			return false, nil
		}
		for i := range numTypes {
			switch t := &p.xds[i]; t.state() {
			case StateNacked:
				return false, fmt.Errorf("%s %s: %w: %s", p.proxy.ID, typeNames[i], ErrNacked, t.nackErr)
			case StateStale:
				return false, nil
			}
		}
	}
	return true, nil
}

// Revision is the store revision of the last computed push.
func (s *Server) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushedRev
}

// deltaCallbacks track delta streams (served by go-control-plane) in the
// proxies' status.
func (s *Server) deltaCallbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.mu.Lock()
			s.deltaStreams[id] = &deltaStream{}
			s.mu.Unlock()
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.mu.Lock()
			ds := s.deltaStreams[id]
			delete(s.deltaStreams, id)
			s.mu.Unlock()
			if ds != nil && ds.p != nil {
				s.streamClosed(ds.p, nil)
			}
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			return s.onDeltaRequest(id, r)
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			ti := typeOf(r.GetTypeUrl())
			s.mu.Lock()
			ds := s.deltaStreams[id]
			s.mu.Unlock()
			if ti >= 0 && ds != nil && ds.p != nil {
				s.recordSent(ds.p, ti, r.GetSystemVersionInfo(), r.GetNonce())
			}
		},
	}
}

func (s *Server) onDeltaRequest(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
	s.mu.Lock()
	ds := s.deltaStreams[id]
	if ds == nil {
		ds = &deltaStream{}
		s.deltaStreams[id] = ds
	}
	p := ds.p
	s.mu.Unlock()
	if p == nil {
		var err error
		if p, err = s.connect(r.GetNode(), nil); err != nil {
			return err
		}
		s.mu.Lock()
		ds.p = p
		s.mu.Unlock()
	}
	ti := typeOf(r.GetTypeUrl())
	if ti < 0 || r.GetResponseNonce() == "" {
		return nil
	}
	if d := r.GetErrorDetail(); d != nil {
		s.recordNACK(p, ti, d.GetMessage())
		return nil
	}
	s.mu.Lock()
	t := &p.xds[ti]
	acked := r.GetResponseNonce() == t.sentNonce
	version := t.sentVersion
	s.mu.Unlock()
	if acked {
		s.recordACK(p, ti, version)
	}
	return nil
}

// connect registers a stream's proxy on its first request (a is the
// stream the server's own handlers wake after a push, nil for a stream of
// go-control-plane's delta server) and computes its first resources.
func (s *Server) connect(node *corev3.Node, a waker) (*proxyState, error) {
	if node.GetId() == "" {
		return nil, errors.New("xds stream: first request carries no node id")
	}
	px, err := model.ParseNode(node.GetId(), node.GetMetadata(), node.GetUserAgentName())
	if err != nil {
		s.log.Warn("reject xDS client", "node", node.GetId(), "err", err)
		return nil, fmt.Errorf("parse node: %w", err)
	}
	s.mu.Lock()
	p := s.proxies[px.ID]
	isNew := p == nil
	if isNew {
		p = &proxyState{proxy: px}
		s.proxies[px.ID] = p
		s.metrics.connected.WithLabelValues(string(px.Type)).Inc()
	}
	p.streams++
	if a != nil {
		p.sotw = append(p.sotw, a)
	} else {
		p.deltaOpen++
	}
	if p.removeTimer != nil {
		p.removeTimer.Stop()
		p.removeTimer = nil
	}
	configs, rev, build, memo := s.configList, s.flushedRev, s.curBuild, s.curMemo
	s.mu.Unlock()
	if isNew {
		s.log.Info("proxy connected", "node", px.ID, "type", px.Type)
		if s.opts.Registry != nil {
			s.opts.Registry.UpsertProxy(px)
		}
		if build == nil || memo == nil {
			build, memo = s.opts.Generate(configs), s.newPushMemo()
		}
		if s.pushProxy(context.Background(), p, build, rev, memo) {
			s.wakeStreams(p)
		}
	}
	if a == nil {
		// The delta server asks the cache right after this callback.
		p.pushMu.Lock()
		s.mu.Lock()
		gen, computed := p.gen, p.computed
		s.mu.Unlock()
		if computed {
			s.setDeltaSnapshot(context.Background(), p, gen)
		}
		p.pushMu.Unlock()
	}
	return p, nil
}

// streamClosed unregisters a stream of p (a: a stream of the server's own
// handlers, nil: go-control-plane's delta); the proxy is removed
// RemoveGrace after its last stream closed.
func (s *Server) streamClosed(p *proxyState, a waker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a != nil {
		i := slices.Index(p.sotw, a)
		if i < 0 {
			return
		}
		p.sotw = slices.Delete(p.sotw, i, i+1)
	} else {
		p.deltaOpen--
	}
	p.streams--
	if p.streams > 0 {
		return
	}
	nodeID := p.proxy.ID
	p.removeTimer = time.AfterFunc(s.opts.RemoveGrace, func() { s.removeProxy(nodeID, p) })
}

func (s *Server) removeProxy(nodeID string, p *proxyState) {
	s.mu.Lock()
	if s.proxies[nodeID] != p || p.streams > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.proxies, nodeID)
	s.mu.Unlock()
	s.metrics.connected.WithLabelValues(string(p.proxy.Type)).Dec()
	s.deltaCache.ClearSnapshot(nodeID)
	if s.opts.Registry != nil {
		s.opts.Registry.RemoveProxy(nodeID)
	}
	s.log.Info("proxy removed", "node", nodeID)
	s.notify()
}

// hashResources hashes resources in name order with deterministic
// marshaling; it also returns their encoded size. memo (may be nil) caches
// per-resource digests by pointer for one push, so resources a generator
// shares between proxies are marshaled once.
func hashResources(rs []types.Resource, memo *sync.Map) ([32]byte, int) {
	return hashWith(rs, memo, nil)
}

// hashWith is hashResources with the previous push's digests (prev, may
// be nil) to take those of resources the generator reused from.
func hashWith(rs []types.Resource, memo, prev *sync.Map) ([32]byte, int) {
	sorted := sortByName(rs)
	h := sha256.New()
	size := 0
	var buf []byte
	for _, r := range sorted {
		d := digestOf(r, memo, prev)
		size += d.size
		name := cachev3.GetResourceName(r)
		buf = strconv.AppendInt(buf[:0], int64(len(name)), 10)
		buf = append(append(append(buf, ':'), name...), d.sum[:]...)
		h.Write(buf)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, size
}

type digest struct {
	sum  [32]byte
	size int
	// enc is the resource's deterministic encoding (nil if it failed):
	// kept with the push memo so a shared set's response reuses it.
	enc []byte
}

func digestOf(r types.Resource, memo, prev *sync.Map) digest {
	if memo != nil {
		if d, ok := memo.Load(r); ok {
			return d.(digest)
		}
		if prev != nil {
			if d, ok := prev.Load(r); ok {
				memo.Store(r, d) // carried to the next push
				return d.(digest)
			}
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	enc := b
	if err != nil {
		b, enc = []byte(err.Error()), nil
	}
	d := digest{sum: sha256.Sum256(b), size: len(b)}
	if memo != nil {
		d.enc = enc
	}
	if memo != nil {
		memo.Store(r, d)
	}
	return d
}

func sortByName(rs []types.Resource) []types.Resource {
	less := func(a, b types.Resource) int {
		return strings.Compare(cachev3.GetResourceName(a), cachev3.GetResourceName(b))
	}
	if slices.IsSortedFunc(rs, less) {
		return rs
	}
	out := slices.Clone(rs)
	slices.SortStableFunc(out, less)
	return out
}
