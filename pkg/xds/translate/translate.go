// Package translate turns Istio configuration plus a registry snapshot into
// the Envoy v3 resources one proxy needs. It is pure: no I/O, no clocks, and
// its output order is deterministic (docs/xds-conventions.md describes the
// names and the subset the Weft proxy executes).
package translate

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	meshv1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
	"github.com/weftmesh/weft/pkg/xds/translate/gwapi"
)

// Input is everything translation reads. It must not be modified while
// Build runs; Build never modifies it and may be called concurrently.
type Input struct {
	// Configs is every Istio resource in the store.
	Configs []*config.Resource
	// Registry is the service registry snapshot (nil: no services).
	Registry *registry.Snapshot
	// DomainSuffix is the cluster DNS suffix (default "cluster.local").
	DomainSuffix string
	// RootNamespace holds mesh-wide Sidecar and DestinationRule defaults
	// (default "weft-system"; "istio-system" is accepted as a root too).
	RootNamespace string
	// Mesh is the mesh config (extension providers for tracing, access
	// logging and ext_authz; default providers); nil means none. Its
	// rootNamespace is not read here: callers copy it to RootNamespace.
	Mesh *meshv1.MeshConfig
	// Credentials looks up a TLS credentialName (a Gateway server's, or a
	// DestinationRule's for TLS origination) for a proxy in namespace ns
	// (Istio resolves it in the proxy workload's namespace); nil means no
	// credentials are known.
	Credentials func(ns, name string) (Credential, bool)
	// JWKSURI returns the jwks_uri of a JWT issuer, resolved by OpenID
	// discovery (pkg/oidc), for RequestAuthentication rules that give
	// neither jwks nor jwksUri; nil or not (yet) resolved: the provider
	// has no keys and rejects every token.
	JWKSURI func(issuer string) (string, bool)
	// MTLS is set when the mesh has a workload CA: PeerAuthentication is
	// applied to virtualInbound and clusters to sidecar endpoints get auto
	// mutual TLS (see peerauthn.go). Without it everything stays plaintext.
	MTLS bool
}

// Credential is a gateway TLS credential in PEM: certificate chain, key,
// and the CA bundle that MUTUAL servers verify clients against (nil when
// the credential has none).
type Credential struct {
	Cert, Key, CA []byte
}

// Output is the resources for one proxy, each list sorted by name.
type Output struct {
	Listeners, Routes, Clusters, Endpoints, Secrets []types.Resource
	// Warnings are human-readable problems with the proxy's WasmPlugins
	// (left out: they cannot be translated) and EnvoyFilters: patches that
	// were skipped (their result would be invalid, or their value could not
	// be decoded), then what applied patches set that weft proxy does not
	// execute.
	Warnings []string
}

// Names of the well-known clusters and listeners.
const (
	PassthroughCluster = "PassthroughCluster"
	BlackHoleCluster   = "BlackHoleCluster"
	VirtualOutbound    = "virtualOutbound"
	VirtualInbound     = "virtualInbound"
	// VirtualOutboundPort and VirtualInboundPort are Istio's capture ports.
	VirtualOutboundPort = 15001
	VirtualInboundPort  = 15006
)

// ErrInvalid wraps every error about a generated resource failing Validate.
var ErrInvalid = errors.New("invalid generated resource")

// validator is what every generated Envoy message implements.
type validator interface {
	types.Resource
	Validate() error
}

// Build translates in for proxy p.
func Build(in *Input, p *model.Proxy) (*Output, error) {
	if in == nil {
		in = &Input{}
	}
	if p == nil {
		return nil, errors.New("translate: nil proxy")
	}
	b := newBuilder(in, p, nil)
	switch p.Type {
	case model.Router:
		b.buildGateway()
		b.applyTelemetry()
	case model.Proxyless:
		b.buildProxyless()
	default:
		b.buildSidecar()
		b.applyPeerAuthn()
		b.applyTelemetry()
		b.boundIngressListeners()
	}
	b.applyEnvoyFilters()
	return b.finish()
}

