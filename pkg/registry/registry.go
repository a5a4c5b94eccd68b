// Package registry is Weft's service registry: it derives services and
// endpoints from ServiceEntry, WorkloadEntry and WorkloadGroup resources,
// from self-registered proxies (xDS node metadata) and from external
// sources such as Kubernetes (pkg/registry/kube, fed through
// UpdateSource), and hands out immutable snapshots for translation.
package registry

import (
	"log/slog"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// DefaultDomainSuffix is the cluster DNS suffix of generated host names.
const DefaultDomainSuffix = "cluster.local"

// Resolution says how a service's endpoints are found, as in ServiceEntry.
type Resolution string

// Resolutions, named as in ServiceEntry.resolution.
const (
	ResolutionNone          Resolution = "NONE"
	ResolutionStatic        Resolution = "STATIC"
	ResolutionDNS           Resolution = "DNS"
	ResolutionDNSRoundRobin Resolution = "DNS_ROUND_ROBIN"
)

// ProtocolAuto marks a port without a declared protocol (Istio's
// "unsupported" protocol): proxies detect HTTP on it and treat anything
// else as opaque TCP.
const ProtocolAuto = "AUTO"

// Port is one service port.
type Port struct {
	Name     string
	Number   uint32
	Protocol string // upper case: HTTP, HTTP2, GRPC, TCP, TLS, HTTPS, MONGO..., ProtocolAuto
	// TargetPort is the endpoint port when an endpoint names none (0: Number).
	TargetPort uint32
}

// Service is one host name with its ports.
type Service struct {
	Hostname     string
	Namespace    string
	Ports        []Port
	Resolution   Resolution
	MeshExternal bool
	// Addresses are the service's virtual IPs / CIDRs (may be empty).
	Addresses []string
	// ExportTo lists namespaces that see the service ("*" all, "." own);
	// empty means all.
	ExportTo []string
	// Source names what defined the service: "ServiceEntry ns/name" or
	// "proxy" for services created by self-registered proxies.
	Source string
}

// Port returns the service port with the given number.
func (s *Service) Port(n uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == n {
			return p, true
		}
	}
	return Port{}, false
}

// VisibleTo reports whether the service is exported to namespace ns.
func (s *Service) VisibleTo(ns string) bool {
	if len(s.ExportTo) == 0 {
		return true
	}
	for _, e := range s.ExportTo {
		switch e {
		case "*":
			return true
		case ".":
			if ns == s.Namespace {
				return true
			}
		case "~":
		default:
			if e == ns {
				return true
			}
		}
	}
	return false
}

// Endpoint is one instance of a service.
type Endpoint struct {
	// Hostname is the service the endpoint belongs to.
	Hostname string
	// Address is an IP or a DNS name (or unix socket path).
	Address string
	// Ports maps service port names to endpoint ports; a missing name means
	// the port's TargetPort (or its number).
	Ports          map[string]uint32
	Labels         map[string]string
	Locality       string // region/zone/subzone
	Weight         uint32 // 0 means 1
	ServiceAccount string
	Workload       string
	Namespace      string
	Network        string
	// OnlyListedPorts means the endpoint serves only the service ports
	// named in Ports (a proxy that joined some ports of a service through
	// its SERVICES metadata).
	OnlyListedPorts bool
}

// Serves reports whether the endpoint serves service port sp.
func (e *Endpoint) Serves(sp Port) bool {
	if !e.OnlyListedPorts {
		return true
	}
	_, ok := e.Ports[sp.Name]
	return ok
}

// PortFor returns the endpoint port that serves service port sp.
func (e *Endpoint) PortFor(sp Port) uint32 {
	if n, ok := e.Ports[sp.Name]; ok && n != 0 {
		return n
	}
	if sp.TargetPort != 0 {
		return sp.TargetPort
	}
	return sp.Number
}

// Snapshot is an immutable view of the registry. Callers must not modify it.
type Snapshot struct {
	// Services are sorted by host name, then namespace.
	Services []*Service
	// Endpoints maps a host name to its endpoints, sorted by address.
	Endpoints map[string][]*Endpoint
	// Version increases with every change.
	Version uint64
	// DomainSuffix is the cluster DNS suffix, e.g. "cluster.local".
	DomainSuffix string

	byHost map[string][]*Service
}

