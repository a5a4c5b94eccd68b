// Package server is Weft's xDS control plane engine: an ADS server over gRPC
// (state of the world served by its own stream handler, see ads.go; delta by
// go-control-plane's delta server) that watches the config store, feeds the
// registry, recomputes per-proxy Envoy resources after a debounce, and
// pushes only what changed. It tracks ACK/NACK per proxy and type for
// proxy-status and holds back versions a proxy rejected.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	encodingproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/keepalive"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// Resources are the Envoy resources generated for one proxy.
type Resources struct {
	Listeners, Routes, Clusters, Endpoints []types.Resource
	// Warnings are shown by proxy-status (EnvoyFilter patches skipped or
	// not executed by weft proxy); they are not sent to the proxy.
	Warnings []string
}

// Generator prepares one push: it is called once per push with the current
// configuration (so it can snapshot the registry once) and returns the
// per-proxy builder. The builder is called concurrently for different
// proxies and must be thread-safe.
// A builder that returns the same *Resources it returned for the proxy in
// the previous push declares the proxy's config unchanged.
type Generator func(configs []*config.Resource) func(*model.Proxy) (*Resources, error)

// Registry is what the server needs from pkg/registry. Implementations must
// be safe for concurrent use.
type Registry interface {
	SetConfigs([]*config.Resource)
	UpsertProxy(*model.Proxy)
	RemoveProxy(id string)
	// Subscribe calls fn after every registry change; cancel stops it.
	Subscribe(fn func()) (cancel func())
}

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	// Store is watched for configuration (required).
	Store store.Store
	// Registry receives configs and connected proxies; nil means none.
	Registry Registry
	// Generate builds resources; required (see TranslateGenerator).
	Generate Generator
	Logger   *slog.Logger
	// Debounce is the quiet time after a change before pushing (default 100ms).
	Debounce time.Duration
	// MaxDelay caps how long a stream of changes can delay a push (default 1s).
	MaxDelay time.Duration
	// RemoveGrace is how long a disconnected proxy stays registered, so a
	// quick reconnect does not churn the registry (default 5s).
	RemoveGrace time.Duration
	// Metrics is where the server registers its collectors; nil creates a
	// private registry (see MetricsHandler).
	Metrics *prometheus.Registry
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
}

// Server is the ADS server. Create it with New, then run Run and Serve.
type Server struct {
	opts Options
	log  *slog.Logger
	// deltaCache holds snapshots of the proxies with a delta stream, for
	// go-control-plane's delta server (delta). SotW streams do not use it.
	deltaCache cachev3.SnapshotCache
	delta      serverv3.Server
	metrics    *metrics
	now        func() time.Time

	kickCh      chan struct{}
	version     atomic.Int64  // last snapshot version handed out
	lastPushDur atomic.Int64  // nanoseconds of the last flush
	lastSend    atomic.Int64  // unix nanos when a SotW response was last handed to gRPC
	pushing     atomic.Bool   // a change is being debounced or pushed
	changed     chan struct{} // closed and replaced on every status change

	mu         sync.Mutex
	configs    map[config.Key]*config.Resource
	storeRev   int64
	configList []*config.Resource // as of the last flush
	flushedRev int64
	// curBuild and curMemo are the last flush's prepared generator and
	// digest memo, reused for proxies that connect until the next flush.
	curBuild func(*model.Proxy) (*Resources, error)
	curMemo  *pushMemo
	proxies  map[string]*proxyState
	// deltaStreams are the open delta streams by go-control-plane's id.
	deltaStreams map[int64]*deltaStream

	// prepared counts shared response bodies built and written.
	prepared prepStats
}

type deltaStream struct {
	p *proxyState // set by the first request
}