// builder holds the per-proxy state of one Build call.
type builder struct {
	// skipClusters: buildClusters emits nothing (a Cache reuses the
	// previous push's outbound clusters and load assignments).
	skipClusters bool
	in           *Input
	p            *model.Proxy
	suffix       string
	root         map[string]bool
	reg          *registry.Snapshot

	vss     []*config.Resource // VirtualServices visible to the proxy, ordered
	vsHosts [][]string         // resolved hosts of vss[i]
	drs     []*config.Resource // DestinationRules visible to the proxy, ordered
	// drExact maps a resolved exact DestinationRule host to indexes into
	// drs; drWild lists the indexes of wildcard hosts.
	drExact map[string][]int
	drWild  []int
	drHosts []string
	// vsExact maps an exact resolved VirtualService host to indexes into
	// vss (in order); vsWild lists the indexes with wildcard hosts.
	vsExact  map[string][]int
	vsWild   []int
	gateways []*config.Resource
	sidecar  *networking.Sidecar
	sidecarR *config.Resource

	services []*registry.Service // services the proxy sees, ordered

	listeners map[string]validator
	routes    map[string]validator
	clusters  map[string]validator
	endpoints map[string]validator
	secrets   map[string]validator

	// routeInfo describes gateway route configurations for EnvoyFilter
	// routeConfiguration matches; warnings collects Output.Warnings.
	routeInfo map[string]envoyfilter.RouteInfo
	warnings  []string
}

// rootNamespaces are the namespaces whose Sidecar, DestinationRule,
// EnvoyFilter... resources apply mesh-wide: istio-system and
// in.RootNamespace (default weft-system).
func rootNamespaces(in *Input) map[string]bool {
	root := map[string]bool{"istio-system": true}
	if in.RootNamespace != "" {
		root[in.RootNamespace] = true
	} else {
		root["weft-system"] = true
	}
	return root
}

// routingConfigs returns the VirtualServices, DestinationRules, Gateways
// and Sidecars of configs, with the Istio Gateways and VirtualServices
// converted from Gateway API resources (package gwapi; suffix qualifies
// their Service names), oldest first (then by namespace and name), the
// order newBuilder reads them in.
func routingConfigs(configs []*config.Resource, suffix string) []*config.Resource {
	var cfgs []*config.Resource
	if gwapi.HasGatewayAPI(configs) {
		cfgs = gwapi.Convert(configs, suffix)
	}
	for _, c := range configs {
		switch c.Spec.(type) {
		case *networking.VirtualService, *networking.DestinationRule, *networking.Gateway, *networking.Sidecar:
			cfgs = append(cfgs, c)
		}
	}
	sort.SliceStable(cfgs, func(i, j int) bool {
		a, c := cfgs[i], cfgs[j]
		if !a.Meta.CreationTimestamp.Equal(c.Meta.CreationTimestamp) {
			return a.Meta.CreationTimestamp.Before(c.Meta.CreationTimestamp)
		}
		if nsOf(a) != nsOf(c) {
			return nsOf(a) < nsOf(c)
		}
		return a.Meta.Name < c.Meta.Name
	})
	return cfgs
}

