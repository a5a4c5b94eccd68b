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
	"math"
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
	"github.com/weftmesh/weft/pkg/proxy/sockio"
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
	active      atomic.Int64
	consec5xx   atomic.Int32
	consecGw    atomic.Int32
	consecLocal atomic.Int32 // local-origin failures (split mode)
	// ivRequests/ivFailures count requests and failures since the last
	// outlier sweep (success-rate and failure-percentage detection).
	ivRequests   atomic.Uint64
	ivFailures   atomic.Uint64
	ejectedUntil atomic.Int64 // unix ns; 0 when not ejected
	ejections    atomic.Int32
	Requests     atomic.Uint64
	Failures     atomic.Uint64
	// slowStartAt is when the host joined its cluster (unix ns), 0 for
	// the cluster's first hosts; set once, before the host is
	// published (see lb.SlowStart).
	slowStartAt int64
}

// Healthy implements lb.Host.
func (h *Host) Healthy(now int64) bool { return h.ejectedUntil.Load() <= now }

// Active implements lb.Host.
func (h *Host) Active() int64 { return h.active.Load() }

// Weight implements lb.Host.
func (h *Host) Weight() uint32 { return h.weight }

// Key implements lb.Host.
func (h *Host) Key() string { return h.Addr }

// SlowStartAt implements lb.Warming.
func (h *Host) SlowStartAt() int64 { return h.slowStartAt }

// Begin marks a request in flight; call the returned func when done.
func (h *Host) Begin() func() {
	h.Enter()
	return h.Leave
}

// Enter counts a request to h as active (LEAST_REQUEST) and in
// Requests; Leave ends it. The pair is Begin without the closure.
func (h *Host) Enter() {
	h.active.Add(1)
	h.Requests.Add(1)
}

// Leave ends a request counted by Enter.
func (h *Host) Leave() { h.active.Add(-1) }

var (
	_ lb.Host    = (*Host)(nil)
	_ lb.Warming = (*Host)(nil)
)

// Thresholds are circuit-breaker limits (Envoy defaults 1024 each, retries 3).
type Thresholds struct {
	MaxConnections, MaxPending, MaxRequests, MaxRetries int64
	// RetryBudget, when set (retry_budget, Istio's trafficPolicy.retryBudget),
	// replaces MaxRetries as the limit on concurrent retries.
	RetryBudget *RetryBudget
}

// RetryBudget is Envoy's circuit_breakers.thresholds.retry_budget: at most
// max(MinConcurrency, Percent % of the cluster's active requests) retries
// at once, active requests counting pending ones (Envoy's "active
// requests + active pending requests").
type RetryBudget struct {
	Percent        float64 // budget_percent; default 20
	MinConcurrency int64   // min_retry_concurrency; default 3
}

// RetryLimit is the number of concurrent retries the cluster admits now:
// the retry budget computed from the requests in flight when it has one,
// else max_retries. A retry is admitted while Breakers.Retries (including
// itself) does not exceed it.
func (c *Cluster) RetryLimit() int64 {
	b := c.Thresholds.RetryBudget
	if b == nil {
		return c.Thresholds.MaxRetries
	}
	// Breakers.Requests counts every request of the cluster in flight,
	// pending ones included.
	return max(b.MinConcurrency, int64(b.Percent/100*float64(c.Breakers.Requests.Load())))
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
	// HealthyPanic counts picks made in panic mode (Envoy's
	// lb_healthy_panic): too few healthy hosts, so all hosts were used.
	HealthyPanic atomic.Uint64
	// LocalOriginEjections counts consecutive local-origin failure ejections.
	LocalOriginEjections atomic.Uint64
	// anchor is when the cluster's outlier detection timer started (unix
	// ns): ejections end on interval ticks counted from it, as Envoy's
	// detector un-ejects hosts only when its interval timer fires.
	anchor atomic.Int64
	// nextSweep is when the next success-rate / failure-percentage
	// analysis runs (unix ns); the request that finds it due runs it.
	nextSweep atomic.Int64
	// SuccessRateEjections, FailurePercentageEjections count ejections by
	// those detectors (Envoy's ejections_enforced_success_rate and
	// ejections_enforced_failure_percentage).
	SuccessRateEjections, FailurePercentageEjections atomic.Uint64
}