// New builds a Server. It does not start anything.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("xds server: Options.Store is required")
	}
	if opts.Generate == nil {
		return nil, errors.New("xds server: Options.Generate is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Second
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = opts.Debounce
	}
	if opts.RemoveGrace <= 0 {
		opts.RemoveGrace = 5 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = prometheus.NewRegistry()
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		now:     opts.Clock,
		kickCh:  make(chan struct{}, 1),
		changed: make(chan struct{}),
		configs: map[config.Key]*config.Resource{},
		proxies: map[string]*proxyState{},

		deltaStreams: map[int64]*deltaStream{},
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.deltaCache = cachev3.NewSnapshotCache(false, cachev3.IDHash{}, cpLogger{opts.Logger})
	s.delta = serverv3.NewServer(context.Background(), s.deltaCache, s.deltaCallbacks())
	return s, nil
}

// Run watches the store and pushes after each debounced burst of config or
// registry changes, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.opts.Registry != nil {
		cancel := s.opts.Registry.Subscribe(s.kick)
		defer cancel()
	}
	watchDone := make(chan error, 1)
	go func() { watchDone <- s.watchStore(ctx) }()
	for {
		select {
		case <-ctx.Done():
			<-watchDone
			return nil
		case err := <-watchDone:
			return err
		case <-s.kickCh:
		}
		s.pushing.Store(true)
		if !s.debounce(ctx) {
			continue // ctx ended; the next loop returns
		}
		s.flush(ctx)
		s.pushing.Store(false)
	}
}

// idle reports that no push is pending or being computed.
func (s *Server) idle() bool { return !s.pushing.Load() && len(s.kickCh) == 0 }

// debounce waits until no kick came for Debounce, or MaxDelay passed since
// the first one. It reports false when ctx ended.
func (s *Server) debounce(ctx context.Context) bool {
	deadline := time.NewTimer(s.opts.MaxDelay)
	defer deadline.Stop()
	quiet := time.NewTimer(s.opts.Debounce)
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return true
		case <-quiet.C:
			return true
		case <-s.kickCh:
			quiet.Reset(s.opts.Debounce)
		}
	}
}

func (s *Server) kick() {
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

// watchStore lists the store, then applies its watch events, re-listing
// when the watch breaks (e.g. compaction), until ctx ends.
func (s *Server) watchStore(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		all, rev, err := s.opts.Store.List(ctx, "", "")
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("list config store", "err", err)
		} else {
			s.mu.Lock()
			s.configs = make(map[config.Key]*config.Resource, len(all))
			for _, r := range all {
				s.configs[r.Key()] = r
			}
			s.storeRev = rev
			s.mu.Unlock()
			s.kick()
			wctx, wcancel := context.WithCancel(ctx)
			events, err := s.opts.Store.Watch(wctx, rev)
			if err == nil && rev == 0 {
				// Watch(0) means "from now": a write between the empty
				// List and the Watch would be lost. If one happened, list
				// again (now at a revision a watch can start from).
				if _, now, lerr := s.opts.Store.List(ctx, "", ""); lerr == nil && now != 0 {
					wcancel()
					continue
				}
			}
			if err != nil {
				s.log.Error("watch config store", "rev", rev, "err", err)
			} else {
				backoff = 100 * time.Millisecond
				for ev := range events {
					s.applyEvent(ev)
				}
				if ctx.Err() != nil {
					wcancel()
					return nil
				}
				s.log.Warn("config store watch ended; listing again")
			}
			wcancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return nil
}

func (s *Server) applyEvent(ev store.Event) {
	if ev.Resource == nil {
		return
	}
	s.mu.Lock()
	k := ev.Resource.Key()
	if ev.Type == store.Deleted {
		delete(s.configs, k)
	} else {
		s.configs[k] = ev.Resource
	}
	if ev.Revision > s.storeRev {
		s.storeRev = ev.Revision
	}
	s.mu.Unlock()
	s.kick()
}

// flush hands the current configs to the registry and recomputes every
// connected proxy.
func (s *Server) flush(ctx context.Context) {
	start := s.now()
	s.mu.Lock()
	list := make([]*config.Resource, 0, len(s.configs))
	for _, r := range s.configs {
		list = append(list, r)
	}
	rev := s.storeRev
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i].Key(), list[j].Key()
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	s.mu.Lock()
	sameConfigs := s.configList != nil && slices.Equal(list, s.configList)
	s.mu.Unlock()
	if s.opts.Registry != nil && !sameConfigs { // the registry has these already
		s.opts.Registry.SetConfigs(list)
		// A synchronous registry notification for our own SetConfigs is
		// already covered by this flush.
		select {
		case <-s.kickCh:
		default:
		}
	}
	s.metrics.setConfigCounts(list)
	build := s.opts.Generate(list)
	memo := s.newPushMemo()
	s.mu.Lock()
	s.configList, s.flushedRev = list, rev
	s.curBuild, s.curMemo = build, memo
	ps := make([]*proxyState, 0, len(s.proxies))
	for _, p := range s.proxies {
		ps = append(ps, p)
	}
	s.mu.Unlock()

	// GOMAXPROCS workers take the next proxy by index; a proxy's streams
	// are woken as soon as its resources are stored, so the first proxies
	// receive while the others are computed.
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ps) {
					return
				}
				if s.pushProxy(ctx, ps[i], build, rev, memo) {
					s.wakeStreams(ps[i])
				}
			}
		}()
	}
	wg.Wait()
	d := s.now().Sub(start)
	s.metrics.pushDuration.Observe(d.Seconds())
	s.lastPushDur.Store(int64(d))
	s.log.Debug("push computed", "proxies", len(ps), "configs", len(list), "revision", rev, "duration", d)
	s.notify()
}

