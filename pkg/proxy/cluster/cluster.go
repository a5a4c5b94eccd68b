// Package cluster turns CDS clusters and EDS load assignments into the
// proxy's upstream model: hosts with per-host counters, a load-balancing
// picker, priority failover, circuit breakers, outlier detection, and
// per-cluster HTTP transports. A Manager keeps per-host and per-cluster
// state (counters, ejections, connection pools) across config updates.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/weftmesh/weft/pkg/proxy/cluster/lb"
)

// ErrUnsupported marks cluster configuration the proxy cannot execute.
var ErrUnsupported = errors.New("unsupported")

// Clock returns the current time; injected for tests.
type Clock func() time.Time

// Host is one upstream endpoint: immutable configuration per build, plus
// live counters shared across builds for the same address.
type Host struct {
	Addr     string // host:port
	Workload string // istio workload metadata, for telemetry
	Locality string
	Priority uint32
	weight   uint32
	*hostState
}

// hostState holds a host's live counters; it outlives config updates.
type hostState struct {
	active       atomic.Int64
	consec5xx    atomic.Int32
	consecGw     atomic.Int32
	ejectedUntil atomic.Int64 // unix ns; 0 when not ejected
	ejections    atomic.Int32
	Requests     atomic.Uint64
	Failures     atomic.Uint64
}

// Healthy implements lb.Host.
func (h *Host) Healthy(now int64) bool { return h.ejectedUntil.Load() <= now }

// Active implements lb.Host.
func (h *Host) Active() int64 { return h.active.Load() }

// Weight implements lb.Host.
func (h *Host) Weight() uint32 { return h.weight }

// Key implements lb.Host.
func (h *Host) Key() string { return h.Addr }

// Begin marks a request in flight; call the returned func when done.
func (h *Host) Begin() func() {
	h.active.Add(1)
	h.Requests.Add(1)
	return func() { h.active.Add(-1) }
}

var _ lb.Host = (*Host)(nil)

// Thresholds are circuit-breaker limits (Envoy defaults 1024 each, retries 3).
type Thresholds struct {
	MaxConnections, MaxPending, MaxRequests, MaxRetries int64
}

// Breakers are a cluster's live circuit-breaker gauges and the cluster's
// counters, named after Envoy's cluster statistics.
type Breakers struct {
	// Gauges: pending requests, active requests, active retries.
	Pending, Requests, Retries atomic.Int64
	// Counters.
	PendingOverflow, RequestOverflow, RetryOverflow atomic.Uint64
	PendingTotal, RequestTotal, RetryTotal          atomic.Uint64
	Ejections                                       atomic.Uint64
}

// Outlier is a compiled outlier_detection.
type Outlier struct {
	Consecutive5xx     int32 // 0 disables
	ConsecutiveGateway int32 // 0 disables
	Interval           time.Duration
	BaseEjection       time.Duration
	MaxEjection        time.Duration
	MaxEjectionPercent int
}

// Cluster is one immutable compiled cluster; its hosts and breakers are
// shared live state.
type Cluster struct {
	Name string
	// Passthrough clusters (ORIGINAL_DST) send to the request's own address.
	Passthrough bool
	// BlackHole clusters have no endpoints on purpose.
	Hosts      []*Host
	levels     []level // by ascending priority
	Picker     lb.Picker
	HashBased  bool
	Thresholds Thresholds
	Breakers   *Breakers
	Outlier    *Outlier
	// MaxRequestsPerConnection; 0 is unlimited.
	MaxRequestsPerConnection uint32
	ConnectTimeout           time.Duration
	// UpstreamH2 forces prior-knowledge HTTP/2 (h2c) upstream; otherwise
	// the downstream protocol is used (Envoy's USE_DOWNSTREAM_PROTOCOL).
	UpstreamH2 bool
	// Transport is the HTTP/1.1 pool; H2C the prior-knowledge HTTP/2 pool.
	Transport *http.Transport
	H2C       *http.Transport
	// H1, when set, is the own HTTP/1.1 pool plain requests use instead of
	// Transport (see H1Pool); nil for clusters with a connection limit.
	H1 *H1Pool
	// Warnings lists configuration accepted but not executed.
	Warnings []string
	// MTLS, when set, makes upstream connections mutual TLS (see tls.go).
	MTLS *UpstreamMTLS

	clock   Clock
	mtlsCfg MTLSClient
}