// Outlier is a compiled outlier_detection.
type Outlier struct {
	Consecutive5xx     int32 // 0 disables; default 5
	ConsecutiveGateway int32 // 0 disables; Envoy enforces it only when asked
	// SplitLocalOrigin (split_external_local_origin_errors) keeps
	// local-origin failures (connect failure, reset, timeout) apart from
	// upstream 5xx: they count only towards ConsecutiveLocal. Without it a
	// local-origin failure counts as a 503 (504 for a timeout).
	SplitLocalOrigin bool
	ConsecutiveLocal int32 // consecutive_local_origin_failure; 0 disables; default 5
	// Interval is the analysis sweep (default 10 s): an ejected host returns
	// on the first sweep after its ejection time, and every sweep a healthy
	// host spends back in service lowers its ejection multiplier by one.
	Interval           time.Duration
	BaseEjection       time.Duration // default 30 s, multiplied by the times ejected
	MaxEjection        time.Duration // cap of one ejection; default 300 s
	MaxEjectionPercent int           // default 10

	// Success-rate detection (Envoy's success_rate_*): at each sweep, among
	// hosts with at least SuccessRateRequestVolume requests in the interval
	// (default 100), if there are SuccessRateMinimumHosts of them (default
	// 5), a host whose success rate is below mean − stdev ×
	// SuccessRateStdevFactor/1000 (default 1900) is ejected, with
	// probability EnforcingSuccessRate % (Envoy's default 100; Istio sends 0).
	EnforcingSuccessRate     uint32
	SuccessRateMinimumHosts  int
	SuccessRateRequestVolume uint64
	SuccessRateStdevFactor   float64
	// Failure-percentage detection (failure_percentage_*): a host with at
	// least FailurePercentageRequestVolume requests (default 50), among at
	// least FailurePercentageMinimumHosts such hosts (default 5), whose
	// failure share is >= FailurePercentageThreshold % (default 85) is
	// ejected with probability EnforcingFailurePercentage % (default 0).
	EnforcingFailurePercentage     uint32
	FailurePercentageThreshold     uint64
	FailurePercentageMinimumHosts  int
	FailurePercentageRequestVolume uint64
}

// LocalTimeout is the status Report takes for a request that timed out
// waiting for the upstream (a local-origin failure; 504 when local-origin
// errors are not split).
const LocalTimeout = -1

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
	// PanicThreshold is common_lb_config.healthy_panic_threshold in percent
	// (Envoy's default 50; 0 disables panic mode): when a priority level's
	// healthy share falls below it (and the levels together cannot carry
	// all traffic), that level balances over all its hosts, healthy or not.
	PanicThreshold float64
	// MaxRequestsPerConnection; 0 is unlimited.
	MaxRequestsPerConnection uint32
	ConnectTimeout           time.Duration
	// UpstreamH2 forces prior-knowledge HTTP/2 (h2c) upstream; otherwise
	// the downstream protocol is used (Envoy's USE_DOWNSTREAM_PROTOCOL).
	UpstreamH2 bool
	// Transport is the HTTP/1.1 pool; H2C the prior-knowledge HTTP/2 pool;
	// XC the prior-knowledge HTTP/2 pool for RFC 8441 extended CONNECT
	// streams (see XConnect).
	Transport *http.Transport
	H2C       *http.Transport
	XC        *XConnect
	// H1, when set, is the own HTTP/1.1 pool plain requests use instead of
	// Transport (see H1Pool); nil for clusters with a connection limit.
	H1 *H1Pool
	// Warnings lists configuration accepted but not executed.
	Warnings []string
	// MTLS, when set, makes upstream connections mutual TLS (see tls.go).
	MTLS *UpstreamMTLS
	// Origin, when set, makes the proxy originate TLS upstream (see tls.go).
	Origin *UpstreamTLS
	// ProxyProtocol, when set, makes every upstream connection start with
	// a PROXY protocol header (see proxyprotocol.go and Pools).
	ProxyProtocol *ProxyProtocol
	pp            *ppPools // per-downstream HTTP pools of a ProxyProtocol cluster

	// PeerExchange is the ALPN protocol of the cluster's Istio metadata
	// exchange filter (istio.metadata_exchange), "" without one: opaque
	// connections (DialContext) that negotiate it exchange workload
	// metadata with the server (see peerexchange.go).
	PeerExchange string
	peerFrame    []byte

	clock   Clock
	rnd     lb.Rand
	mtlsCfg MTLSClient
	// errorCodes, when set, decides which responses are outlier-detection
	// errors (HttpProtocolOptions.outlier_detection.error_matcher).
	errorCodes *errorCodes
}