// ServicesByHost returns every service with that host name (one per
// defining namespace), in namespace order.
func (s *Snapshot) ServicesByHost(host string) []*Service {
	if s == nil {
		return nil
	}
	return s.byHost[host]
}

// Service returns the service with host name host, preferring the one
// defined in namespace ns, else the first visible one.
func (s *Snapshot) Service(host, ns string) *Service {
	svcs := s.ServicesByHost(host)
	for _, sv := range svcs {
		if sv.Namespace == ns {
			return sv
		}
	}
	for _, sv := range svcs {
		if sv.VisibleTo(ns) {
			return sv
		}
	}
	return nil
}

// EndpointsOf returns the endpoints of host.
func (s *Snapshot) EndpointsOf(host string) []*Endpoint {
	if s == nil {
		return nil
	}
	return s.Endpoints[host]
}

// Resolve maps a host as written in a resource of namespace ns to a
// registered host name: an exact registered name wins, else the short name
// expansion (see ResolveShortName).
func (s *Snapshot) Resolve(name, ns string) string {
	if len(s.ServicesByHost(name)) > 0 {
		return name
	}
	suffix := DefaultDomainSuffix
	if s != nil && s.DomainSuffix != "" {
		suffix = s.DomainSuffix
	}
	return ResolveShortName(name, ns, suffix)
}

// ResolveShortName expands a short host name: "reviews" in namespace
// "default" is "reviews.default.svc.cluster.local", "reviews.prod" is
// "reviews.prod.svc.cluster.local"; names with more dots, wildcards and
// names already under the suffix are returned unchanged.
func ResolveShortName(name, ns, domainSuffix string) string {
	if domainSuffix == "" {
		domainSuffix = DefaultDomainSuffix
	}
	if name == "" || strings.Contains(name, "*") || strings.HasSuffix(name, "."+domainSuffix) || net.ParseIP(name) != nil {
		return name
	}
	switch strings.Count(name, ".") {
	case 0:
		if ns == "" {
			ns = config.DefaultNamespace
		}
		return name + "." + ns + ".svc." + domainSuffix
	case 1:
		return name + ".svc." + domainSuffix
	}
	return name
}

// Registry is the thread-safe service registry.
type Registry struct {
	log *slog.Logger

	mu      sync.Mutex
	suffix  string
	configs []*config.Resource
	proxies map[string]*model.Proxy
	sources map[string]map[ServiceKey]SourceService
	// workloads are the external sources' workload instances (pods).
	workloads map[string]map[WorkloadKey]*Workload
	snap      *Snapshot
	// dirty is set by a change; the next Snapshot call rebuilds snap, so
	// a burst of changes (thousands of proxies connecting) costs one
	// rebuild per reader, not one per change.
	dirty   bool
	builds  int // snapshots built (for tests)
	version uint64
	// selectors lists, per namespace, the workloadSelector labels of its
	// ServiceEntries, and groups the WorkloadGroups by namespace/name: what
	// decides whether a proxy without SERVICES metadata is an endpoint.
	selectors map[string][]map[string]string
	groups    map[svcKey]*networking.WorkloadGroup
	subs      map[int]*subscription
	nextSub   int
}

// New returns an empty registry.
func New(logger *slog.Logger) *Registry {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{log: logger, suffix: DefaultDomainSuffix, proxies: map[string]*model.Proxy{}, sources: map[string]map[ServiceKey]SourceService{}, workloads: map[string]map[WorkloadKey]*Workload{}, subs: map[int]*subscription{}}
	r.snap = build(nil, nil, nil, nil, 0, r.suffix)
	return r
}