// pushProxy regenerates one proxy's resources and, when any type changed,
// stores the new sets and reports true: the caller wakes its streams.
func (s *Server) pushProxy(ctx context.Context, p *proxyState, build func(*model.Proxy) (*Resources, error), rev int64, memo *pushMemo) bool {
	p.pushMu.Lock()
	defer p.pushMu.Unlock()
	s.mu.Lock()
	computed, prevRev, prev, prevOut := p.computed, p.rev, p.gen, p.out
	s.mu.Unlock()
	if computed && rev < prevRev {
		return false // a newer config already reached this proxy
	}
	out, err := build(p.proxy)
	if err != nil {
		s.log.Error("generate xDS resources", "node", p.proxy.ID, "err", err)
		s.setGenErr(p, err)
		return false
	}
	if computed && out == prevOut {
		// The generator handed back the very output of the last push
		// (nothing it depends on changed): nothing to hash or send.
		s.mu.Lock()
		p.rev, p.genErr = rev, nil
		s.mu.Unlock()
		return false
	}
	gen := [numTypes][]types.Resource{out.Clusters, out.Listeners, out.Routes, out.Endpoints}
	var old [numTypes][]types.Resource
	if computed && prevOut != nil {
		old = [numTypes][]types.Resource{prevOut.Clusters, prevOut.Listeners, prevOut.Routes, prevOut.Endpoints}
	}
	var next [numTypes]generated
	changed := false
	for i := range numTypes {
		if computed && memo.samePointers(gen[i], old[i]) {
			// The very resource objects of the last push (reused by the
			// generator, e.g. clusters after a VirtualService change):
			// unchanged without hashing.
			next[i] = prev[i]
			continue
		}
		h, size := memo.hash(gen[i])
		if computed && prev[i].hash == h {
			next[i] = prev[i] // unchanged: the same set, not sent again
			continue
		}
		changed = true
		sr := memo.share(i, h, gen[i])
		next[i] = generated{hash: h, size: size, version: sr.version, resources: sr.resources, shared: sr}
	}
	if !changed && computed {
		s.mu.Lock()
		p.rev, p.genErr, p.out = rev, nil, out
		s.mu.Unlock()
		return false
	}
	if p.proxy.Type != model.Proxyless {
		// Consistent() does not understand api_listeners, so it only gates
		// sidecars and gateways.
		if err := memo.consistentFor(next); err != nil {
			s.log.Error("inconsistent snapshot not pushed", "node", p.proxy.ID, "err", err)
			s.setGenErr(p, fmt.Errorf("inconsistent snapshot: %w", err))
			return false
		}
	}
	for i := range numTypes {
		s.metrics.configSize.WithLabelValues(typeNames[i]).Observe(float64(next[i].size))
	}
	s.mu.Lock()
	p.gen, p.computed, p.rev, p.genErr, p.out = next, true, rev, nil, out
	delta := p.deltaOpen > 0
	s.mu.Unlock()
	if delta {
		s.setDeltaSnapshot(ctx, p, next)
	}
	return true
}

