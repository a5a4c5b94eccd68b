// Package proxy is Weft's sidecar data plane: it connects to the control
// plane over ADS (pkg/proxy/xdsclient), compiles what it receives into an
// immutable Runtime (routes, clusters) swapped atomically on each accepted
// update, and serves the outbound, inbound, admin, health, status and
// metrics listeners. It never imports Kubernetes packages.
package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/pkg/iptables"
	"github.com/weftmesh/weft/pkg/proxy/admin"
	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/cluster/lb"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/proxy/otelals"
	"github.com/weftmesh/weft/pkg/proxy/sockio"
	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/proxy/tracing"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// Options configures a Proxy. Address fields take HOST:PORT; port 0 binds
// an ephemeral port (see Proxy.Addresses). Empty addresses disable that
// listener, except Outbound and Inbound.
type Options struct {
	ControlPlane string
	// XDSDelta speaks delta xDS to the control plane, with route
	// configurations in VHDS form from a weft control plane (see
	// xdsclient.Config.Delta); false: state of the world. weft proxy's
	// --xds-delta defaults to true.
	XDSDelta       bool
	Namespace      string
	Workload       string
	ServiceAccount string
	Labels         map[string]string
	// ClusterID is the mesh cluster id reported as source_cluster /
	// destination_cluster (Istio's CLUSTER_ID); default "Kubernetes".
	ClusterID string
	// AppPort is the local application's port (inbound target); 0 = none.
	AppPort int
	// Services are NAME:PORT[/PROTOCOL] entries this workload serves.
	Services []string

	OutboundAddress string // default 127.0.0.1:15001
	InboundAddress  string // default 127.0.0.1:15006
	AdminAddress    string // default 127.0.0.1:15000
	MetricsAddress  string // default 127.0.0.1:15090
	HealthAddress   string // default 127.0.0.1:15021
	StatusAddress   string // default 127.0.0.1:15020

	// ReadyFile, if set, receives JSON of the bound Addresses once bound.
	ReadyFile string
	// AccessLog receives JSON access log lines; nil disables.
	AccessLog io.Writer
	Logger    *slog.Logger
	// LogLevel is changed by the admin /logging endpoint; may be nil.
	LogLevel *slog.LevelVar
	// DrainTimeout bounds graceful shutdown; default 5s.
	DrainTimeout time.Duration
	// Rand and Clock are injectable for tests; nil means defaults.
	Rand  lb.Rand
	Clock cluster.Clock
	// HTTPFilters adds HTTP filter implementations by http_filters name
	// (e.g. "envoy.filters.http.rbac"); see listener.FilterFactory.
	HTTPFilters map[string]listener.FilterFactory
	// NetworkFilters adds network filter implementations for inbound opaque
	// TCP chains (e.g. "envoy.filters.network.rbac"); see
	// listener.NetworkFilterFactory.
	NetworkFilters map[string]listener.NetworkFilterFactory
	// StatsCollectors add series to /stats/prometheus (15090) and the
	// admin /stats (e.g. the wasm engine's plugin metrics).
	StatsCollectors []stats.Collector
	// BackoffMin/BackoffMax tune xDS reconnects (defaults 100ms / 5s).
	BackoffMin, BackoffMax time.Duration
	// MTLS, when set, gives the proxy its mesh certificate: ISTIO_MUTUAL
	// clusters dial mutual TLS and the inbound listener applies
	// PeerAuthentication (see mtls.go). Nil keeps the proxy plaintext.
	MTLS WorkloadCerts

	// Gateway runs the proxy as a gateway (node type "router", no app):
	// it binds the listeners it receives over LDS, one per Gateway server
	// port, on GatewayBindHost:PORT unless GatewayAddresses maps the port
	// to another HOST:PORT.
	Gateway          bool
	GatewayBindHost  string         // default 127.0.0.1
	GatewayAddresses map[int]string // listener port → bind address

	// Capture is transparent capture mode (iptables REDIRECT, see `weft
	// iptables`): connections on the outbound and inbound listeners are
	// routed by their original destination (SO_ORIGINAL_DST). Outbound and
	// inbound addresses then default to 0.0.0.0:15001 and 0.0.0.0:15006.
	Capture bool

	// StdHTTPServer serves every listener (outbound, inbound, admin,
	// metrics, health, status) with net/http's server instead of
	// listener.Server (for comparison).
	StdHTTPServer bool

	// ReleaseMemoryAfterUpdate, once configuration updates settle (2 s
	// after the last one), returns freed heap to the OS
	// (debug.FreeOSMemory: building a configuration allocates several
	// times what it keeps) and drops the executable pages the update
	// faulted in (ReleaseStartupPages: decoding and translating touch
	// code the request path never runs; what it does run faults back
	// in). Process-wide, so only `weft proxy` sets it. Each release counts
	// in the stat server.memory_releases.
	ReleaseMemoryAfterUpdate bool
}