// SetDomainSuffix sets the cluster DNS suffix of host names made for
// proxies' SERVICES entries (default "cluster.local"); it should match
// translate.Input.DomainSuffix.
func (r *Registry) SetDomainSuffix(suffix string) {
	if suffix == "" {
		suffix = DefaultDomainSuffix
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if suffix != r.suffix {
		r.suffix = suffix
		r.rebuildLocked()
	}
}

// SetConfigs replaces the config-derived part of the registry with the
// ServiceEntry, WorkloadEntry and WorkloadGroup resources in rs (others are
// ignored). Resources are compared by pointer: the same objects in the
// same order are no change (config objects are immutable once stored).
func (r *Registry) SetConfigs(rs []*config.Resource) {
	var keep []*config.Resource
	for _, c := range rs {
		switch c.Kind {
		case config.KindServiceEntry, config.KindWorkloadEntry, config.KindWorkloadGroup:
			keep = append(keep, c)
		}
	}
	r.mu.Lock()
	same := slices.Equal(keep, r.configs)
	r.mu.Unlock()
	if same {
		return // e.g. only VirtualServices changed: nothing of ours
	}
	selectors := map[string][]map[string]string{}
	groups := map[svcKey]*networking.WorkloadGroup{}
	for _, c := range keep {
		switch spec := c.Spec.(type) {
		case *networking.ServiceEntry:
			if sel := spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
				selectors[nsOf(c)] = append(selectors[nsOf(c)], sel)
			}
		case *networking.WorkloadGroup:
			groups[svcKey{c.Meta.Name, nsOf(c)}] = spec
		}
	}
	r.mu.Lock()
	r.configs, r.selectors, r.groups = keep, selectors, groups
	r.rebuildLocked()
	r.mu.Unlock()
}

// affectsLocked reports whether proxy p can be part of a snapshot: it
// names services (SERVICES metadata) or a ServiceEntry of its namespace
// selects it (labels after its WorkloadGroup's). Other proxies are kept
// but change no snapshot, so adding or removing them rebuilds nothing.
func (r *Registry) affectsLocked(p *model.Proxy) bool {
	if p == nil {
		return false
	}
	if len(p.Services) > 0 {
		return true
	}
	sels := r.selectors[p.Namespace]
	if len(sels) == 0 {
		return false
	}
	q := applyGroups([]*model.Proxy{p}, r.groups)[0]
	for _, sel := range sels {
		if matches(sel, q.Labels) {
			return true
		}
	}
	return false
}

// UpsertProxy adds or replaces a self-registered proxy (keyed by p.ID). The
// registry keeps p: callers must not modify it afterwards.
func (r *Registry) UpsertProxy(p *model.Proxy) {
	if p == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.proxies[p.ID]
	if ok && reflect.DeepEqual(old, p) {
		return // a reconnect with the same metadata is not a change
	}
	r.proxies[p.ID] = p
	if r.affectsLocked(old) || r.affectsLocked(p) {
		r.rebuildLocked()
	}
}

// RemoveProxy forgets the proxy with node ID id.
func (r *Registry) RemoveProxy(id string) {
	r.mu.Lock()
	if old, ok := r.proxies[id]; ok {
		delete(r.proxies, id)
		if r.affectsLocked(old) {
			r.rebuildLocked()
		}
	}
	r.mu.Unlock()
}

// Snapshot returns the current immutable view, building it if anything
// changed since the last call.
func (r *Registry) Snapshot() *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dirty {
		r.dirty = false
		r.builds++
		proxies := make([]*model.Proxy, 0, len(r.proxies))
		for _, p := range r.proxies {
			proxies = append(proxies, p)
		}
		sort.Slice(proxies, func(i, j int) bool { return proxies[i].ID < proxies[j].ID })
		r.snap = build(r.configs, r.sourceServicesLocked(), r.sourceWorkloadsLocked(), proxies, r.version, r.suffix)
		r.log.Debug("registry rebuilt", "version", r.version, "services", len(r.snap.Services), "proxies", len(proxies))
	}
	return r.snap
}

// Subscribe registers fn to be called after each change. Calls are serial
// (never concurrent with each other) and asynchronous; changes that happen
// while fn runs are coalesced into one more call. cancel stops the calls
// and waits for a running one to finish; it is idempotent.
func (r *Registry) Subscribe(fn func()) (cancel func()) {
	s := &subscription{fn: fn, kick: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	r.mu.Lock()
	id := r.nextSub
	r.nextSub++
	r.subs[id] = s
	r.mu.Unlock()
	go s.run()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			delete(r.subs, id)
			r.mu.Unlock()
			close(s.done)
			<-s.exited
		})
	}
}

