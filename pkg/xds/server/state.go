package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sort"
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
	removeTimer *time.Timer

	computed bool
	rev      int64 // store revision the resources were generated from
	gen      [numTypes]generated
	genErr   error
	// pending are the sets being handed to the cache, before gen has them.
	pending [numTypes]*sharedResources

	xds [numTypes]typeState
}

type generated struct {
	hash      [32]byte
	size      int
	version   string
	resources []types.Resource
	cache     cachev3.Resources // the snapshot cache's index of resources
	shared    *sharedResources  // the push memo's set these came from
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

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.mu.Lock()
			s.streams[id] = &streamState{}
			s.mu.Unlock()
			return nil
		},
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error {
			s.mu.Lock()
			s.streams[id] = &streamState{delta: true}
			s.mu.Unlock()
			return nil
		},
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { s.streamClosed(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.streamClosed(id) },
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			return s.onRequest(id, r.GetNode(), r.GetTypeUrl(), r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			return s.onRequest(id, r.GetNode(), r.GetTypeUrl(), "", r.GetResponseNonce(), r.GetErrorDetail().GetMessage(), r.GetErrorDetail() != nil)
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, r *discoveryv3.DiscoveryResponse) {
			s.onResponse(id, r.GetTypeUrl(), r.GetVersionInfo(), r.GetNonce())
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, r *discoveryv3.DeltaDiscoveryResponse) {
			s.onResponse(id, r.GetTypeUrl(), r.GetSystemVersionInfo(), r.GetNonce())
		},
	}
}

func (s *Server) onRequest(id int64, node *corev3.Node, typeURL, version, nonce, errMsg string, nack bool) error {
	s.mu.Lock()
	st := s.streams[id]
	if st == nil {
		st = &streamState{}
		s.streams[id] = st
	}
	if st.nodeID == "" {
		s.mu.Unlock()
		if err := s.connect(id, st, node); err != nil {
			return err
		}
		s.mu.Lock()
	}
	p := s.proxies[st.nodeID]
	ti := typeOf(typeURL)
	if p == nil || ti < 0 || nonce == "" {
		s.mu.Unlock()
		return nil
	}
	t := &p.xds[ti]
	if nack {
		first := t.nackVersion != t.sentVersion || t.nackErr != errMsg
		t.nackVersion, t.nackErr = t.sentVersion, errMsg
		s.mu.Unlock()
		s.metrics.nacks.WithLabelValues(typeNames[ti]).Inc()
		if first {
			s.log.Warn("proxy rejected config (NACK)", "node", st.nodeID, "type", typeNames[ti], "version", t.sentVersion, "error", errMsg)
		}
		s.notify()
		return nil
	}
	switch {
	case !st.delta:
		t.ackedVersion = version
	case nonce == t.sentNonce:
		t.ackedVersion = t.sentVersion
	}
	s.mu.Unlock()
	s.notify()
	return nil
}

// connect registers the stream's proxy on its first request and computes
// its first snapshot before the cache sees the request.
func (s *Server) connect(id int64, st *streamState, node *corev3.Node) error {
	if node.GetId() == "" {
		return fmt.Errorf("xds stream %d: first request carries no node id", id)
	}
	px, err := model.ParseNode(node.GetId(), node.GetMetadata(), node.GetUserAgentName())
	if err != nil {
		s.log.Warn("reject xDS client", "node", node.GetId(), "err", err)
		return fmt.Errorf("parse node: %w", err)
	}
	s.mu.Lock()
	st.nodeID = px.ID
	p := s.proxies[px.ID]
	isNew := p == nil
	if isNew {
		p = &proxyState{proxy: px}
		s.proxies[px.ID] = p
		s.metrics.connected.WithLabelValues(string(px.Type)).Inc()
	}
	p.streams++
	if p.removeTimer != nil {
		p.removeTimer.Stop()
		p.removeTimer = nil
	}
	configs, rev, build, memo := s.configList, s.flushedRev, s.curBuild, s.curMemo
	s.mu.Unlock()
	if !isNew {
		return nil
	}
	s.log.Info("proxy connected", "node", px.ID, "type", px.Type)
	if s.opts.Registry != nil {
		s.opts.Registry.UpsertProxy(px)
	}
	if build == nil || memo == nil {
		build, memo = s.opts.Generate(configs), s.newPushMemo()
	}
	s.pushProxy(context.Background(), p, build, rev, memo)
	return nil
}