// setDeltaSnapshot hands a proxy's sets to the delta server's cache.
func (s *Server) setDeltaSnapshot(ctx context.Context, p *proxyState, gen [numTypes]generated) {
	snap := &cachev3.Snapshot{}
	for i := range numTypes {
		if gen[i].shared != nil {
			snap.Resources[typeIndex[i]] = gen[i].shared.cacheResources()
		}
	}
	if err := s.deltaCache.SetSnapshot(ctx, p.proxy.ID, snap); err != nil {
		s.log.Error("set delta snapshot", "node", p.proxy.ID, "err", err)
	}
}

func (s *Server) setGenErr(p *proxyState, err error) {
	s.mu.Lock()
	p.genErr = err
	s.mu.Unlock()
}

// Serve serves ADS (SotW and delta) on lis until ctx ends.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	g := grpc.NewServer(
		grpc.MaxConcurrentStreams(1<<20),
		// With a connection per proxy, per-connection write buffers add up
		// (32 KiB each); a shared pool holds them only while writing.
		grpc.SharedWriteBuffer(true),
		grpc.ForceServerCodecV2(sharedCodec{base: encoding.GetCodecV2(encodingproto.Name), stats: &s.prepared}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, adsService{s})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			g.Stop()
		}
	}()
	err := g.Serve(lis)
	if ctx.Err() != nil {
		<-stopped
		return nil
	}
	if err != nil {
		return fmt.Errorf("serve xDS on %s: %w", lis.Addr(), err)
	}
	return nil
}

// Resource type order used in per-proxy arrays.
const (
	cds = iota
	lds
	rds
	eds
	numTypes
)

var (
	typeNames = [numTypes]string{"CDS", "LDS", "RDS", "EDS"}
	typeURLs  = [numTypes]string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.EndpointType}
	typeIndex = [numTypes]types.ResponseType{types.Cluster, types.Listener, types.Route, types.Endpoint}
)

func typeOf(url string) int {
	for i, u := range typeURLs {
		if u == url {
			return i
		}
	}
	return -1
}

// cpLogger adapts slog to go-control-plane's logger; its Infof chatter
// (one line per watch) goes to Debug.
type cpLogger struct{ l *slog.Logger }

func (c cpLogger) Debugf(f string, a ...any) { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cpLogger) Infof(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cpLogger) Warnf(f string, a ...any)  { c.l.Warn(fmt.Sprintf(f, a...)) }
func (c cpLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...)) }

// pushMemo is shared by every proxy of one push: it carries the push's
// version and caches resource digests and, per type and content hash, the
// sorted resources and the cache's index of them, so proxies with equal
// config share one copy.
type pushMemo struct {
	version string
	digests *sync.Map // types.Resource -> digest
	// prevDigests are the previous push's digests: resources the
	// generator reused from it (translate.NewCacheFrom) are not marshaled
	// again. Only one push back is kept (maps, not memos, are chained).
	prevDigests *sync.Map
	shared      sync.Map // sharedKey -> *sharedResources
	consistent  sync.Map // [numTypes][32]byte -> error (nil allowed)
	// sets caches hashResources by slice identity: a generator that hands
	// many proxies the same slice gets it hashed once per push.
	sets sync.Map // sliceKey -> setHash
	// same caches samePointers by pair of slices.
	same sync.Map // [2]sliceKey -> bool
	// rcForms holds route configurations in VHDS form (deltaview.go),
	// shared with the push's RDS sets.
	rcForms *sync.Map // *routev3.RouteConfiguration -> *rcForm
}