type subscription struct {
	fn     func()
	kick   chan struct{}
	done   chan struct{}
	exited chan struct{}
}

func (s *subscription) run() {
	defer close(s.exited)
	for {
		select {
		case <-s.done:
			return
		case <-s.kick:
			select {
			case <-s.done:
				return
			default:
			}
			s.fn()
		}
	}
}

// rebuildLocked records a change: the next Snapshot builds a new view,
// and subscribers are told.
func (r *Registry) rebuildLocked() {
	r.version++
	r.dirty = true
	for _, s := range r.subs {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// svcKey identifies a service by host and namespace.
type svcKey struct{ host, ns string }

// build derives a snapshot; it is pure.
func build(configs []*config.Resource, ext []SourceService, workloads []*Workload, proxies []*model.Proxy, version uint64, suffix string) *Snapshot {
	services := map[svcKey]*Service{}
	eps := map[string][]*Endpoint{}
	// External sources (Kubernetes) first: they win over ServiceEntries of
	// the same host and namespace.
	for _, s := range ext {
		k := svcKey{s.Service.Hostname, s.Service.Namespace}
		if _, dup := services[k]; dup {
			continue
		}
		c := *s.Service
		c.Ports = append([]Port(nil), s.Service.Ports...)
		services[k] = &c
		eps[c.Hostname] = append(eps[c.Hostname], s.Endpoints...)
	}
	groups := map[svcKey]*networking.WorkloadGroup{} // name, ns
	var entries []*config.Resource
	var wes []*config.Resource
	for _, c := range configs {
		switch spec := c.Spec.(type) {
		case *networking.ServiceEntry:
			entries = append(entries, c)
		case *networking.WorkloadEntry:
			wes = append(wes, c)
		case *networking.WorkloadGroup:
			groups[svcKey{c.Meta.Name, nsOf(c)}] = spec
		}
	}
	sort.Slice(entries, func(i, j int) bool { return keyLess(entries[i], entries[j]) })
	sort.Slice(wes, func(i, j int) bool { return keyLess(wes[i], wes[j]) })

	// Proxies take template labels / service account from their group.
	proxies = applyGroups(proxies, groups)
	selectable := indexProxies(proxies)

	joined := map[string]map[string]bool{} // host -> proxy IDs already endpoints
	type proxyEP struct {
		e     *Endpoint
		p     *model.Proxy
		k     svcKey
		ports map[uint32]bool // nil: every service port
	}
	declared := map[string]map[string]map[uint32]bool{} // host -> proxy ID -> ports
	var proxyEPs []proxyEP
	for _, c := range entries {
		se := c.Spec.(*networking.ServiceEntry)
		ns := nsOf(c)
		res := Resolution(se.GetResolution().String())
		var ports []Port
		for _, p := range se.GetPorts() {
			ports = append(ports, Port{Name: p.GetName(), Number: p.GetNumber(), Protocol: strings.ToUpper(p.GetProtocol()), TargetPort: p.GetTargetPort()})
		}
		for _, h := range se.GetHosts() {
			k := svcKey{h, ns}
			if _, dup := services[k]; dup {
				continue // first (oldest by name) wins
			}
			services[k] = &Service{
				Hostname: h, Namespace: ns, Ports: ports, Resolution: res,
				MeshExternal: se.GetLocation() == networking.ServiceEntry_MESH_EXTERNAL,
				Addresses:    append([]string(nil), se.GetAddresses()...),
				ExportTo:     append([]string(nil), se.GetExportTo()...),
				Source:       config.KindServiceEntry + " " + ns + "/" + c.Meta.Name,
			}
			for _, we := range se.GetEndpoints() {
				eps[h] = append(eps[h], fromWorkloadEntry(h, ns, c.Meta.Name, we))
			}
			if sel := se.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
				for _, w := range wes {
					spec := w.Spec.(*networking.WorkloadEntry)
					if nsOf(w) != ns || !matches(sel, mergeLabels(w.Meta.Labels, spec.GetLabels())) {
						continue
					}
					eps[h] = append(eps[h], fromWorkloadEntry(h, ns, w.Meta.Name, spec))
				}
				for _, w := range workloads {
					if w.Namespace != ns || !matches(sel, w.Labels) {
						continue
					}
					eps[h] = append(eps[h], &Endpoint{Hostname: h, Address: w.Address, Labels: copyLabels(w.Labels),
						Locality: w.Locality, ServiceAccount: w.ServiceAccount, Workload: w.Name, Namespace: ns, Network: w.Network})
				}
				for _, p := range selectable.candidates(ns, sel) {
					if !matches(sel, p.Labels) {
						continue
					}
					e := fromProxy(h, p, ports)
					eps[h] = append(eps[h], e)
					proxyEPs = append(proxyEPs, proxyEP{e, p, k, nil})
					if joined[h] == nil {
						joined[h] = map[string]bool{}
					}
					joined[h][p.ID] = true
				}
			}
		}
	}
	// Services named by proxies (SERVICES metadata).
	for _, p := range proxies {
		for _, entry := range p.Services {
			name, port, proto, ok := parseServiceEntry(entry)
			if !ok {
				continue
			}
			host := name
			if !strings.Contains(name, ".") {
				host = name + "." + p.Namespace + ".svc." + suffix
			}
			k := svcKey{host, p.Namespace}
			svc := services[k]
			if svc == nil {
				svc = &Service{Hostname: host, Namespace: p.Namespace, Resolution: ResolutionStatic, Source: "proxy"}
				services[k] = svc
			}
			if _, have := svc.Port(port); !have {
				if svc.Source != "proxy" {
					continue // a ServiceEntry owns the host and lacks the port
				}
				svc.Ports = append(svc.Ports, Port{Name: strings.ToLower(proto) + "-" + strconv.Itoa(int(port)), Number: port, Protocol: proto})
			}
			if declared[host] == nil {
				declared[host] = map[string]map[uint32]bool{}
			}
			if declared[host][p.ID] == nil {
				declared[host][p.ID] = map[uint32]bool{}
			}
			declared[host][p.ID][port] = true
			if joined[host][p.ID] {
				continue // already an endpoint (selector match or earlier entry)
			}
			if joined[host] == nil {
				joined[host] = map[string]bool{}
			}
			joined[host][p.ID] = true
			e := fromProxy(host, p, svc.Ports)
			eps[host] = append(eps[host], e)
			proxyEPs = append(proxyEPs, proxyEP{e, p, k, declared[host][p.ID]})
		}
	}
	// Proxy endpoints serve every port of their service through the inbound
	// listener, including ports other proxies added later.
	for _, pe := range proxyEPs {
		ports := services[pe.k].Ports
		if pe.ports != nil {
			var listed []Port
			for _, sp := range ports {
				if pe.ports[sp.Number] {
					listed = append(listed, sp)
				}
			}
			ports = listed
			pe.e.OnlyListedPorts = true
		}
		pe.e.Ports = nil
		setProxyPorts(pe.e, pe.p, ports)
	}

	snap := &Snapshot{Endpoints: eps, Version: version, DomainSuffix: suffix, byHost: map[string][]*Service{}}
	for _, s := range services {
		sort.Slice(s.Ports, func(i, j int) bool { return s.Ports[i].Number < s.Ports[j].Number })
		snap.Services = append(snap.Services, s)
	}
	sort.Slice(snap.Services, func(i, j int) bool {
		a, b := snap.Services[i], snap.Services[j]
		if a.Hostname != b.Hostname {
			return a.Hostname < b.Hostname
		}
		return a.Namespace < b.Namespace
	})
	for _, s := range snap.Services {
		snap.byHost[s.Hostname] = append(snap.byHost[s.Hostname], s)
	}
	for h, list := range eps {
		sort.SliceStable(list, func(i, j int) bool {
			if list[i].Address != list[j].Address {
				return list[i].Address < list[j].Address
			}
			return list[i].Workload < list[j].Workload
		})
		eps[h] = list
	}
	return snap
}

func keyLess(a, b *config.Resource) bool {
	if nsOf(a) != nsOf(b) {
		return nsOf(a) < nsOf(b)
	}
	return a.Meta.Name < b.Meta.Name
}

func nsOf(c *config.Resource) string {
	if c.Meta.Namespace == "" {
		return config.DefaultNamespace
	}
	return c.Meta.Namespace
}

func applyGroups(proxies []*model.Proxy, groups map[svcKey]*networking.WorkloadGroup) []*model.Proxy {
	out := make([]*model.Proxy, 0, len(proxies))
	for _, p := range proxies {
		g := groups[svcKey{p.Metadata["WORKLOAD_GROUP"], p.Namespace}]
		if g == nil {
			out = append(out, p)
			continue
		}
		c := *p
		c.Labels = mergeLabels(g.GetTemplate().GetLabels(), mergeLabels(g.GetMetadata().GetLabels(), p.Labels))
		if sa := g.GetTemplate().GetServiceAccount(); sa != "" && (p.ServiceAccount == "" || p.ServiceAccount == "default") {
			c.ServiceAccount = sa
		}
		out = append(out, &c)
	}
	return out
}

// parseServiceEntry parses NAME:PORT[/PROTOCOL] (protocol default HTTP).
func parseServiceEntry(s string) (name string, port uint32, proto string, ok bool) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok || name == "" {
		return "", 0, "", false
	}
	ps, proto, _ := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return "", 0, "", false
	}
	if proto == "" {
		proto = "HTTP"
	}
	return name, uint32(n), strings.ToUpper(proto), true
}