// newBuilder starts a Build of in for p; sorted is routingConfigs(in.Configs)
// when the caller has it (nil: computed here).
func newBuilder(in *Input, p *model.Proxy, sorted []*config.Resource) *builder {
	b := &builder{
		in: in, p: p, reg: in.Registry,
		suffix:    in.DomainSuffix,
		root:      rootNamespaces(in),
		listeners: map[string]validator{}, routes: map[string]validator{},
		clusters: map[string]validator{}, endpoints: map[string]validator{}, secrets: map[string]validator{},
		routeInfo: map[string]envoyfilter.RouteInfo{},
	}
	if b.suffix == "" {
		b.suffix = registry.DefaultDomainSuffix
	}
	if sorted == nil {
		sorted = routingConfigs(in.Configs, in.DomainSuffix)
	}
	cfgs := sorted
	var rootSidecar, nsSidecar *config.Resource
	for _, c := range cfgs {
		switch spec := c.Spec.(type) {
		case *networking.VirtualService:
			if exported(spec.GetExportTo(), nsOf(c), p.Namespace) {
				b.vss = append(b.vss, c)
			}
		case *networking.DestinationRule:
			if !exported(spec.GetExportTo(), nsOf(c), p.Namespace) {
				continue
			}
			if sel := spec.GetWorkloadSelector().GetMatchLabels(); len(sel) > 0 && (nsOf(c) != p.Namespace || !labelsMatch(sel, p.Labels)) {
				continue
			}
			b.drs = append(b.drs, c)
		case *networking.Gateway:
			b.gateways = append(b.gateways, c)
		case *networking.Sidecar:
			sel := spec.GetWorkloadSelector().GetLabels()
			switch {
			case nsOf(c) == p.Namespace && len(sel) > 0 && labelsMatch(sel, p.Labels):
				if b.sidecarR == nil {
					b.sidecarR = c
				}
			case nsOf(c) == p.Namespace && len(sel) == 0:
				if nsSidecar == nil {
					nsSidecar = c
				}
			case b.root[nsOf(c)] && len(sel) == 0:
				if rootSidecar == nil {
					rootSidecar = c
				}
			}
		}
	}
	b.indexHosts()
	if b.sidecarR == nil {
		b.sidecarR = nsSidecar
	}
	if b.sidecarR == nil {
		b.sidecarR = rootSidecar
	}
	if b.sidecarR != nil {
		b.sidecar = b.sidecarR.Spec.(*networking.Sidecar)
	}
	if b.reg != nil {
		for _, s := range b.reg.Services {
			if s.VisibleTo(p.Namespace) && b.sidecarAllows(s) {
				b.services = append(b.services, s)
			}
		}
	}
	return b
}

// indexHosts resolves VirtualService and DestinationRule hosts once.
func (b *builder) indexHosts() {
	b.drExact, b.vsExact = map[string][]int{}, map[string][]int{}
	for i, c := range b.drs {
		h := b.resolve(c.Spec.(*networking.DestinationRule).GetHost(), nsOf(c))
		b.drHosts = append(b.drHosts, h)
		if strings.Contains(h, "*") {
			b.drWild = append(b.drWild, i)
		} else {
			b.drExact[h] = append(b.drExact[h], i)
		}
	}
	for i, c := range b.vss {
		var hosts []string
		wild := false
		for _, h := range c.Spec.(*networking.VirtualService).GetHosts() {
			rh := b.resolve(h, nsOf(c))
			hosts = append(hosts, rh)
			if strings.Contains(rh, "*") {
				wild = true
			} else if l := b.vsExact[rh]; len(l) == 0 || l[len(l)-1] != i {
				b.vsExact[rh] = append(l, i)
			}
		}
		b.vsHosts = append(b.vsHosts, hosts)
		if wild {
			b.vsWild = append(b.vsWild, i)
		}
	}
}

// sidecarAllows applies the Sidecar egress hosts ("ns/host") to a service:
// some egress listener names it.
func (b *builder) sidecarAllows(s *registry.Service) bool {
	if b.sidecar == nil || len(b.sidecar.GetEgress()) == 0 || b.p.Type == model.Router {
		return true
	}
	for _, eg := range b.sidecar.GetEgress() {
		if b.egressHostsMatch(eg, s) {
			return true
		}
	}
	return false
}

// sidecarAllowsPort applies the Sidecar egress listeners to one port of a
// service, as Istio: an egress listener with that port number decides for
// the port (only its hosts are reachable there); without one, the
// catch-all listeners (no port) do. So `egress: [{port: 9080, hosts:
// [./*]}, {hosts: [istio-system/*]}]` reaches the proxy's own namespace on
// port 9080 only and istio-system on every other port.
func (b *builder) sidecarAllowsPort(s *registry.Service, port uint32) bool {
	if b.sidecar == nil || len(b.sidecar.GetEgress()) == 0 || b.p.Type == model.Router {
		return true
	}
	var exact, catchAll []*networking.IstioEgressListener
	for _, eg := range b.sidecar.GetEgress() {
		switch {
		case eg.GetPort() == nil:
			catchAll = append(catchAll, eg)
		case eg.GetPort().GetNumber() == port:
			exact = append(exact, eg)
		}
	}
	if len(exact) == 0 {
		exact = catchAll
	}
	for _, eg := range exact {
		if b.egressHostsMatch(eg, s) {
			return true
		}
	}
	return false
}