type sliceKey struct {
	first *types.Resource
	n     int
}

type setHash struct {
	sum  [32]byte
	size int
}

// hash is hashResources with the push's memos. Generated slices must not
// change after the generator returns them.
func (m *pushMemo) hash(rs []types.Resource) ([32]byte, int) {
	if len(rs) == 0 {
		return hashWith(rs, m.digests, m.prevDigests)
	}
	k := sliceKey{&rs[0], len(rs)}
	if v, ok := m.sets.Load(k); ok {
		h := v.(setHash)
		return h.sum, h.size
	}
	sum, size := hashWith(rs, m.digests, m.prevDigests)
	m.sets.Store(k, setHash{sum, size})
	return sum, size
}

// samePointers reports whether a and b hold the same resource objects in
// the same order (memoized per pair of slices for the push). Generated
// resources are immutable, so such sets have the same content.
func (m *pushMemo) samePointers(a, b []types.Resource) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	k := [2]sliceKey{{&a[0], len(a)}, {&b[0], len(b)}}
	if v, ok := m.same.Load(k); ok {
		return v.(bool)
	}
	same := true
	for i := range a {
		if a[i] != b[i] {
			same = false
			break
		}
	}
	m.same.Store(k, same)
	return same
}

type sharedKey struct {
	typ  int
	hash [32]byte
}

func (s *Server) newPushMemo() *pushMemo {
	m := &pushMemo{version: strconv.FormatInt(s.version.Add(1), 10), digests: &sync.Map{}, rcForms: &sync.Map{}}
	s.mu.Lock()
	if s.curMemo != nil {
		m.prevDigests = s.curMemo.digests
	}
	s.mu.Unlock()
	return m
}

// consistentFor runs Snapshot.Consistent once per distinct set of content
// hashes.
func (m *pushMemo) consistentFor(gen [numTypes]generated) error {
	var k [numTypes][32]byte
	for i := range numTypes {
		k[i] = gen[i].hash
	}
	if v, ok := m.consistent.Load(k); ok {
		err, _ := v.(error)
		return err
	}
	snap := &cachev3.Snapshot{}
	for i := range numTypes {
		snap.Resources[typeIndex[i]] = gen[i].shared.cacheResources()
	}
	err := snap.Consistent()
	m.consistent.Store(k, err)
	return err
}

func (m *pushMemo) share(typ int, h [32]byte, rs []types.Resource) *sharedResources {
	k := sharedKey{typ, h}
	if v, ok := m.shared.Load(k); ok {
		return v.(*sharedResources)
	}
	sorted := sortByName(rs)
	sr := &sharedResources{version: m.version, resources: sorted}
	if typ == rds {
		sr.rcForms = m.rcForms
	}
	// The encodings hashing made (shared by every set that holds the same
	// resource objects): the response is assembled from them, not
	// marshaled again.
	enc := make([][]byte, len(sorted))
	sums := make([][32]byte, len(sorted))
	for i, r := range sorted {
		d, ok := m.digests.Load(r)
		if !ok || d.(digest).enc == nil {
			enc, sums = nil, nil
			break
		}
		enc[i], sums[i] = d.(digest).enc, d.(digest).sum
	}
	sr.encoded, sr.sums = enc, sums
	v, _ := m.shared.LoadOrStore(k, sr)
	return v.(*sharedResources)
}