// Addresses are the actually bound listener addresses.
type Addresses struct {
	Outbound string `json:"outbound"`
	Inbound  string `json:"inbound"`
	Admin    string `json:"admin,omitempty"`
	Metrics  string `json:"metrics,omitempty"`
	Health   string `json:"health,omitempty"`
	Status   string `json:"status,omitempty"`
}

// Proxy is one sidecar instance.
type Proxy struct {
	opts  Options
	log   *slog.Logger
	stats *stats.Registry
	cm    *cluster.Manager
	rt    atomic.Pointer[listener.Runtime]
	xds   *xdsclient.Client
	addrs Addresses

	ready     chan struct{}
	readyOnce sync.Once
	quit      chan struct{}
	quitOnce  sync.Once

	outH, inH *listener.Handler
	servers   []httpServer
	listeners []net.Listener
	inSniff   *listener.SniffListener
	boundIn   *boundInbound // Sidecar ingress captureMode NONE listeners (sidecars only)
	access    *stats.AccessLog
	gw        *gateway
	tracer    *tracing.Tracer
	otelLogs  *otelals.Exporter // OpenTelemetry access loggers' LogRecords

	releaseMu    sync.Mutex
	releaseTimer *time.Timer // ReleaseMemoryAfterUpdate
}

// httpServer is net/http's or the proxy's own (listener.Server).
type httpServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// New validates options and prepares a proxy; Run starts it.
func New(opts Options) (*Proxy, error) {
	if opts.ControlPlane == "" {
		return nil, errors.New("proxy: control plane address is required")
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if opts.Workload == "" {
		return nil, errors.New("proxy: workload name is required")
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	if opts.Capture {
		def(&opts.OutboundAddress, "0.0.0.0:15001")
		def(&opts.InboundAddress, "0.0.0.0:15006")
	}
	def(&opts.OutboundAddress, "127.0.0.1:15001")
	def(&opts.InboundAddress, "127.0.0.1:15006")
	if opts.ServiceAccount == "" {
		opts.ServiceAccount = "default"
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	if opts.LogLevel == nil {
		opts.LogLevel = new(slog.LevelVar)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, s := range opts.Services {
		if _, err := ParseService(s); err != nil {
			return nil, err
		}
	}
	p := &Proxy{opts: opts, log: log.With("component", "proxy", "workload", opts.Workload+"."+opts.Namespace),
		stats: stats.NewRegistry(), ready: make(chan struct{}), quit: make(chan struct{})}
	for _, c := range opts.StatsCollectors {
		p.stats.AddCollector(c)
	}
	if opts.ReleaseMemoryAfterUpdate {
		p.stats.Counter("server.memory_releases") // listed from the start, at 0
	}
	p.cm = cluster.NewManager(p.log, opts.Clock, opts.Rand)
	return p, nil
}

// Service is one parsed --service entry.
type Service struct {
	Name     string
	Port     int
	Protocol string
}

// ParseService parses NAME:PORT[/PROTOCOL].
func ParseService(s string) (Service, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return Service{}, fmt.Errorf("service %q: want NAME:PORT[/PROTOCOL]", s)
	}
	portS, proto, _ := strings.Cut(rest, "/")
	port, err := strconv.Atoi(portS)
	if err != nil || port <= 0 || port > 65535 {
		return Service{}, fmt.Errorf("service %q: bad port %q", s, portS)
	}
	if proto == "" {
		proto = "http"
	}
	return Service{Name: name, Port: port, Protocol: strings.ToLower(proto)}, nil
}

// Addresses returns the bound addresses (valid after Start).
func (p *Proxy) Addresses() Addresses { return p.addrs }

// Ready is closed once the first complete configuration is applied.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Runtime returns the current compiled configuration (nil before the first).
func (p *Proxy) Runtime() *listener.Runtime { return p.rt.Load() }

// HTTPCall sends req to the cluster named cluster of the current
// configuration: its load balancer picks the host, its transport (mTLS
// when the cluster has it) carries the request; req.URL carries only the
// path and query. For proxy-wasm's proxy_http_call.
func (p *Proxy) HTTPCall(ctx context.Context, cluster string, req *http.Request) (*http.Response, error) {
	rt := p.rt.Load()
	if rt == nil {
		return nil, fmt.Errorf("http call to cluster %q: no configuration yet", cluster)
	}
	c := rt.Clusters.Clusters[cluster]
	if c == nil {
		return nil, fmt.Errorf("http call: unknown cluster %q", cluster)
	}
	host, err := c.Pick(lb.Hash64(req.URL.Path))
	if err != nil {
		return nil, fmt.Errorf("http call to cluster %q: %w", cluster, err)
	}
	req = req.WithContext(ctx)
	req.URL.Scheme, req.URL.Host = "http", host.Addr
	resp, err := c.Transport.RoundTrip(req)
	if err != nil {
		c.Report(host, 0)
		return nil, fmt.Errorf("http call to cluster %q: %w", cluster, err)
	}
	c.Report(host, resp.StatusCode)
	return resp, nil
}

// Stats returns the metrics registry.
func (p *Proxy) Stats() *stats.Registry { return p.stats }

// XDS returns the xDS client (valid after Start).
func (p *Proxy) XDS() *xdsclient.Client { return p.xds }

// Quit asks Run to drain and return, as POST /quitquitquit does.
func (p *Proxy) Quit() { p.quitOnce.Do(func() { close(p.quit) }) }

// Node builds the xDS node (ID and metadata) per docs/xds-conventions.md.
func (p *Proxy) Node() *corev3.Node {
	o := p.opts
	ip := "127.0.0.1"
	if h, _, err := net.SplitHostPort(p.addrs.Inbound); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		ip = h
	}
	labels := map[string]any{}
	for k, v := range mtlsLabels(o) {
		labels[k] = v
	}
	appPorts := ""
	if o.AppPort > 0 {
		appPorts = strconv.Itoa(o.AppPort)
	}
	inbound := p.addrs.Inbound
	if h, port, err := net.SplitHostPort(inbound); err == nil && (h == "0.0.0.0" || h == "::" || h == "") {
		// Advertise a dialable address for a wildcard bind.
		inbound = net.JoinHostPort("127.0.0.1", port)
	}
	md := map[string]any{
		"NAMESPACE":       o.Namespace,
		"WORKLOAD_NAME":   o.Workload,
		"SERVICE_ACCOUNT": o.ServiceAccount,
		"INSTANCE_IPS":    ip,
		"INBOUND_ADDRESS": inbound,
		"APP_PORTS":       appPorts,
		"SERVICES":        strings.Join(o.Services, ","),
		"LABELS":          labels,
	}
	if p.addrs.Metrics != "" {
		md["METRICS_ADDRESS"] = p.addrs.Metrics
	}
	if p.addrs.Admin != "" {
		md["ADMIN_ADDRESS"] = p.addrs.Admin
	}
	st, err := structpb.NewStruct(md)
	if err != nil { // only strings and string maps: cannot fail
		st = &structpb.Struct{}
	}
	typ := "sidecar"
	if o.Gateway {
		typ = "router"
	}
	return &corev3.Node{
		Id:       fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", typ, ip, o.Workload, o.Namespace, o.Namespace),
		Cluster:  o.Workload + "." + o.Namespace,
		Metadata: st,
	}
}

// update is the xDS client's UpdateFunc: compile, then swap atomically.
func (p *Proxy) update(res *xdsclient.Resources) error {
	rt, err := listener.Build(res, p.cm, p.rt.Load(), p.opts.HTTPFilters, p.opts.NetworkFilters)
	if err != nil {
		p.stats.Counter("xds.update_rejected").Add(1)
		return err
	}
	for _, c := range rt.Clusters.Clusters {
		for _, w := range c.Warnings {
			p.log.Warn("cluster config not fully executed", "cluster", c.Name, "warning", w)
		}
	}
	var gwCfgs map[string]*gwConfig
	if p.gw != nil {
		compile := compileGateway
		if p.gw.bound {
			compile = compileBound
		}
		var warnings []string
		gwCfgs, warnings, err = compile(res.Listeners, p.opts.MTLS != nil)
		if err != nil {
			p.stats.Counter("xds.update_rejected").Add(1)
			_ = listener.CloseUnused(rt, p.rt.Load()) // filters only this rejected update built
			return err
		}
		rt.Warnings = append(rt.Warnings, warnings...)
	}
	for _, w := range rt.Warnings {
		p.log.Warn("listener config not fully executed", "warning", w)
	}
	if err := listener.CloseUnused(p.rt.Swap(rt), rt); err != nil { // e.g. wasm plugins removed by this update
		p.log.Warn("closing removed http filter", "err", err)
	}
	if p.gw != nil {
		p.gw.sync(res.Listeners, gwCfgs)
	}
	if p.boundIn != nil {
		p.boundIn.sync(res.Listeners)
	}
	p.stats.Counter("xds.update_success").Add(1)
	if p.opts.ReleaseMemoryAfterUpdate {
		p.releaseMu.Lock()
		if p.releaseTimer == nil {
			p.releaseTimer = time.AfterFunc(2*time.Second, func() {
				debug.FreeOSMemory()
				if _, err := ReleaseStartupPages(); err != nil {
					p.log.Debug("release executable pages", "err", err)
				}
				p.stats.Counter("server.memory_releases").Add(1)
			})
		} else {
			p.releaseTimer.Reset(2 * time.Second)
		}
		p.releaseMu.Unlock()
	}
	if rt.Complete {
		p.readyOnce.Do(func() {
			close(p.ready)
			p.log.Info("first complete configuration applied", "listeners", len(res.Listeners), "clusters", len(res.Clusters))
		})
	}
	return nil
}

func bind(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

// Start binds every listener and starts serving and the xDS client. It
// returns once the addresses are bound; call Wait (or use Run).
func (p *Proxy) Start(ctx context.Context) error {
	o := p.opts
	type spec struct {
		addr string
		dst  *string
	}
	specs := []spec{{o.OutboundAddress, &p.addrs.Outbound}, {o.InboundAddress, &p.addrs.Inbound},
		{o.AdminAddress, &p.addrs.Admin}, {o.MetricsAddress, &p.addrs.Metrics},
		{o.HealthAddress, &p.addrs.Health}, {o.StatusAddress, &p.addrs.Status}}
	lns := make([]net.Listener, len(specs))
	for i, s := range specs {
		if s.addr == "" {
			continue
		}
		l, err := bind(s.addr)
		if err != nil {
			for _, x := range lns {
				if x != nil {
					x.Close()
				}
			}
			return err
		}
		if i <= 1 { // the data-plane listeners: raw-syscall socket I/O
			l = sockio.Listener{Listener: l}
		}
		lns[i] = l
		*s.dst = l.Addr().String()
	}
	p.log.Info("proxy listeners bound", "outbound", p.addrs.Outbound, "inbound", p.addrs.Inbound, "admin", p.addrs.Admin,
		"metrics", p.addrs.Metrics, "health", p.addrs.Health, "status", p.addrs.Status)
	if o.ReadyFile != "" {
		b, _ := json.Marshal(p.addrs)
		if err := os.WriteFile(o.ReadyFile, b, 0o644); err != nil {
			return fmt.Errorf("write ready file: %w", err)
		}
	}
	ident := identity(o)
	var access *stats.AccessLog
	if o.AccessLog != nil {
		access = stats.NewAccessLog(o.AccessLog)
	}
	p.access = access
	p.tracer = tracing.NewTracer(tracing.Options{Log: p.log, Counter: p.stats.Counter})
	node := p.Node()
	p.otelLogs = otelals.NewExporter(otelals.Options{Log: p.log, Counter: p.stats.Counter,
		Node: otelals.Node{Name: node.GetId(), Cluster: node.GetCluster()}})
	if o.Gateway {
		p.gw = &gateway{p: p, ctx: ctx, log: p.log.With("mode", "gateway"), lns: map[string]*gwListener{}}
	} else {
		// Sidecar listeners that bind their own socket (Sidecar egress
		// bind / captureMode NONE), served like a gateway's listeners.
		p.gw = &gateway{p: p, ctx: ctx, log: p.log.With("mode", "bound-listener"), lns: map[string]*gwListener{}, bound: true}
	}
	p.outH = &listener.Handler{Direction: listener.Outbound, Runtime: p.rt.Load, Ident: ident, AppPort: o.AppPort,
		Log: p.log, Stats: p.stats, Access: access, Rnd: lb.NewLockedRand(o.Rand), Ctx: ctx, Tracer: p.tracer, OTelLogs: p.otelLogs}
	var inSvc string
	for _, e := range o.Services {
		if s, err := ParseService(e); err == nil && (inSvc == "" || s.Port == o.AppPort) {
			inSvc = listener.ServiceFQDN(s.Name, o.Namespace)
		}
	}
	p.inH = &listener.Handler{Direction: listener.Inbound, Runtime: p.rt.Load, Ident: ident, AppPort: o.AppPort, Service: inSvc,
		Log: p.log, Stats: p.stats, Access: access, Rnd: lb.NewLockedRand(o.Rand), Ctx: ctx, Tracer: p.tracer, OTelLogs: p.otelLogs}
	if !o.Gateway {
		p.boundIn = &boundInbound{p: p, ctx: ctx, log: p.log.With("mode", "bound-inbound"), lns: map[string]*inListener{}}
	}
	if o.Capture { // the original destination routes opaque TCP and picks inbound ports
		p.outH.OrigDst, p.inH.OrigDst = originalDst, originalDst
	}
	h := &admin.Handlers{Src: adminSource{p}, Stats: p.stats, Level: o.LogLevel, Quit: p.Quit, Certs: p.workloadChain}
	lns[1] = p.setupMTLS(ctx, lns[1])
	p.inSniff = &listener.SniffListener{Listener: lns[1], Log: p.log, OnTCP: func(c net.Conn) { p.inH.ServeTCP(ctx, c) }}
	handlers := []http.Handler{p.outH, p.inH, h.Admin(), h.Metrics(), h.Health(), h.Status()}
	for i, l := range lns {
		if l == nil {
			continue
		}
		if i == 1 {
			l = p.inSniff
		}
		if i == 0 && o.Capture {
			// Captured outbound connections: the listener for the original
			// destination decides HTTP or opaque TCP; unknown destinations
			// are sniffed (ALLOW_ANY passes opaque bytes through).
			l = &listener.SniffListener{Listener: l, Log: p.log, Decide: p.outH.OutboundDecision,
				OnTCP: func(c net.Conn) { p.outH.ServeTCPOutbound(ctx, c) }}
		}
		srv := &http.Server{Handler: handlers[i], ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)}
		if i <= 1 && o.Capture {
			srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
				if od, ok := originalDst(c); ok {
					return listener.WithOriginalDst(ctx, od)
				}
				return ctx
			}
		}
		if i <= 1 {
			pr := new(http.Protocols)
			pr.SetHTTP1(true)
			pr.SetUnencryptedHTTP2(true)
			srv.Protocols = pr
		}
		if i == 1 && o.MTLS != nil {
			srv.ConnContext = peerTLSContext(srv.ConnContext)
			srv.Handler = peerTLSHandler(handlers[i])
		}
		// Every listener, admin, metrics, health and status included, is
		// served by the proxy's own HTTP/1.1 server: the request path has it
		// mapped already, so a scrape or a probe maps no second server's code
		// into the process (net/http's server: a /stats, a Prometheus scrape
		// and a readiness probe mapped 0.6–0.8 MB more of the executable).
		var hs httpServer = srv
		if !o.StdHTTPServer {
			hs = &listener.Server{Handler: srv.Handler, ConnContext: srv.ConnContext, ReadHeaderTimeout: srv.ReadHeaderTimeout, Log: p.log}
		}
		p.servers = append(p.servers, hs)
		p.listeners = append(p.listeners, l)
		go func() {
			if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.log.Error("listener stopped", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	xc, err := xdsclient.New(xdsclient.Config{Address: o.ControlPlane, Node: p.Node(), Update: p.update, Logger: p.log,
		BackoffMin: o.BackoffMin, BackoffMax: o.BackoffMax, Delta: o.XDSDelta})
	if err != nil {
		return err
	}
	p.xds = xc
	go func() { _ = xc.Run(ctx) }()
	return nil
}

// Run starts the proxy and serves until ctx is done or Quit is called,
// then drains: listeners stop accepting and in-flight requests finish
// (bounded by DrainTimeout).
func (p *Proxy) Run(ctx context.Context) error {
	xctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := p.Start(xctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-p.quit:
	}
	return p.Shutdown()
}

// Shutdown drains all listeners.
func (p *Proxy) Shutdown() error {
	p.log.Info("draining")
	dctx, cancel := context.WithTimeout(context.Background(), p.opts.DrainTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(p.servers))
	for i, s := range p.servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Shutdown(dctx)
		}()
	}
	if p.gw != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.gw.shutdown()
		}()
	}
	if p.boundIn != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.boundIn.shutdown()
		}()
	}
	wg.Wait()
	errs = append(errs, p.tracer.Close())   // export the spans still queued
	errs = append(errs, p.otelLogs.Close()) // and the access log records
	return errors.Join(errs...)
}