type level struct {
	priority uint32
	hosts    []lb.Host
	picker   lb.Picker
}

// ErrNoHealthyHost means every host is ejected or there are none (UH).
var ErrNoHealthyHost = errors.New("no healthy upstream")

// Pick chooses a host: the lowest priority level that has a healthy host,
// then the cluster's picker within it.
func (c *Cluster) Pick(hash uint64) (*Host, error) {
	now := c.clock().UnixNano()
	for i := range c.levels {
		l := &c.levels[i]
		if idx := l.picker.Pick(l.hosts, now, hash); idx >= 0 {
			return l.hosts[idx].(*Host), nil
		}
	}
	return nil, ErrNoHealthyHost
}

// Other returns a healthy host other than h in the lowest priority level
// that has one, starting the scan at offset n; it returns h when there is
// none. Retries use it to avoid the host that just failed.
func (c *Cluster) Other(h *Host, n uint64) *Host {
	now := c.clock().UnixNano()
	for i := range c.levels {
		hs := c.levels[i].hosts
		for k := range hs {
			x := hs[(n+uint64(k))%uint64(len(hs))].(*Host)
			if x != h && x.Healthy(now) {
				return x
			}
		}
	}
	return h
}

// Report feeds a request's outcome to outlier detection. status is the
// HTTP status, or 0 for a connect failure / reset.
func (c *Cluster) Report(h *Host, status int) {
	o := c.Outlier
	if status >= 500 || status == 0 {
		h.Failures.Add(1)
	}
	if o == nil {
		return
	}
	gw := status == 0 || status == 502 || status == 503 || status == 504
	switch {
	case status >= 500 || status == 0:
		n5 := h.consec5xx.Add(1)
		ng := int32(0)
		if gw {
			ng = h.consecGw.Add(1)
		} else {
			h.consecGw.Store(0)
		}
		if (o.Consecutive5xx > 0 && n5 >= o.Consecutive5xx) || (o.ConsecutiveGateway > 0 && ng >= o.ConsecutiveGateway) {
			c.eject(h)
		}
	default:
		h.consec5xx.Store(0)
		h.consecGw.Store(0)
	}
}

func (c *Cluster) eject(h *Host) {
	now := c.clock()
	if !h.Healthy(now.UnixNano()) {
		return
	}
	ejected := 0
	for _, x := range c.Hosts {
		if !x.Healthy(now.UnixNano()) {
			ejected++
		}
	}
	// At least one host may always be ejected (Envoy's always_eject_one_host
	// behaviour, which Istio relies on); beyond that honour the percentage.
	if ejected > 0 && (ejected+1)*100 > c.Outlier.MaxEjectionPercent*len(c.Hosts) {
		return
	}
	n := h.ejections.Add(1)
	d := c.Outlier.BaseEjection * time.Duration(n)
	if c.Outlier.MaxEjection > 0 && d > c.Outlier.MaxEjection {
		d = c.Outlier.MaxEjection
	}
	h.ejectedUntil.Store(now.Add(d).UnixNano())
	c.Breakers.Ejections.Add(1)
	h.consec5xx.Store(0)
	h.consecGw.Store(0)
}

// EjectedCount is the number of hosts ejected now.
func (c *Cluster) EjectedCount() int {
	now := c.clock().UnixNano()
	n := 0
	for _, h := range c.Hosts {
		if !h.Healthy(now) {
			n++
		}
	}
	return n
}

