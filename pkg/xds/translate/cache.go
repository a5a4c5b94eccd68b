package translate

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
)

// Cache builds many proxies from one Input and shares between sidecars
// what they have in common: a sidecar's outbound side (the well-known
// clusters, every outbound cluster and load assignment, the outbound route
// configurations and listeners) depends only on its namespace, its LOCALITY
// and NETWORK and those of its labels that a DestinationRule or Sidecar
// workloadSelector, a VirtualService sourceLabels match or a
// failoverPriority reads. Sidecars
// equal in those (say, every pod of every deployment in a namespace) get
// the outbound side built and validated once, as the very same resource
// objects; only the inbound side (virtualInbound, inbound clusters) and
// the listeners' telemetry are built per proxy. Gateways and proxyless
// clients are built as by Build.
//
// Cache.Build returns exactly what Build returns for the same Input and
// proxy (TestCacheEqualsBuild). Outputs share resources, so callers must
// not modify them. A Cache is safe for concurrent use; the Input must not
// change while it is used.
type Cache struct {
	in *Input
	// selKeys are the label keys any outbound-relevant selector reads,
	// sorted.
	selKeys []string
	// routing is routingConfigs(in.Configs, ...), sorted once for every proxy.
	routing []*config.Resource
	roots   []string // root namespaces, sorted, as applyEnvoyFilters passes them
	entries sync.Map // outbound key -> *outboundEntry
	// reuse are the previous cache's built entries, by outbound key,
	// whose clusters and load assignments entries of the same key take
	// (see NewCacheFrom); nil: none.
	reuse map[string]*outboundEntry
}

// outboundEntry is the shared outbound side of one key.
type outboundEntry struct {
	once sync.Once
	// listeners are the outbound listeners before telemetry; each proxy
	// gets its own copies (telemetry rewrites their HTTP filters).
	listeners map[string]validator
	// clusters, endpoints and routes are validated and sorted by name.
	clusters, endpoints, routes []types.Resource
	invalid                     bool
	// ready is set once the entry is built (and valid).
	ready atomic.Bool
	// scope is the builder that made them: what a proxy of this key sees
	// (VirtualServices, DestinationRules, Sidecar, services), reused by
	// every proxy of the key (see forProxy).
	scope *builder
}

// NewCache returns a Cache for in.
func NewCache(in *Input) *Cache {
	if in == nil {
		in = &Input{}
	}
	keys := map[string]bool{}
	add := func(m map[string]string) {
		for k := range m {
			keys[k] = true
		}
	}
	// failoverPriority compares the proxy's labels with the endpoints'.
	addPriority := func(s *networking.LocalityLoadBalancerSetting) {
		for _, l := range parseFailoverPriority(s.GetFailoverPriority()) {
			keys[l.key] = true
		}
	}
	policy := func(tp *networking.TrafficPolicy) {
		addPriority(tp.GetLoadBalancer().GetLocalityLbSetting())
		for _, pl := range tp.GetPortLevelSettings() {
			addPriority(pl.GetLoadBalancer().GetLocalityLbSetting())
		}
	}
	addPriority(in.Mesh.GetLocalityLbSetting())
	for _, c := range in.Configs {
		switch spec := c.Spec.(type) {
		case *networking.DestinationRule:
			add(spec.GetWorkloadSelector().GetMatchLabels())
			policy(spec.GetTrafficPolicy())
			for _, ss := range spec.GetSubsets() {
				policy(ss.GetTrafficPolicy())
			}
		case *networking.Sidecar:
			add(spec.GetWorkloadSelector().GetLabels())
		case *networking.VirtualService:
			for _, r := range spec.GetHttp() {
				for _, m := range r.GetMatch() {
					add(m.GetSourceLabels())
				}
			}
			for _, r := range spec.GetTcp() {
				for _, m := range r.GetMatch() {
					add(m.GetSourceLabels())
				}
			}
			for _, r := range spec.GetTls() {
				for _, m := range r.GetMatch() {
					add(m.GetSourceLabels())
				}
			}
		}
	}
	c := &Cache{in: in, routing: routingConfigs(in.Configs, in.DomainSuffix)}
	c.roots = slices.Sorted(maps.Keys(rootNamespaces(in)))
	for k := range keys {
		c.selKeys = append(c.selKeys, k)
	}
	slices.Sort(c.selKeys)
	return c
}

// NewCacheFrom is NewCache for in, reusing the clusters and load
// assignments prev built when in differs from prev's Input in
// VirtualServices only: every other config object the same (pointer), the
// same registry snapshot and mesh config (pointers), the same domain
// suffix, root namespace and mTLS, and the same label keys selectors read.
// The caller guarantees that in's Credentials and JWKSURI answer as
// prev's did. Clusters and load assignments read no VirtualService, so an
// outbound entry whose key prev built gets prev's very objects (which a
// server has already hashed and encoded) instead of building them again;
// listeners and routes are built anew. Output equals NewCache(in)'s
// (TestCacheFromEqualsBuild). prev may still be in use.
func NewCacheFrom(prev *Cache, in *Input) *Cache {
	c := NewCache(in)
	if prev != nil && slices.Equal(prev.selKeys, c.selKeys) && onlyVirtualServicesDiffer(prev.in, c.in) {
		// The entries, not prev: older generations are not kept.
		c.reuse = map[string]*outboundEntry{}
		prev.entries.Range(func(k, v any) bool {
			if e := v.(*outboundEntry); e.ready.Load() {
				c.reuse[k.(string)] = e
			}
			return true
		})
	}
	return c
}