// originalDst reads SO_ORIGINAL_DST from a captured connection.
func originalDst(c net.Conn) (netip.AddrPort, bool) {
	tc := listener.UnderlyingTCP(c)
	if tc == nil {
		return netip.AddrPort{}, false
	}
	od, err := iptables.OriginalDst(tc)
	return od, err == nil
}

type adminSource struct{ *Proxy }

// Ready implements admin.Source.
func (a adminSource) Ready() bool { return a.IsReady() }

// IsReady reports whether the first complete configuration was applied.
func (p *Proxy) IsReady() bool {
	select {
	case <-p.ready:
		return true
	default:
		return false
	}
}

// ConfigDump implements admin.Source: JSON of the current resources.
func (p *Proxy) ConfigDump() ([]byte, error) {
	rt := p.rt.Load()
	out := map[string]any{"versions": map[string]string{}, "listeners": []json.RawMessage{}, "clusters": []json.RawMessage{},
		"routes": []json.RawMessage{}, "endpoints": []json.RawMessage{}}
	if rt == nil {
		return json.MarshalIndent(out, "", "  ")
	}
	res := rt.Resources
	out["versions"] = res.Versions
	m := protojson.MarshalOptions{Resolver: dumpResolver{protoregistry.GlobalTypes}}
	add := func(key string, names []string, get func(string) proto.Message) error {
		sort.Strings(names)
		var list []json.RawMessage
		for _, n := range names {
			b, err := m.Marshal(get(n))
			if err != nil { // e.g. an Any of a type not linked in: still show the rest
				b, _ = json.Marshal(map[string]string{"name": n, "error": err.Error()})
			}
			list = append(list, b)
		}
		out[key] = list
		return nil
	}
	var err error
	err = errors.Join(err,
		add("listeners", mapKeys(res.Listeners), func(n string) proto.Message { return res.Listeners[n] }),
		add("clusters", mapKeys(res.Clusters), func(n string) proto.Message { return res.Clusters[n] }),
		add("routes", mapKeys(res.Routes), func(n string) proto.Message { return res.Routes[n] }),
		add("endpoints", mapKeys(res.Endpoints), func(n string) proto.Message { return res.Endpoints[n] }))
	if err != nil {
		return nil, err
	}
	warnings := append([]string{}, rt.Warnings...)
	for _, c := range rt.Clusters.Clusters {
		for _, w := range c.Warnings {
			warnings = append(warnings, c.Name+": "+w)
		}
	}
	sort.Strings(warnings)
	out["warnings"] = warnings
	return json.MarshalIndent(out, "", "  ")
}