type level struct {
	priority uint32
	hosts    []lb.Host
	picker   lb.Picker
}

// ErrNoHealthyHost means every host is ejected or there are none (UH).
var ErrNoHealthyHost = errors.New("no healthy upstream")

// Pick chooses a host: a priority level by Envoy's priority load (each
// level takes traffic in proportion to its healthy share × 1.4, the
// overprovisioning factor, lower priorities first), then the cluster's
// picker within it, over all of the level's hosts when the level is in
// panic (see PanicThreshold).
func (c *Cluster) Pick(hash uint64) (*Host, error) {
	now := c.clock().UnixNano()
	if c.Outlier == nil {
		// Nothing ejects hosts: every level is fully healthy, so the lowest
		// priority takes all traffic.
		for i := range c.levels {
			l := &c.levels[i]
			if idx := l.picker.Pick(l.hosts, now, hash); idx >= 0 {
				return l.hosts[idx].(*Host), nil
			}
		}
		return nil, ErrNoHealthyHost
	}
	i, panicked := c.chooseLevel(now, hash)
	if i < 0 {
		return nil, ErrNoHealthyHost
	}
	l := &c.levels[i]
	t := now
	if panicked {
		t = math.MaxInt64 // every host counts as healthy
		c.Breakers.HealthyPanic.Add(1)
	}
	if idx := l.picker.Pick(l.hosts, t, hash); idx >= 0 {
		return l.hosts[idx].(*Host), nil
	}
	return nil, ErrNoHealthyHost
}

// PickExcluding is Pick for a retry whose retry priority excludes the
// priority levels whose bits are set in excluded (bit p for priority p <
// 64; Envoy's previous_priorities): the lowest level not excluded that has
// a healthy host takes the request (Envoy spreads it over the remaining
// levels by their health, which gives that level all of it while it is
// healthy enough). When every level is excluded or none of the others has
// a healthy host, the exclusion is dropped, as Envoy does, and Pick runs.
func (c *Cluster) PickExcluding(hash uint64, excluded uint64) (*Host, error) {
	if excluded == 0 {
		return c.Pick(hash)
	}
	now := c.clock().UnixNano()
	for i := range c.levels {
		l := &c.levels[i]
		if l.priority < 64 && excluded&(1<<l.priority) != 0 {
			continue
		}
		if idx := l.picker.Pick(l.hosts, now, hash); idx >= 0 {
			return l.hosts[idx].(*Host), nil
		}
	}
	return c.Pick(hash)
}

// overprovisioning is Envoy's default overprovisioning factor (140 %).
const overprovisioning = 140

// maxLevels bounds the per-pick stack arrays; clusters with more priority
// levels fall back to the lowest level with a healthy host.
const maxLevels = 8