// Ejected reports whether h is ejected now.
func (c *Cluster) Ejected(h *Host) bool { return !h.Healthy(c.clock().UnixNano()) }

// Manager builds clusters and keeps their live state across updates.
type Manager struct {
	log   *slog.Logger
	clock Clock
	rnd   lb.Rand

	mu    sync.Mutex
	state map[string]*clusterState
	mtls  MTLSClient
}

type clusterState struct {
	hosts    map[string]*hostState
	breakers *Breakers
	tkey     string
	t1, t2   *http.Transport
	h1       *H1Pool
}

// NewManager returns a Manager. rnd and clock may be nil for defaults.
func NewManager(log *slog.Logger, clock Clock, rnd lb.Rand) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if clock == nil {
		clock = time.Now
	}
	return &Manager{log: log, clock: clock, rnd: lb.NewLockedRand(rnd), state: map[string]*clusterState{}}
}

// Set is an immutable set of compiled clusters.
type Set struct {
	Clusters map[string]*Cluster
}

// Build compiles clusters with their load assignments. prev supplies the
// last endpoints for EDS clusters whose assignment has not arrived. It does
// not modify live state of clusters when it fails.
func (m *Manager) Build(clusters map[string]*clusterv3.Cluster, cla map[string]*endpointv3.ClusterLoadAssignment, edsName func(*clusterv3.Cluster) string, prev *Set) (*Set, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &Set{Clusters: map[string]*Cluster{}}
	names := make([]string, 0, len(clusters))
	for n := range clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	type pending struct {
		c  *Cluster
		st *clusterState
	}
	var built []pending
	for _, n := range names {
		pc := clusters[n]
		st := m.state[n]
		if st == nil {
			st = &clusterState{hosts: map[string]*hostState{}, breakers: &Breakers{}}
		}
		var assignment *endpointv3.ClusterLoadAssignment
		var prevHosts []*Host
		switch pc.GetClusterDiscoveryType().(type) {
		case *clusterv3.Cluster_Type:
		default:
			return nil, fmt.Errorf("cluster %q: custom cluster type: %w", n, ErrUnsupported)
		}
		switch pc.GetType() {
		case clusterv3.Cluster_EDS:
			assignment = cla[edsName(pc)]
			if assignment == nil && prev != nil && prev.Clusters[n] != nil {
				prevHosts = prev.Clusters[n].Hosts
			}
		case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			assignment = pc.GetLoadAssignment()
		case clusterv3.Cluster_ORIGINAL_DST:
		default:
			return nil, fmt.Errorf("cluster %q: type %v: %w", n, pc.GetType(), ErrUnsupported)
		}
		c, newHosts, err := m.compile(pc, assignment, prevHosts, st)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", n, err)
		}
		built = append(built, pending{c, &clusterState{hosts: newHosts, breakers: st.breakers, tkey: st.tkey, t1: st.t1, t2: st.t2, h1: st.h1}})
		out.Clusters[n] = c
	}
	// Commit live state only once everything compiled.
	newState := map[string]*clusterState{}
	for _, b := range built {
		key := transportKey(b.c)
		if b.st.tkey != key || b.st.t1 == nil {
			if b.st.t1 != nil {
				b.st.t1.CloseIdleConnections()
				b.st.t2.CloseIdleConnections()
			}
			if b.st.h1 != nil {
				b.st.h1.Close()
			}
			b.st.t1, b.st.t2 = newTransports(b.c)
			b.st.h1 = newH1Pool(b.c)
			b.st.tkey = key
		}
		b.c.Transport, b.c.H2C, b.c.H1 = b.st.t1, b.st.t2, b.st.h1
		newState[b.c.Name] = b.st
	}
	for n, st := range m.state {
		if newState[n] == nil && st.t1 != nil {
			st.t1.CloseIdleConnections()
			st.t2.CloseIdleConnections()
		}
		if newState[n] == nil && st.h1 != nil {
			st.h1.Close()
		}
	}
	m.state = newState
	return out, nil
}