// dumpResolver resolves the types of Any fields for /config_dump. A type
// not linked into this binary (the proxy-only build registers the types
// the proxy executes, not every extension an EnvoyFilter may add) is shown
// as its "@type" alone instead of failing the whole resource.
type dumpResolver struct{ *protoregistry.Types }

func (r dumpResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := r.Types.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return (&emptypb.Empty{}).ProtoReflect().Type(), nil
	}
	return mt, err
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// WriteClusters implements admin.Source.
func (p *Proxy) WriteClusters(w io.Writer) {
	rt := p.rt.Load()
	if rt == nil {
		return
	}
	names := mapKeys(rt.Clusters.Clusters)
	sort.Strings(names)
	for _, n := range names {
		c := rt.Clusters.Clusters[n]
		fmt.Fprintf(w, "%s::circuit_breakers::default::max_connections::%d\n", n, c.Thresholds.MaxConnections)
		fmt.Fprintf(w, "%s::circuit_breakers::default::max_pending_requests::%d\n", n, c.Thresholds.MaxPending)
		fmt.Fprintf(w, "%s::circuit_breakers::default::max_requests::%d\n", n, c.Thresholds.MaxRequests)
		fmt.Fprintf(w, "%s::circuit_breakers::default::max_retries::%d\n", n, c.Thresholds.MaxRetries)
		for _, h := range c.Hosts {
			health := "healthy"
			if c.Ejected(h) {
				health = "/failed_outlier_check"
			}
			fmt.Fprintf(w, "%s::%s::rq_active::%d\n", n, h.Addr, h.Active())
			fmt.Fprintf(w, "%s::%s::rq_total::%d\n", n, h.Addr, h.Requests.Load())
			fmt.Fprintf(w, "%s::%s::rq_error::%d\n", n, h.Addr, h.Failures.Load())
			fmt.Fprintf(w, "%s::%s::weight::%d\n", n, h.Addr, h.Weight())
			fmt.Fprintf(w, "%s::%s::priority::%d\n", n, h.Addr, h.Priority)
			fmt.Fprintf(w, "%s::%s::health_flags::%s\n", n, h.Addr, health)
		}
	}
}