// onlyVirtualServicesDiffer reports whether a and b are equal but for
// their VirtualServices (see NewCacheFrom).
func onlyVirtualServicesDiffer(a, b *Input) bool {
	if a.Registry != b.Registry || a.Mesh != b.Mesh || a.MTLS != b.MTLS || a.DomainSuffix != b.DomainSuffix ||
		a.RootNamespace != b.RootNamespace || (a.Credentials == nil) != (b.Credentials == nil) || (a.JWKSURI == nil) != (b.JWKSURI == nil) {
		return false
	}
	others := func(cs []*config.Resource) []*config.Resource {
		var out []*config.Resource
		for _, c := range cs {
			if _, vs := c.Spec.(*networking.VirtualService); !vs {
				out = append(out, c)
			}
		}
		return out
	}
	return slices.Equal(others(a.Configs), others(b.Configs))
}

// outboundKey is what a sidecar's outbound side depends on: type,
// namespace, LOCALITY and its labels projected on selKeys (labelsMatch
// reads only the selector's keys, so equal projections match equally).
func (c *Cache) outboundKey(p *model.Proxy) string {
	var b strings.Builder
	b.WriteString(string(p.Type))
	b.WriteByte(0)
	b.WriteString(p.Namespace)
	b.WriteByte(0)
	b.WriteString(p.Metadata["LOCALITY"])
	b.WriteByte(0)
	b.WriteString(p.Metadata["NETWORK"]) // failoverPriority's topology.istio.io/network
	for _, k := range c.selKeys {
		b.WriteByte(0)
		if v, ok := p.Labels[k]; ok {
			b.WriteByte('=')
			b.WriteString(v)
		}
	}
	return b.String()
}

// Build translates the Input for proxy p, as Build(in, p) does.
func (c *Cache) Build(p *model.Proxy) (*Output, error) {
	if p == nil || p.Type == model.Router || p.Type == model.Proxyless {
		return Build(c.in, p)
	}
	if len(envoyfilter.Select(c.in.Configs, p, c.roots)) > 0 {
		// EnvoyFilter patches may rewrite any resource of this proxy:
		// nothing of it is shared.
		return Build(c.in, p)
	}
	v, _ := c.entries.LoadOrStore(c.outboundKey(p), &outboundEntry{})
	e := v.(*outboundEntry)
	e.once.Do(func() {
		reuse := c.reuse[c.outboundKey(p)]
		b := newBuilder(c.in, p, c.routing)
		b.skipClusters = reuse != nil
		b.addWellKnownClusters()
		b.buildOutbound()
		b.boundEgressListeners()
		out, err := b.finish()
		if err != nil {
			e.invalid = true
			return
		}
		e.clusters, e.endpoints, e.routes = out.Clusters, out.Endpoints, out.Routes
		if reuse != nil {
			e.clusters, e.endpoints = reuse.clusters, reuse.endpoints
		}
		e.listeners = b.listeners
		e.scope = b
		e.ready.Store(true)
	})
	if e.invalid {
		// Build reports every invalid resource, in its order.
		return Build(c.in, p)
	}
	b := e.scope.forProxy(p)
	for name, l := range e.listeners {
		b.listeners[name] = proto.Clone(l).(*listenerv3.Listener)
	}
	b.buildInbound()
	b.applyPeerAuthn()
	b.applyTelemetry()
	b.boundIngressListeners()
	out, err := b.finish()
	if err != nil {
		return Build(c.in, p) // the same errors, in Build's order
	}
	// The per-proxy builder made only inbound clusters and routes: merge
	// them into the shared outbound lists (a per-proxy resource wins a name
	// clash, as the later write does in Build).
	out.Clusters = mergeByName(e.clusters, out.Clusters)
	out.Endpoints = mergeByName(e.endpoints, out.Endpoints)
	out.Routes = mergeByName(e.routes, out.Routes)
	return out, nil
}

// mergeByName merges two lists sorted by name; own wins a clash. With
// nothing of its own, shared itself is returned.
func mergeByName(shared, own []types.Resource) []types.Resource {
	if len(own) == 0 {
		return shared
	}
	out := make([]types.Resource, 0, len(shared)+len(own))
	i, j := 0, 0
	for i < len(shared) || j < len(own) {
		switch {
		case j == len(own):
			out = append(out, shared[i])
			i++
		case i == len(shared):
			out = append(out, own[j])
			j++
		default:
			switch cmp := strings.Compare(outputName(shared[i]), outputName(own[j])); {
			case cmp < 0:
				out = append(out, shared[i])
				i++
			case cmp > 0:
				out = append(out, own[j])
				j++
			default:
				out = append(out, own[j])
				i++
				j++
			}
		}
	}
	return out
}

// outputName is a resource's name (the key finish sorts by).
func outputName(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if n, ok := r.(interface{ GetClusterName() string }); ok {
		return n.GetClusterName()
	}
	return ""
}

// forProxy starts a builder for p, a proxy of the same outbound key as b's:
// it shares what newBuilder derived from the key (the VirtualServices,
// DestinationRules, gateways, Sidecar and services p sees, read-only from
// here on) and has its own, empty outputs.
func (b *builder) forProxy(p *model.Proxy) *builder {
	return &builder{
		in: b.in, p: p, suffix: b.suffix, root: b.root, reg: b.reg,
		vss: b.vss, vsHosts: b.vsHosts, drs: b.drs, drExact: b.drExact, drWild: b.drWild, drHosts: b.drHosts,
		vsExact: b.vsExact, vsWild: b.vsWild, gateways: b.gateways, sidecar: b.sidecar, sidecarR: b.sidecarR,
		services:  b.services,
		listeners: map[string]validator{}, routes: map[string]validator{},
		clusters: map[string]validator{}, endpoints: map[string]validator{}, secrets: map[string]validator{},
		routeInfo: map[string]envoyfilter.RouteInfo{},
	}
}