// chooseLevel returns the priority level for a request and whether that
// level is in panic, or -1 when no level can take it. It follows Envoy's
// load_balancer_impl: health[i] = min(100, 1.4 × healthy/total),
// normalized total health = min(100, Σ health); each level takes
// health[i]/total of the load in priority order; when the total is below
// 100 a level whose healthy share is below the panic threshold is in panic;
// when no host is healthy anywhere, priority 0 takes everything (in panic
// unless the threshold is 0).
func (c *Cluster) chooseLevel(now int64, hash uint64) (int, bool) {
	n := len(c.levels)
	if n == 0 {
		return -1, false
	}
	if n > maxLevels {
		for i := range c.levels {
			for _, h := range c.levels[i].hosts {
				if h.Healthy(now) {
					return i, false
				}
			}
		}
		return -1, false
	}
	var health, healthyPct [maxLevels]uint64
	var sum uint64
	for i := range c.levels {
		hs := c.levels[i].hosts
		healthy := 0
		for _, h := range hs {
			if h.Healthy(now) {
				healthy++
			}
		}
		if len(hs) > 0 {
			health[i] = min(100, uint64(overprovisioning*healthy/len(hs)))
			healthyPct[i] = uint64(100 * healthy / len(hs))
		}
		sum += health[i]
	}
	total := min(100, sum)
	inPanic := func(i int) bool {
		return total < 100 && c.PanicThreshold > 0 && float64(healthyPct[i]) < c.PanicThreshold
	}
	if total == 0 {
		if c.PanicThreshold > 0 {
			return 0, true
		}
		return -1, false
	}
	if n == 1 {
		return 0, inPanic(0)
	}
	var r uint64
	if c.HashBased || c.rnd == nil {
		r = hash % 100
	} else {
		r = c.rnd.Uint64() % 100
	}
	// Each level's load, in priority order, out of 100; rounding leftovers
	// go to the first level with any health.
	var load [maxLevels]uint64
	left := uint64(100)
	first := -1
	for i := 0; i < n; i++ {
		load[i] = min(left, health[i]*100/total)
		left -= load[i]
		if first < 0 && health[i] > 0 {
			first = i
		}
	}
	load[first] += left
	for i := 0; i < n; i++ {
		if r < load[i] {
			return i, inPanic(i)
		}
		r -= load[i]
	}
	return first, inPanic(first)
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
// HTTP status, 0 for a connect failure or reset, LocalTimeout for a
// timeout; 0 and LocalTimeout are local-origin failures.
func (c *Cluster) Report(h *Host, status int) {
	o := c.Outlier
	local := status <= 0
	if status >= 500 || local {
		h.Failures.Add(1)
	}
	if o == nil {
		return
	}
	if c.errorCodes != nil && !local && status < len(c.errorCodes) {
		// An error_matcher redefines the errors: a matching response
		// counts as a 5xx (keeping a 5xx's own code, so 502-504 are still
		// gateway errors), any other as a success.
		if c.errorCodes[status] {
			status = max(status, 500)
		} else {
			status = 200
		}
	}
	if !(o.SplitLocalOrigin && local) {
		// Success rate and failure percentage look at upstream responses
		// only when local-origin errors are split off.
		h.ivRequests.Add(1)
		if local || status >= 500 {
			h.ivFailures.Add(1)
		}
	}
	if o.EnforcingSuccessRate > 0 || o.EnforcingFailurePercentage > 0 {
		c.maybeSweep()
	}
	if o.SplitLocalOrigin {
		if local {
			if n := h.consecLocal.Add(1); o.ConsecutiveLocal > 0 && n >= o.ConsecutiveLocal {
				c.eject(h, true)
			}
			return
		}
		// A response means the connection worked: a local-origin success.
		h.consecLocal.Store(0)
	} else if local {
		// Envoy maps local-origin failures to 503 (connect failure, reset)
		// and 504 (timeout) when they are not split.
		status = 503
	}
	if status < 500 {
		h.consec5xx.Store(0)
		h.consecGw.Store(0)
		return
	}
	n5 := h.consec5xx.Add(1)
	ng := int32(0)
	if status == 502 || status == 503 || status == 504 {
		ng = h.consecGw.Add(1)
	} else {
		h.consecGw.Store(0)
	}
	if (o.Consecutive5xx > 0 && n5 >= o.Consecutive5xx) || (o.ConsecutiveGateway > 0 && ng >= o.ConsecutiveGateway) {
		c.eject(h, false)
	}
}

// maybeSweep runs the interval analysis when it is due; the caller that
// wins the compare-and-swap runs it, the others go on.
func (c *Cluster) maybeSweep() {
	iv := c.Outlier.Interval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	b := c.Breakers
	now := c.clock().UnixNano()
	next := b.nextSweep.Load()
	if next == 0 {
		b.nextSweep.CompareAndSwap(0, b.anchor.Load()+int64(iv))
		return
	}
	if now < next || !b.nextSweep.CompareAndSwap(next, now+int64(iv)) {
		return
	}
	c.sweep(now)
}

type sweepHost struct {
	h          *Host
	req, fails uint64
}

// sweep is one success-rate / failure-percentage analysis over the
// interval's counts, which it resets.
func (c *Cluster) sweep(now int64) {
	o := c.Outlier
	hs := make([]sweepHost, 0, len(c.Hosts))
	for _, h := range c.Hosts {
		hs = append(hs, sweepHost{h, h.ivRequests.Swap(0), h.ivFailures.Swap(0)})
	}
	if o.EnforcingSuccessRate > 0 {
		var rates []float64
		for _, x := range hs {
			if x.req >= o.SuccessRateRequestVolume && x.h.Healthy(now) {
				rates = append(rates, 100*float64(x.req-x.fails)/float64(x.req))
			}
		}
		if len(rates) >= o.SuccessRateMinimumHosts && len(rates) > 0 {
			var mean, variance float64
			for _, r := range rates {
				mean += r
			}
			mean /= float64(len(rates))
			for _, r := range rates {
				variance += (r - mean) * (r - mean)
			}
			limit := mean - math.Sqrt(variance/float64(len(rates)))*o.SuccessRateStdevFactor/1000
			for _, x := range hs {
				if x.req >= o.SuccessRateRequestVolume && x.h.Healthy(now) &&
					100*float64(x.req-x.fails)/float64(x.req) < limit && c.enforce(o.EnforcingSuccessRate) {
					if c.eject(x.h, false) {
						c.Breakers.SuccessRateEjections.Add(1)
					}
				}
			}
		}
	}
	if o.EnforcingFailurePercentage > 0 {
		n := 0
		for _, x := range hs {
			if x.req >= o.FailurePercentageRequestVolume {
				n++
			}
		}
		if n >= o.FailurePercentageMinimumHosts {
			for _, x := range hs {
				if x.req >= o.FailurePercentageRequestVolume && x.fails*100 >= o.FailurePercentageThreshold*x.req &&
					c.enforce(o.EnforcingFailurePercentage) {
					if c.eject(x.h, false) {
						c.Breakers.FailurePercentageEjections.Add(1)
					}
				}
			}
		}
	}
}

// enforce reports whether an ejection detected with enforcement pct (%)
// happens.
func (c *Cluster) enforce(pct uint32) bool {
	if pct >= 100 || c.rnd == nil {
		return pct > 0
	}
	return c.rnd.Uint64()%100 < uint64(pct)
}

func (c *Cluster) eject(h *Host, localOrigin bool) bool {
	now := c.clock()
	nowNs := now.UnixNano()
	if !h.Healthy(nowNs) {
		return false
	}
	ejected := 0
	for _, x := range c.Hosts {
		if !x.Healthy(nowNs) {
			ejected++
		}
	}
	// At least one host may always be ejected (Envoy's always_eject_one_host
	// behaviour, which Istio relies on); beyond that honour the percentage.
	if ejected > 0 && (ejected+1)*100 > c.Outlier.MaxEjectionPercent*len(c.Hosts) {
		return false
	}
	iv := c.Outlier.Interval
	// Every sweep the host spent back in service since its last ejection
	// lowers its multiplier by one (Envoy decrements num_ejections on each
	// interval a non-ejected host passes).
	n := h.ejections.Load()
	if until := h.ejectedUntil.Load(); until > 0 && n > 0 && iv > 0 {
		n = max(0, n-int32((nowNs-until)/int64(iv)))
	}
	n++
	h.ejections.Store(n)
	d := c.Outlier.BaseEjection * time.Duration(n)
	if c.Outlier.MaxEjection > 0 && d > c.Outlier.MaxEjection {
		d = c.Outlier.MaxEjection
	}
	until := nowNs + int64(d)
	// The host returns on the first sweep at or after its ejection time.
	if iv > 0 {
		a := c.Breakers.anchor.Load()
		if off := until - a; off > 0 {
			until = a + (off+int64(iv)-1)/int64(iv)*int64(iv)
		}
	}
	h.ejectedUntil.Store(until)
	c.Breakers.Ejections.Add(1)
	if localOrigin {
		c.Breakers.LocalOriginEjections.Add(1)
	}
	h.consec5xx.Store(0)
	h.consecGw.Store(0)
	h.consecLocal.Store(0)
	return true
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
	// peerFrame is this workload's metadata exchange frame (see
	// SetPeerExchange).
	peerFrame []byte
}

type clusterState struct {
	hosts    map[string]*hostState
	breakers *Breakers
	tkey     string
	t1, t2   *http.Transport
	xc       *XConnect
	h1       *H1Pool
	pp       *ppPools
	// built is set once the cluster has been committed with hosts: hosts
	// that appear after that join in slow start (the first endpoints do
	// not, whether they came with the cluster or by a later EDS response).
	built bool
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
			st.breakers.anchor.Store(m.clock().UnixNano())
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
		built = append(built, pending{c, &clusterState{hosts: newHosts, breakers: st.breakers, tkey: st.tkey, t1: st.t1, t2: st.t2, xc: st.xc, h1: st.h1, pp: st.pp, built: st.built || len(c.Hosts) > 0}})
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
				b.st.xc.CloseIdleConnections()
			}
			if b.st.h1 != nil {
				b.st.h1.Close()
			}
			b.st.pp.close()
			b.st.pp = nil
			var shared *connLimiter
			if b.c.ProxyProtocol != nil {
				b.st.pp = newPPPools(b.c)
				shared = b.st.pp.lim
			}
			b.st.t1, b.st.t2, b.st.xc = newTransports(b.c, downstream{}, shared)
			b.st.h1 = newH1Pool(b.c, downstream{})
			if b.st.pp != nil {
				b.st.pp.t1, b.st.pp.t2, b.st.pp.xc = b.st.t1, b.st.t2, b.st.xc
			}
			b.st.tkey = key
		}
		b.c.Transport, b.c.H2C, b.c.XC, b.c.H1, b.c.pp = b.st.t1, b.st.t2, b.st.xc, b.st.h1, b.st.pp
		newState[b.c.Name] = b.st
	}
	for n, st := range m.state {
		if newState[n] == nil && st.t1 != nil {
			st.t1.CloseIdleConnections()
			st.t2.CloseIdleConnections()
			st.xc.CloseIdleConnections()
		}
		if newState[n] == nil && st.h1 != nil {
			st.h1.Close()
		}
		if newState[n] == nil {
			st.pp.close()
		}
	}
	m.state = newState
	return out, nil
}