func (m *Manager) compile(pc *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, prevHosts []*Host, st *clusterState) (*Cluster, map[string]*hostState, error) {
	c := &Cluster{Name: pc.GetName(), Breakers: st.breakers, clock: m.clock,
		Passthrough:    pc.GetType() == clusterv3.Cluster_ORIGINAL_DST,
		ConnectTimeout: 10 * time.Second,
		Thresholds:     Thresholds{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3}}
	if pc.GetConnectTimeout() != nil {
		c.ConnectTimeout = pc.GetConnectTimeout().AsDuration()
	}
	for _, t := range pc.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != corev3.RoutingPriority_DEFAULT {
			continue
		}
		if v := t.GetMaxConnections(); v != nil {
			c.Thresholds.MaxConnections = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			c.Thresholds.MaxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			c.Thresholds.MaxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			c.Thresholds.MaxRetries = int64(v.GetValue())
		}
	}
	if v := pc.GetMaxRequestsPerConnection(); v != nil {
		c.MaxRequestsPerConnection = v.GetValue()
	}
	if a := pc.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; a != nil {
		po := &httpv3.HttpProtocolOptions{}
		if err := a.UnmarshalTo(po); err != nil {
			return nil, nil, fmt.Errorf("http protocol options: %w", err)
		}
		if v := po.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection(); v != nil {
			c.MaxRequestsPerConnection = v.GetValue()
		}
		if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			c.UpstreamH2 = true
		}
	}
	if pc.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // deprecated field still sent by older control planes
		c.UpstreamH2 = true
	}
	localityWeighted := pc.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	if err := m.compileTLS(pc, c); err != nil {
		return nil, nil, err
	}
	if od := pc.GetOutlierDetection(); od != nil {
		o := &Outlier{Consecutive5xx: 5, ConsecutiveGateway: 5, Interval: 10 * time.Second,
			BaseEjection: 30 * time.Second, MaxEjection: 300 * time.Second, MaxEjectionPercent: 10}
		if v := od.GetConsecutive_5Xx(); v != nil {
			o.Consecutive5xx = int32(v.GetValue())
		}
		if v := od.GetEnforcingConsecutive_5Xx(); v != nil && v.GetValue() == 0 {
			o.Consecutive5xx = 0
		}
		if v := od.GetConsecutiveGatewayFailure(); v != nil {
			o.ConsecutiveGateway = int32(v.GetValue())
		}
		// Envoy enforces gateway failures at 0% unless told otherwise.
		if v := od.GetEnforcingConsecutiveGatewayFailure(); v == nil || v.GetValue() == 0 {
			o.ConsecutiveGateway = 0
		}
		if v := od.GetInterval(); v != nil {
			o.Interval = v.AsDuration()
		}
		if v := od.GetBaseEjectionTime(); v != nil {
			o.BaseEjection = v.AsDuration()
		}
		if v := od.GetMaxEjectionTime(); v != nil {
			o.MaxEjection = v.AsDuration()
		}
		if v := od.GetMaxEjectionPercent(); v != nil {
			o.MaxEjectionPercent = int(v.GetValue())
		}
		c.Outlier = o
	}
	newHosts := map[string]*hostState{}
	if cla != nil {
		byPrio := map[uint32][]lb.Host{}
		for _, le := range cla.GetEndpoints() {
			var sumW uint64
			for _, e := range le.GetLbEndpoints() {
				sumW += uint64(max(e.GetLoadBalancingWeight().GetValue(), 1))
			}
			loc := le.GetLocality()
			locName := loc.GetRegion() + "/" + loc.GetZone() + "/" + loc.GetSubZone()
			lw := uint32(1)
			if le.GetLoadBalancingWeight() != nil {
				lw = le.GetLoadBalancingWeight().GetValue()
			}
			for _, e := range le.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				if sa == nil {
					return nil, nil, fmt.Errorf("endpoint without socket address: %w", ErrUnsupported)
				}
				addr := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
				w := uint32(1)
				if e.GetLoadBalancingWeight() != nil && e.GetLoadBalancingWeight().GetValue() > 0 {
					w = e.GetLoadBalancingWeight().GetValue()
				}
				key := addr + "|" + strconv.Itoa(int(le.GetPriority()))
				hs := st.hosts[key]
				if hs == nil {
					hs = &hostState{}
				}
				h := &Host{Addr: addr, Priority: le.GetPriority(), Locality: locName, hostState: hs}
				h.weight = w
				if localityWeighted && sumW > 0 {
					// Fold the locality weight into the host weight: the
					// locality gets lw/sum(lw) of the traffic, shared by
					// its hosts in proportion to their weights.
					h.weight = uint32(max(uint64(w)*uint64(lw)*1000/sumW, 1))
				}
				if md := e.GetMetadata().GetFilterMetadata()["istio"]; md != nil {
					h.Workload = md.GetFields()["workload"].GetStringValue()
				}
				newHosts[key] = hs
				c.Hosts = append(c.Hosts, h)
				byPrio[h.Priority] = append(byPrio[h.Priority], h)
			}
		}
		prios := make([]uint32, 0, len(byPrio))
		for p := range byPrio {
			prios = append(prios, p)
		}
		sort.Slice(prios, func(i, j int) bool { return prios[i] < prios[j] })
		for _, p := range prios {
			c.levels = append(c.levels, level{priority: p, hosts: byPrio[p]})
		}
	} else {
		for _, h := range prevHosts {
			newHosts[h.Addr+"|"+strconv.Itoa(int(h.Priority))] = h.hostState
			c.Hosts = append(c.Hosts, h)
		}
		if len(prevHosts) > 0 {
			c.levels = []level{{hosts: toLB(prevHosts)}}
		}
	}
	for i := range c.levels {
		p, hashBased, err := m.picker(pc, c.levels[i].hosts)
		if err != nil {
			return nil, nil, err
		}
		c.levels[i].picker, c.HashBased = p, hashBased
	}
	if c.levels == nil {
		_, hb, err := m.picker(pc, nil)
		if err != nil {
			return nil, nil, err
		}
		c.HashBased = hb
	}
	return c, newHosts, nil
}