func (s *Server) streamClosed(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	delete(s.streams, id)
	if st == nil || st.nodeID == "" {
		return
	}
	p := s.proxies[st.nodeID]
	if p == nil {
		return
	}
	p.streams--
	if p.streams > 0 {
		return
	}
	nodeID := st.nodeID
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
	s.cacheFor(p.proxy.Type).ClearSnapshot(nodeID)
	if s.opts.Registry != nil {
		s.opts.Registry.RemoveProxy(nodeID)
	}
	s.log.Info("proxy removed", "node", nodeID)
	s.notify()
}

func (s *Server) onResponse(id int64, typeURL, version, nonce string) {
	ti := typeOf(typeURL)
	if ti < 0 {
		return
	}
	s.metrics.pushes.WithLabelValues(typeNames[ti]).Inc()
	s.mu.Lock()
	if st := s.streams[id]; st != nil {
		if p := s.proxies[st.nodeID]; p != nil {
			t := &p.xds[ti]
			t.sentVersion, t.sentNonce, t.sentAt = version, nonce, s.now()
		}
	}
	s.mu.Unlock()
}

// nackedVersion is the version of typeURL the node rejected, if any.
func (s *Server) nackedVersion(nodeID, typeURL string) string {
	ti := typeOf(typeURL)
	if ti < 0 {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proxies[nodeID]; p != nil {
		return p.xds[ti].nackVersion
	}
	return ""
}

func (s *Server) cacheFor(t model.ProxyType) cachev3.SnapshotCache {
	if t == model.Proxyless {
		return s.plCache
	}
	return s.cache
}

// cacheForNode picks the cache of a connected node (connect runs before
// the server asks the cache for a watch).
func (s *Server) cacheForNode(node *corev3.Node) cachev3.SnapshotCache {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proxies[node.GetId()]; p != nil {
		return s.cacheFor(p.proxy.Type)
	}
	return s.cache
}

// holdCache dispatches to the node's snapshot cache, and keeps a NACK from
// making it resend the rejected version at once (go-control-plane answers a
// NACK, whose version_info is the last accepted version, with the current
// snapshot): the NACK's watch is opened as if the client had the current
// version, so it fires only when a new version exists for that type.
type holdCache struct {
	s *Server
}

var _ cachev3.Cache = (*holdCache)(nil)

func (h *holdCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	c := h.s.cacheForNode(req.GetNode())
	if req.GetErrorDetail() != nil {
		nodeID := req.GetNode().GetId()
		if snap, err := c.GetSnapshot(nodeID); err == nil {
			cur := snap.GetVersion(req.GetTypeUrl())
			if cur != "" && cur == h.s.nackedVersion(nodeID, req.GetTypeUrl()) {
				held := proto.Clone(req).(*discoveryv3.DiscoveryRequest)
				held.VersionInfo = cur
				req = held
			}
		}
	}
	// The cache answers into w.mid; each answer is swapped for one with
	// shared, already marshaled resources before the server sees it. The
	// cache answers only inside CreateWatch or SetSnapshot, so the watch is
	// checked right after each, without a goroutine per open watch.
	w := &sotwWatch{s: h.s, nodeID: req.GetNode().GetId(), order: adsOrder(req.GetTypeUrl()), mid: make(chan cachev3.Response, 1), out: ch, done: make(chan struct{})}
	cancel, err := c.CreateWatch(req, sub, w.mid)
	if err != nil {
		return cancel, err
	}
	w.cancel = cancel
	if !w.forward() {
		h.s.watches.add(w)
	}
	return w.close, nil
}

// sotwWatch is one open SotW watch between the snapshot cache and a stream.
type sotwWatch struct {
	s      *Server
	nodeID string
	order  int                   // ADS response order of its type
	mid    chan cachev3.Response // the cache answers here (at most once)
	out    chan cachev3.Response // the stream's response channel
	done   chan struct{}
	cancel func()

	mu     sync.Mutex
	closed bool
}

// forward passes the cache's answer, if there is one, to the stream and
// reports whether the watch is finished.
func (w *sotwWatch) forward() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return true
	}
	var r cachev3.Response
	select {
	case r = <-w.mid:
	default:
		return false
	}
	r = w.s.sharedResponse(w.nodeID, r)
	select {
	case w.out <- r: // the stream's channel has room for one answer per type
	default:
		go func() {
			select {
			case w.out <- r:
			case <-w.done:
			}
		}()
	}
	return true
}