func (m *Manager) compile(pc *clusterv3.Cluster, cla *endpointv3.ClusterLoadAssignment, prevHosts []*Host, st *clusterState) (*Cluster, map[string]*hostState, error) {
	c := &Cluster{Name: pc.GetName(), Breakers: st.breakers, clock: m.clock, rnd: m.rnd, PanicThreshold: 50,
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
		if rb := t.GetRetryBudget(); rb != nil {
			b := &RetryBudget{Percent: 20, MinConcurrency: 3}
			if p := rb.GetBudgetPercent(); p != nil {
				b.Percent = p.GetValue()
			}
			if n := rb.GetMinRetryConcurrency(); n != nil {
				b.MinConcurrency = int64(n.GetValue())
			}
			if iv := rb.GetBudgetInterval(); iv.AsDuration() > 0 {
				c.Warnings = append(c.Warnings, "circuit_breakers retry_budget budget_interval not executed: the budget counts requests in flight only")
			}
			c.Thresholds.RetryBudget = b
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
		if m := po.GetOutlierDetection().GetErrorMatcher(); m != nil {
			codes, err := compileErrorMatcher(m)
			if err != nil {
				// Accepted, as Envoy would; 5xx stay the errors.
				c.Warnings = append(c.Warnings, err.Error())
			} else {
				c.errorCodes = codes
			}
		}
	}
	if pc.GetHttp2ProtocolOptions() != nil { //nolint:staticcheck // deprecated field still sent by older control planes
		c.UpstreamH2 = true
	}
	localityWeighted := pc.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	if p := pc.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		c.PanicThreshold = p.GetValue()
	}
	if err := m.compileTLS(pc, c); err != nil {
		return nil, nil, err
	}
	if err := m.compilePeerExchange(pc, c); err != nil {
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
		o.SplitLocalOrigin = od.GetSplitExternalLocalOriginErrors()
		o.ConsecutiveLocal = 5
		if v := od.GetConsecutiveLocalOriginFailure(); v != nil {
			o.ConsecutiveLocal = int32(v.GetValue())
		}
		if v := od.GetEnforcingConsecutiveLocalOriginFailure(); v != nil && v.GetValue() == 0 {
			o.ConsecutiveLocal = 0
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
		o.EnforcingSuccessRate, o.SuccessRateMinimumHosts, o.SuccessRateRequestVolume, o.SuccessRateStdevFactor = 100, 5, 100, 1900
		if v := od.GetEnforcingSuccessRate(); v != nil {
			o.EnforcingSuccessRate = v.GetValue()
		}
		if v := od.GetSuccessRateMinimumHosts(); v != nil {
			o.SuccessRateMinimumHosts = int(v.GetValue())
		}
		if v := od.GetSuccessRateRequestVolume(); v != nil {
			o.SuccessRateRequestVolume = uint64(max(v.GetValue(), 1))
		}
		if v := od.GetSuccessRateStdevFactor(); v != nil {
			o.SuccessRateStdevFactor = float64(v.GetValue())
		}
		o.FailurePercentageThreshold, o.FailurePercentageMinimumHosts, o.FailurePercentageRequestVolume = 85, 5, 50
		if v := od.GetEnforcingFailurePercentage(); v != nil {
			o.EnforcingFailurePercentage = v.GetValue()
		}
		if v := od.GetFailurePercentageThreshold(); v != nil {
			o.FailurePercentageThreshold = uint64(v.GetValue())
		}
		if v := od.GetFailurePercentageMinimumHosts(); v != nil {
			o.FailurePercentageMinimumHosts = int(v.GetValue())
		}
		if v := od.GetFailurePercentageRequestVolume(); v != nil {
			o.FailurePercentageRequestVolume = uint64(max(v.GetValue(), 1))
		}
		if od.GetSplitExternalLocalOriginErrors() {
			if v := od.GetEnforcingLocalOriginSuccessRate(); v == nil || v.GetValue() > 0 {
				c.Warnings = append(c.Warnings, "outlier_detection: local-origin success-rate ejection is not executed")
			}
			if v := od.GetEnforcingFailurePercentageLocalOrigin(); v != nil && v.GetValue() > 0 {
				c.Warnings = append(c.Warnings, "outlier_detection: local-origin failure-percentage ejection is not executed")
			}
		}
		c.Outlier = o
	}
	newHosts := map[string]*hostState{}
	now := m.clock().UnixNano()
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
					if st.built {
						hs.slowStartAt = now
					}
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
		var p lb.Picker = &lb.RoundRobin{}
		if weighted {
			p = &lb.Random{Rnd: m.rnd}
		}
		return m.slowStart(p, pc.GetRoundRobinLbConfig().GetSlowStartConfig(), hosts, false), false, nil
	case clusterv3.Cluster_LEAST_REQUEST:
		p := &lb.LeastRequest{Rnd: m.rnd, Weighted: weighted}
		return m.slowStart(p, pc.GetLeastRequestLbConfig().GetSlowStartConfig(), hosts, true), false, nil
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

// slowStart wraps a ROUND_ROBIN or LEAST_REQUEST picker with the
// cluster's slow_start_config (Istio's warmup), when it has one and a host
// of the level joined after the cluster's first build.
func (m *Manager) slowStart(p lb.Picker, cfg *clusterv3.Cluster_SlowStartConfig, hosts []lb.Host, leastRequest bool) lb.Picker {
	if cfg.GetSlowStartWindow().AsDuration() <= 0 {
		return p
	}
	var latest int64
	for _, h := range hosts {
		if w, ok := h.(lb.Warming); ok {
			latest = max(latest, w.SlowStartAt())
		}
	}
	if latest == 0 {
		return p
	}
	ss := lb.SlowStart{Window: cfg.GetSlowStartWindow().AsDuration(), Aggression: 1, MinWeightPercent: 10}
	if a := cfg.GetAggression(); a != nil {
		ss.Aggression = a.GetDefaultValue()
	}
	if mw := cfg.GetMinWeightPercent(); mw != nil {
		ss.MinWeightPercent = mw.GetValue()
	}
	return &lb.SlowStartPicker{Inner: p, Config: ss, Rnd: m.rnd, LeastRequest: leastRequest, Latest: latest}
}

func transportKey(c *Cluster) string {
	return fmt.Sprintf("%d|%d|%s|%t|%s", c.Thresholds.MaxConnections, c.MaxRequestsPerConnection, c.ConnectTimeout, c.UpstreamH2,
		c.MTLS.key()+"|"+c.Origin.key()+"|"+c.ProxyProtocol.key())
}

// newConnLimiter is the max_connections limiter of c, nil when c does not
// limit connections (1024, Envoy's default, or more).
func newConnLimiter(c *Cluster) *connLimiter {
	if c.Thresholds.MaxConnections >= 1024 || c.Thresholds.MaxConnections <= 0 {
		return nil
	}
	d := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	return &connLimiter{d: d, slots: make(chan struct{}, c.Thresholds.MaxConnections)}
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
	c, err := RawDialer(l.d)(ctx, network, addr)
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

// newTransports builds the cluster's HTTP/1.1, h2c and extended CONNECT
// transports; for a
// PROXY protocol cluster their connections start with ds's header (the
// connection's own addresses when ds is zero). shared, when set, is the
// max_connections limiter the transports share with others (a PROXY
// protocol cluster's per-downstream pools); else they get their own when
// the cluster limits connections.
func newTransports(c *Cluster, ds downstream, shared *connLimiter) (*http.Transport, *http.Transport, *XConnect) {
	d := &net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second}
	dial := RawDialer(d) // HTTP/2, gRPC, upgrades: raw-syscall socket I/O too
	var limiter *connLimiter
	if shared != nil {
		dial = shared.dial
	} else if limiter = newConnLimiter(c); limiter != nil {
		dial = limiter.dial
	}
	dial = c.wrapTLS(c.wrapPP(dial, ds))
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
	xc := newXConnect(dial)
	if limiter != nil {
		limiter.onFull = func() {
			t1.CloseIdleConnections()
			t2.CloseIdleConnections()
			xc.CloseIdleConnections()
		}
	}
	return t1, t2, xc
}

// Static returns a standalone cluster with one host and default limits,
// for the inbound fallback straight to the local application.
func Static(name, addr string) *Cluster {
	h := &Host{Addr: addr, weight: 1, hostState: &hostState{}}
	c := &Cluster{Name: name, Hosts: []*Host{h}, Breakers: &Breakers{}, clock: time.Now, ConnectTimeout: 10 * time.Second,
		Thresholds: Thresholds{MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3}}
	c.levels = []level{{hosts: []lb.Host{h}, picker: &lb.RoundRobin{}}}
	c.Transport, c.H2C, c.XC = newTransports(c, downstream{}, nil)
	c.H1 = newH1Pool(c, downstream{})
	return c
}

// RawDialer dials with d and wraps TCP connections with sockio.Wrap
// (raw-syscall reads and writes; see package sockio).
func RawDialer(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return sockio.Wrap(c), nil
	}
}

// newH1Pool returns the own HTTP/1.1 pool for c, or nil when c limits its
// connections (max_connections below 1024): those keep net/http's
// Transport, whose per-host connection cap and wait queue the circuit
// breaker semantics rely on.
func newH1Pool(c *Cluster, ds downstream) *H1Pool {
	if c.Thresholds.MaxConnections > 0 && c.Thresholds.MaxConnections < 1024 {
		return nil
	}
	dial := RawDialer(&net.Dialer{Timeout: c.ConnectTimeout, KeepAlive: 30 * time.Second})
	dial = c.wrapTLS(c.wrapPP(dial, ds))
	return NewH1Pool(dial, c.MaxRequestsPerConnection)
}