func toLB(hs []*Host) []lb.Host {
	out := make([]lb.Host, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out
}

func (m *Manager) picker(pc *clusterv3.Cluster, hosts []lb.Host) (lb.Picker, bool, error) {
	weighted := false
	for _, h := range hosts {
		if h.Weight() != 1 {
			weighted = true
		}
	}
	switch pc.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		if weighted {
			return &lb.Random{Rnd: m.rnd}, false, nil
		}
		return &lb.RoundRobin{}, false, nil
	case clusterv3.Cluster_LEAST_REQUEST:
		return &lb.LeastRequest{Rnd: m.rnd}, false, nil
	case clusterv3.Cluster_RANDOM:
		return &lb.Random{Rnd: m.rnd}, false, nil
	case clusterv3.Cluster_RING_HASH:
		size := int(pc.GetRingHashLbConfig().GetMinimumRingSize().GetValue())
		return lb.NewRingHash(hosts, size), true, nil
	case clusterv3.Cluster_MAGLEV:
		size := int(pc.GetMaglevLbConfig().GetTableSize().GetValue())
		return lb.NewMaglev(hosts, size), true, nil
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		if pc.GetType() == clusterv3.Cluster_ORIGINAL_DST {
			return &lb.RoundRobin{}, false, nil
		}
	}
	return nil, false, fmt.Errorf("lb_policy %v: %w", pc.GetLbPolicy(), ErrUnsupported)
}

func transportKey(c *Cluster) string {
	return fmt.Sprintf("%d|%d|%s|%t|%s", c.Thresholds.MaxConnections, c.MaxRequestsPerConnection, c.ConnectTimeout, c.UpstreamH2, c.MTLS.key())
}