func (w *sotwWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	close(w.done)
	if w.cancel != nil {
		w.cancel()
	}
	w.s.watches.remove(w)
}

// adsOrder ranks a type URL in the order ADS responses go out: clusters,
// endpoints, listeners, routes, then anything else.
func adsOrder(typeURL string) int {
	switch typeOf(typeURL) {
	case cds:
		return 0
	case eds:
		return 1
	case lds:
		return 2
	case rds:
		return 3
	}
	return 4
}

// watchSet holds the open SotW watches per node.
type watchSet struct {
	mu sync.Mutex
	m  map[string]map[*sotwWatch]struct{}
}

func (ws *watchSet) add(w *sotwWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.m == nil {
		ws.m = map[string]map[*sotwWatch]struct{}{}
	}
	if ws.m[w.nodeID] == nil {
		ws.m[w.nodeID] = map[*sotwWatch]struct{}{}
	}
	ws.m[w.nodeID][w] = struct{}{}
}

func (ws *watchSet) remove(w *sotwWatch) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if set := ws.m[w.nodeID]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(ws.m, w.nodeID)
		}
	}
}

// forward passes on what the cache answered to nodeID's open watches
// (after SetSnapshot).
func (ws *watchSet) forward(nodeID string) {
	ws.mu.Lock()
	var open []*sotwWatch
	for w := range ws.m[nodeID] {
		open = append(open, w)
	}
	ws.mu.Unlock()
	// Keep the cache's ADS order (CDS, EDS, LDS, RDS) on the stream.
	sort.Slice(open, func(i, j int) bool { return open[i].order < open[j].order })
	for _, w := range open {
		if w.forward() {
			ws.remove(w)
		}
	}
}

func (h *holdCache) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	return h.s.cacheForNode(req.GetNode()).CreateDeltaWatch(req, sub, ch)
}

func (h *holdCache) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	return h.s.cacheForNode(req.GetNode()).Fetch(ctx, req)
}

// hashResources hashes resources in name order with deterministic
// marshaling; it also returns their encoded size. memo (may be nil) caches
// per-resource digests by pointer for one push, so resources a generator
// shares between proxies are marshaled once.
func hashResources(rs []types.Resource, memo *sync.Map) ([32]byte, int) {
	sorted := sortByName(rs)
	h := sha256.New()
	size := 0
	for _, r := range sorted {
		d := digestOf(r, memo)
		size += d.size
		name := cachev3.GetResourceName(r)
		fmt.Fprintf(h, "%d:%s", len(name), name)
		h.Write(d.sum[:])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, size
}

type digest struct {
	sum  [32]byte
	size int
}

func digestOf(r types.Resource, memo *sync.Map) digest {
	if memo != nil {
		if d, ok := memo.Load(r); ok {
			return d.(digest)
		}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		b = []byte(err.Error())
	}
	d := digest{sum: sha256.Sum256(b), size: len(b)}
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