func fromWorkloadEntry(host, ns, name string, we *networking.WorkloadEntry) *Endpoint {
	e := &Endpoint{
		Hostname: host, Address: we.GetAddress(), Labels: copyLabels(we.GetLabels()),
		Locality: we.GetLocality(), Weight: we.GetWeight(), ServiceAccount: we.GetServiceAccount(),
		Workload: name, Namespace: ns, Network: we.GetNetwork(),
	}
	if len(we.GetPorts()) > 0 {
		e.Ports = make(map[string]uint32, len(we.GetPorts()))
		for k, v := range we.GetPorts() {
			e.Ports[k] = v
		}
	}
	return e
}

// proxyHost is the address a proxy's endpoint gets: its inbound listener
// host (explicit mode), else its IP.
func proxyHost(p *model.Proxy) string {
	if h, _, err := net.SplitHostPort(p.InboundAddress); err == nil && h != "" {
		return h
	}
	return p.IP
}

func fromProxy(host string, p *model.Proxy, ports []Port) *Endpoint {
	e := &Endpoint{
		Hostname: host, Address: proxyHost(p), Labels: copyLabels(p.Labels),
		Locality: p.Metadata["LOCALITY"], ServiceAccount: p.ServiceAccount,
		Workload: p.Workload, Namespace: p.Namespace,
	}
	setProxyPorts(e, p, ports)
	return e
}