// connLimiter bounds a cluster's open upstream connections (Envoy's
// max_connections is per cluster, not per host): a dial waits for a slot,
// and closing a connection frees one.
type connLimiter struct {
	d     *net.Dialer
	slots chan struct{}
	// onFull frees idle pooled connections so that a dial to another host
	// does not wait for the idle timeout.
	onFull func()
}

func (l *connLimiter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	default:
		if l.onFull != nil {
			l.onFull()
		}
		select {
		case l.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := l.d.DialContext(ctx, network, addr)
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CountedConn is an HTTP/1.1 upstream connection with a request budget
// (max_requests_per_connection). The forwarding code calls Use when the
// transport hands it the connection and closes the connection after the
// response that used the last request.
type CountedConn struct {
	net.Conn
	uses  atomic.Uint32
	limit uint32
}

// Use counts one request and reports whether it exhausted the budget.
func (c *CountedConn) Use() bool { return c.uses.Add(1) >= c.limit }

func newTransports(c *Cluster) (*http.Transport, *http.Transport) {
	d := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	dial := d.DialContext
	var limiter *connLimiter
	if c.Thresholds.MaxConnections < 1024 && c.Thresholds.MaxConnections > 0 {
		limiter = &connLimiter{d: d, slots: make(chan struct{}, c.Thresholds.MaxConnections)}
		dial = limiter.dial
	}
	if c.MTLS != nil && c.mtlsCfg != nil {
		dial = c.MTLS.tlsDial(c.mtlsCfg, dial)
	}
	dial1 := dial
	if n := c.MaxRequestsPerConnection; n > 1 {
		dial1 = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &CountedConn{Conn: conn, limit: n}, nil
		}
	}
	mk := func() *http.Transport {
		t := &http.Transport{
			DialContext:           dial1,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true,
			ExpectContinueTimeout: time.Second,
		}
		if c.Thresholds.MaxConnections < 1024 {
			t.MaxConnsPerHost = int(c.Thresholds.MaxConnections)
		}
		if c.MaxRequestsPerConnection == 1 {
			t.DisableKeepAlives = true
		}
		return t
	}
	t1 := mk()
	t2 := mk()
	t2.DialContext = dial // HTTP/2 multiplexes: no per-connection request cap
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	t2.Protocols = p
	if limiter != nil {
		limiter.onFull = func() {
			t1.CloseIdleConnections()
			t2.CloseIdleConnections()
		}
	}
	return t1, t2
}

// Static returns a standalone cluster with one host and default limits,
// for the inbound fallback straight to the local application.
func Static(name, addr string) *Cluster {
	h := &Host{Addr: addr, weight: 1, hostState: &hostState{}}
	c := &Cluster{Name: name, Hosts: []*Host{h}, Breakers: &Breakers{}, clock: time.Now, ConnectTimeout: 10 * time.Second,
		Thresholds: Thresholds{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3}}
	c.levels = []level{{hosts: []lb.Host{h}, picker: &lb.RoundRobin{}}}
	c.Transport, c.H2C = newTransports(c)
	c.H1 = newH1Pool(c)
	return c
}

// newH1Pool returns the own HTTP/1.1 pool for c, or nil when c limits its
// connections (max_connections below 1024): those keep net/http's
// Transport, whose per-host connection cap and wait queue the circuit
// breaker semantics rely on.
func newH1Pool(c *Cluster) *H1Pool {
	if c.Thresholds.MaxConnections > 0 && c.Thresholds.MaxConnections < 1024 {
		return nil
	}
	d := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	dial := d.DialContext
	if c.MTLS != nil && c.mtlsCfg != nil {
		dial = c.MTLS.tlsDial(c.mtlsCfg, dial)
	}
	return NewH1Pool(dial, c.MaxRequestsPerConnection)
}