// egressHostsMatch reports whether one of an egress listener's hosts
// ("ns/host": "*" any namespace, "." the Sidecar's, "~" none) names s.
func (b *builder) egressHostsMatch(eg *networking.IstioEgressListener, s *registry.Service) bool {
	sidecarNS := nsOf(b.sidecarR)
	for _, h := range eg.GetHosts() {
		ns, host, ok := strings.Cut(h, "/")
		if !ok {
			ns, host = "*", h
		}
		switch ns {
		case "*":
		case ".":
			if s.Namespace != sidecarNS {
				continue
			}
		case "~":
			continue
		default:
			if s.Namespace != ns {
				continue
			}
		}
		if hostMatch(host, s.Hostname) {
			return true
		}
	}
	return false
}

// registryOnly reports an explicit REGISTRY_ONLY outbound traffic policy
// (the enum's zero value, so an unset policy means ALLOW_ANY, the mesh
// default).
func (b *builder) registryOnly() bool {
	tp := b.sidecar.GetOutboundTrafficPolicy()
	return tp != nil && tp.GetMode() == networking.OutboundTrafficPolicy_REGISTRY_ONLY
}

func (b *builder) finish() (*Output, error) {
	out := &Output{Warnings: b.warnings}
	var errs []error
	collect := func(m map[string]validator, typ string) []types.Resource {
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		sort.Strings(names)
		res := make([]types.Resource, 0, len(names))
		for _, n := range names {
			if err := m[n].Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s %q: %w", ErrInvalid, typ, n, err))
				continue
			}
			res = append(res, m[n])
		}
		return res
	}
	out.Listeners = collect(b.listeners, "listener")
	out.Routes = collect(b.routes, "route configuration")
	out.Clusters = collect(b.clusters, "cluster")
	out.Endpoints = collect(b.endpoints, "cluster load assignment")
	out.Secrets = collect(b.secrets, "secret")
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// resolve maps a host written in a resource of namespace ns to a
// registered host name.
func (b *builder) resolve(host, ns string) string {
	if b.reg != nil {
		if len(b.reg.ServicesByHost(host)) > 0 {
			return host
		}
	}
	return registry.ResolveShortName(host, ns, b.suffix)
}

// service returns the visible service for host.
func (b *builder) service(host string) *registry.Service {
	if b.reg == nil {
		return nil
	}
	return b.reg.Service(host, b.p.Namespace)
}

func nsOf(c *config.Resource) string {
	if c == nil || c.Meta.Namespace == "" {
		return config.DefaultNamespace
	}
	return c.Meta.Namespace
}

// exported applies an exportTo list of a resource in namespace own.
func exported(exportTo []string, own, to string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		switch e {
		case "*":
			return true
		case ".":
			if own == to {
				return true
			}
		default:
			if e == to {
				return true
			}
		}
	}
	return false
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// hostMatch matches a host pattern ("*", "*.example.com", exact) to a host.
func hostMatch(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(host, pattern[1:])
	default:
		return pattern == host
	}
}

// protocolOf returns the port's protocol (upper case), inferring it from
// the name prefix ("http-web") when unset; unknown means HTTP.
// ProtocolAuto is the protocol of a port that declares none (no protocol,
// no protocol name prefix): as in Istio, the proxies detect HTTP on it and
// treat anything else as opaque TCP.
const ProtocolAuto = registry.ProtocolAuto

// protocolOf is a port's protocol: its declared one, else its name's
// prefix (http-web → HTTP), else ProtocolAuto.
func protocolOf(p registry.Port) string {
	pr := strings.ToUpper(p.Protocol)
	if pr == "" {
		name := strings.ToUpper(p.Name)
		for _, c := range []string{"HTTP2", "HTTPS", "HTTP", "GRPC-WEB", "GRPC", "TCP", "TLS", "MONGO", "MYSQL", "REDIS"} {
			if name == c || strings.HasPrefix(name, c+"-") {
				return c
			}
		}
		return ProtocolAuto
	}
	return pr
}

func isHTTP(proto string) bool {
	switch proto {
	case "HTTP", "HTTP2", "GRPC", "GRPC-WEB":
		return true
	}
	return false
}

func isTLS(proto string) bool { return proto == "TLS" || proto == "HTTPS" }

func isHTTP2(proto string) bool { return proto == "HTTP2" || proto == "GRPC" || proto == "GRPC-WEB" }