func setProxyPorts(e *Endpoint, p *model.Proxy, ports []Port) {
	_, ps, err := net.SplitHostPort(p.InboundAddress)
	if err != nil {
		return
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return
	}
	if e.Ports == nil {
		e.Ports = map[string]uint32{}
	}
	for _, sp := range ports {
		e.Ports[sp.Name] = uint32(n)
	}
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func mergeLabels(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func copyLabels(m map[string]string) map[string]string {
	if len(m) == 0 {
		return map[string]string{}
	}
	return mergeLabels(m, nil)
}

// proxyIndex finds the proxies a workloadSelector may select without
// scanning every proxy for every ServiceEntry: by namespace and label.
type proxyIndex map[string]map[string][]*model.Proxy // ns -> "k=v" -> proxies, in input order

func indexProxies(proxies []*model.Proxy) proxyIndex {
	idx := proxyIndex{}
	for _, p := range proxies {
		m := idx[p.Namespace]
		if m == nil {
			m = map[string][]*model.Proxy{}
			idx[p.Namespace] = m
		}
		for k, v := range p.Labels {
			m[k+"="+v] = append(m[k+"="+v], p)
		}
	}
	return idx
}

// candidates returns, in input order, the proxies of namespace ns that
// carry one (the smallest) of sel's labels: a superset of those sel
// matches (sel is not empty).
func (idx proxyIndex) candidates(ns string, sel map[string]string) []*model.Proxy {
	k := ""
	for sk := range sel {
		if k == "" || sk < k {
			k = sk
		}
	}
	return idx[ns][k+"="+sel[k]]
}