// WriteStats implements admin.Source: Envoy-named cluster statistics, e.g.
// cluster.outbound|9080||reviews.default.svc.cluster.local.upstream_rq_pending_overflow: 3
func (p *Proxy) WriteStats(w io.Writer) {
	rt := p.rt.Load()
	if rt == nil {
		return
	}
	names := mapKeys(rt.Clusters.Clusters)
	sort.Strings(names)
	for _, n := range names {
		c := rt.Clusters.Clusters[n]
		b := c.Breakers
		for _, kv := range []struct {
			k string
			v uint64
		}{
			{"circuit_breakers.default.rq_pending_open", boolU(b.Pending.Load() >= c.Thresholds.MaxPending)},
			{"circuit_breakers.default.rq_open", boolU(b.Requests.Load() >= c.Thresholds.MaxRequests)},
			{"circuit_breakers.default.rq_retry_open", boolU(b.Retries.Load() >= c.RetryLimit())}, // max_retries or the retry budget
			{"outlier_detection.ejections_active", uint64(c.EjectedCount())},
			{"outlier_detection.ejections_total", b.Ejections.Load()},
			{"outlier_detection.ejections_enforced_consecutive_local_origin_failure", b.LocalOriginEjections.Load()},
			{"outlier_detection.ejections_enforced_success_rate", b.SuccessRateEjections.Load()},
			{"outlier_detection.ejections_enforced_failure_percentage", b.FailurePercentageEjections.Load()},
			{"lb_healthy_panic", b.HealthyPanic.Load()},
			{"upstream_rq_active", uint64(max(b.Requests.Load(), 0))},
			{"upstream_rq_pending_active", uint64(max(b.Pending.Load(), 0))},
			{"upstream_rq_pending_overflow", b.PendingOverflow.Load()},
			{"upstream_rq_pending_total", b.PendingTotal.Load()},
			{"upstream_rq_retry", b.RetryTotal.Load()},
			{"upstream_rq_retry_overflow", b.RetryOverflow.Load()},
			{"upstream_rq_total", b.RequestTotal.Load()},
			{"upstream_rq_overflow", b.RequestOverflow.Load()},
		} {
			fmt.Fprintf(w, "cluster.%s.%s: %d\n", n, kv.k, kv.v)
		}
	}
}

func boolU(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// Wait blocks until background mirror requests finish (tests).
func (p *Proxy) Wait() {
	if p.outH != nil {
		p.outH.Wait()
		p.inH.Wait()
	}
}
