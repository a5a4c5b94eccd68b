package translate

import (
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/translate/wasm"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/translate/authn"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

// Network filter names.
const (
	HCMFilter      = "envoy.filters.network.http_connection_manager"
	TCPProxyFilter = "envoy.filters.network.tcp_proxy"
	TLSInspector   = "envoy.filters.listener.tls_inspector"
	HTTPInspector  = "envoy.filters.listener.http_inspector"
)

// ListenerName returns ADDRESS_PORT.
func ListenerName(addr string, port uint32) string { return addr + "_" + strconv.Itoa(int(port)) }

func httpFilters(proxyless bool) []*hcmv3.HttpFilter {
	fs := []*hcmv3.HttpFilter{{Name: FaultFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&faultv3.HTTPFault{})}}}
	if !proxyless {
		fs = append(fs, &hcmv3.HttpFilter{Name: CorsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})}})
	}
	return append(fs, &hcmv3.HttpFilter{Name: RouterFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}})
}

func hcmRDS(statPrefix, routeName string, proxyless bool) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource: ads(), RouteConfigName: routeName,
		}},
		HttpFilters: httpFilters(proxyless),
	}
}

func hcmFilter(h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	return &listenerv3.Filter{Name: HCMFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}}
}

// tcpProxy is a tcp_proxy filter to the weighted clusters; tunnel (nil:
// none) is a DestinationRule's trafficPolicy.tunnel (tunnelFor).
func tcpProxy(statPrefix string, weights []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight, tunnel *tcpproxyv3.TcpProxy_TunnelingConfig) *listenerv3.Filter {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: statPrefix, TunnelingConfig: tunnel}
	if len(weights) == 1 {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: weights[0].Name}
	} else {
		tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: weights}}
	}
	return &listenerv3.Filter{Name: TCPProxyFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}}
}

func one(cluster string) []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight {
	return []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: cluster, Weight: 1}}
}

func listener(name, addr string, port uint32, dir corev3.TrafficDirection) *listenerv3.Listener {
	return &listenerv3.Listener{Name: name, Address: socketAddress(addr, port), TrafficDirection: dir}
}

// buildSidecar emits everything a sidecar needs.
func (b *builder) buildSidecar() {
	b.addWellKnownClusters()
	b.buildOutbound()
	b.boundEgressListeners()
	b.buildInbound()
}

// buildOutbound emits clusters, route configurations and listeners for
// every visible service port.
func (b *builder) buildOutbound() {
	type tlsChain struct {
		sni      []string
		clusters []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
		name     string
		tunnel   *tcpproxyv3.TcpProxy_TunnelingConfig
	}
	httpPorts := map[uint32][]*registry.Service{}
	autoWildcard := map[uint32][]*registry.Service{} // AUTO ports of services without a VIP
	wildcardHTTP := map[uint32]bool{}                // ports that need the 0.0.0.0 HTTP listener
	tcpListeners := map[string]*listenerv3.Listener{}
	tlsChains := map[string][]tlsChain{} // listener name -> chains
	tlsPorts := map[string]uint32{}
	for _, svc := range b.services {
		b.buildClusters(svc)
		for _, port := range svc.Ports {
			if !b.sidecarAllowsPort(svc, port.Number) {
				continue // a Sidecar egress listener for another port set
			}
			proto := protocolOf(port)
			switch {
			case isHTTP(proto):
				httpPorts[port.Number] = append(httpPorts[port.Number], svc)
				wildcardHTTP[port.Number] = true
			case proto == ProtocolAuto:
				// Protocol sniffing as Istio does for unnamed ports: HTTP
				// through the port's route table, anything else to the
				// service's TCP route.
				httpPorts[port.Number] = append(httpPorts[port.Number], svc)
				if len(svc.Addresses) == 0 || net.ParseIP(svc.Addresses[0]) == nil {
					autoWildcard[port.Number] = append(autoWildcard[port.Number], svc)
					wildcardHTTP[port.Number] = true
					continue
				}
				lname := ListenerName(svc.Addresses[0], port.Number)
				if _, taken := tcpListeners[lname]; taken {
					continue
				}
				l := listener(lname, svc.Addresses[0], port.Number, corev3.TrafficDirection_OUTBOUND)
				sniffed(l, port.Number, b.tcpFilter(svc, port.Number))
				tcpListeners[lname] = l
			case isTLS(proto):
				addr := "0.0.0.0"
				lname := ListenerName(addr, port.Number)
				tlsPorts[lname] = port.Number
				chains := b.tlsRoutes(svc, port.Number)
				for _, c := range chains {
					tlsChains[lname] = append(tlsChains[lname], tlsChain{c.sni, c.clusters, c.name, c.tunnel})
				}
			default:
				addr := "0.0.0.0"
				if len(svc.Addresses) > 0 && net.ParseIP(svc.Addresses[0]) != nil {
					addr = svc.Addresses[0]
				}
				lname := ListenerName(addr, port.Number)
				if _, taken := tcpListeners[lname]; taken {
					continue // first service (by host name) wins the wildcard port
				}
				l := listener(lname, addr, port.Number, corev3.TrafficDirection_OUTBOUND)
				l.FilterChains = []*listenerv3.FilterChain{{
					Filters: []*listenerv3.Filter{b.tcpFilter(svc, port.Number)},
				}}
				tcpListeners[lname] = l
			}
		}
	}
	for port, svcs := range httpPorts {
		b.routes[strconv.Itoa(int(port))] = b.routeConfig(strconv.Itoa(int(port)), port, svcs)
		if !wildcardHTTP[port] {
			continue // only sniffed ports of services with a VIP: their VIP listeners use the table
		}
		lname := ListenerName("0.0.0.0", port)
		l := listener(lname, "0.0.0.0", port, corev3.TrafficDirection_OUTBOUND)
		l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcmFilter(hcmRDS("outbound_"+strconv.Itoa(int(port)), strconv.Itoa(int(port)), false))}}}
		if auto := autoWildcard[port]; len(auto) > 0 {
			// Non-HTTP bytes on a sniffed wildcard port: to the one
			// service that has it, else as unknown traffic is.
			tcp := tcpProxy(b.fallbackCluster(), one(b.fallbackCluster()), nil)
			if len(auto) == 1 {
				tcp = b.tcpFilter(auto[0], port)
			}
			sniffed(l, port, tcp)
		}
		b.listeners[lname] = l
	}
	for name, l := range tcpListeners {
		if _, clash := b.listeners[name]; !clash {
			b.listeners[name] = l
		}
	}
	for lname, chains := range tlsChains {
		if _, clash := b.listeners[lname]; clash {
			continue
		}
		sort.SliceStable(chains, func(i, j int) bool { return chains[i].name < chains[j].name })
		l := listener(lname, "0.0.0.0", tlsPorts[lname], corev3.TrafficDirection_OUTBOUND)
		l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: TLSInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}}
		seen := map[string]bool{}
		for _, c := range chains {
			var snis []string
			for _, s := range c.sni {
				if !seen[s] {
					seen[s] = true
					snis = append(snis, s)
				}
			}
			if len(snis) == 0 {
				continue
			}
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             c.name,
				FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: snis},
				Filters:          []*listenerv3.Filter{tcpProxy(c.name, c.clusters, c.tunnel)},
			})
		}
		b.listeners[lname] = l
	}
	// The per-service listeners only match captured connections by their
	// original destination (virtualOutbound's use_original_dst): they bind
	// no socket, as Istio's (bind_to_port false).
	for _, l := range b.listeners {
		l.(*listenerv3.Listener).BindToPort = wrapperspb.Bool(false)
	}
	// virtualOutbound: everything not matched goes out as addressed
	// (ALLOW_ANY) or nowhere (REGISTRY_ONLY).
	fallback := b.fallbackCluster()
	vo := listener(VirtualOutbound, "0.0.0.0", VirtualOutboundPort, corev3.TrafficDirection_OUTBOUND)
	vo.UseOriginalDst = wrapperspb.Bool(true)
	vo.FilterChains = []*listenerv3.FilterChain{{Name: fallback, Filters: []*listenerv3.Filter{tcpProxy(fallback, one(fallback), nil)}}}
	b.listeners[VirtualOutbound] = vo
}

// fallbackCluster is where traffic to unknown destinations goes:
// PassthroughCluster (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY).
func (b *builder) fallbackCluster() string {
	if b.registryOnly() {
		return BlackHoleCluster
	}
	return PassthroughCluster
}

// HTTP application protocols the http_inspector detects (Istio's sniffing).
var httpALPN = []string{"http/1.1", "h2c"}

// httpInspector is the listener filter that detects HTTP/1.1 and h2c for
// the application_protocols chain match.
func httpInspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: HTTPInspector,
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspectorv3.HttpInspector{})}}
}

// sniffed makes outbound listener l detect the protocol as Istio does for
// ports without a declared protocol: an http_inspector listener filter, a
// chain for HTTP (application_protocols http/1.1, h2c) routed by the port's
// RDS table, and a default chain with tcp for everything else.
func sniffed(l *listenerv3.Listener, port uint32, tcp *listenerv3.Filter) {
	ps := strconv.Itoa(int(port))
	l.ListenerFilters = append(l.ListenerFilters, httpInspector())
	l.FilterChains = []*listenerv3.FilterChain{
		{Name: "http", FilterChainMatch: &listenerv3.FilterChainMatch{ApplicationProtocols: httpALPN},
			Filters: []*listenerv3.Filter{hcmFilter(hcmRDS("outbound_"+ps, ps, false))}},
		{Name: "tcp", Filters: []*listenerv3.Filter{tcp}},
	}
}

// routeConfig builds the RouteConfiguration for one outbound HTTP port.
func (b *builder) routeConfig(name string, port uint32, svcs []*registry.Service) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false)}
	seen := map[string]bool{}
	for _, svc := range svcs {
		vh := &routev3.VirtualHost{
			Name:    svc.Hostname + ":" + strconv.Itoa(int(port)),
			Domains: b.domains(svc, port, seen),
		}
		if len(vh.Domains) == 0 {
			continue
		}
		vh.Routes = b.serviceRoutes(svc, port, false)
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	if b.registryOnly() {
		// Unknown hosts: 502 from BlackHoleCluster, like Istio's block_all.
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "block_all", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name: "block_all", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
		}}})
	} else {
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name: "allow_any", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: PassthroughCluster}, Timeout: durationpb.New(0)}},
		}}})
	}
	return rc
}

// serviceRoutes returns the routes of svc on port: its VirtualService's
// (mesh) routes, or a default route when no VirtualService applies.
func (b *builder) serviceRoutes(svc *registry.Service, port uint32, proxyless bool) []*routev3.Route {
	if vs := b.virtualServiceFor(svc.Hostname, MeshGateway); vs != nil {
		if len(vs.Spec.(*networking.VirtualService).GetHttp()) > 0 {
			return b.httpRoutes(vs, routeCtx{port: port, proxyless: proxyless})
		}
	}
	return []*routev3.Route{defaultRoute(ClusterName(port, "", svc.Hostname))}
}

// tcpRoute returns the weighted clusters of the first VirtualService tcp
// route that applies to svc on port, else the service cluster, with the
// route's tunnel (tunnelFor).
func (b *builder) tcpRoute(svc *registry.Service, port uint32) ([]*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight, *tcpproxyv3.TcpProxy_TunnelingConfig) {
	if c := b.virtualServiceFor(svc.Hostname, MeshGateway); c != nil {
		for _, tr := range c.Spec.(*networking.VirtualService).GetTcp() {
			if !b.l4MatchApplies(tr.GetMatch(), port, MeshGateway, nsOf(c)) {
				continue
			}
			if ws := b.l4Weights(tr.GetRoute(), nsOf(c), port); len(ws) > 0 {
				return ws, b.tunnelFor(tr.GetRoute(), nsOf(c))
			}
		}
	}
	return one(ClusterName(port, "", svc.Hostname)), b.tunnelFor([]*networking.RouteDestination{{Destination: &networking.Destination{Host: svc.Hostname}}}, svc.Namespace)
}

// tcpFilter is the tcp_proxy filter of svc's TCP listener on port.
func (b *builder) tcpFilter(svc *registry.Service, port uint32) *listenerv3.Filter {
	ws, tunnel := b.tcpRoute(svc, port)
	return tcpProxy(ClusterName(port, "", svc.Hostname), ws, tunnel)
}

// tunnelFor is DestinationRule trafficPolicy.tunnel as Istio applies it to
// a tcp_proxy (tunnelingconfig.Apply): the DestinationRule of the first
// destination's host; with a single destination naming a subset, that
// subset's tunnel only (the top-level one is not inherited), otherwise
// the top-level tunnel (weighted destinations: a subset's tunnel is
// ignored, it is set on the listener, not on a cluster). The connection
// goes to the destination's cluster (the forward proxy or egress gateway)
// and is carried to targetHost:targetPort in an HTTP CONNECT (or POST)
// request.
func (b *builder) tunnelFor(ds []*networking.RouteDestination, ns string) *tcpproxyv3.TcpProxy_TunnelingConfig {
	if len(ds) == 0 {
		return nil
	}
	dr, _ := b.destinationRule(b.resolve(ds[0].GetDestination().GetHost(), ns))
	if dr == nil {
		return nil
	}
	t := dr.GetTrafficPolicy().GetTunnel()
	if subset := ds[0].GetDestination().GetSubset(); len(ds) == 1 && subset != "" {
		t = nil
		for _, s := range dr.GetSubsets() {
			if s.GetName() == subset {
				t = s.GetTrafficPolicy().GetTunnel()
				break
			}
		}
	}
	if t == nil {
		return nil
	}
	return &tcpproxyv3.TcpProxy_TunnelingConfig{
		Hostname: net.JoinHostPort(t.GetTargetHost(), strconv.Itoa(int(t.GetTargetPort()))),
		UsePost:  t.GetProtocol() == "POST",
	}
}

func (b *builder) l4MatchApplies(ms []*networking.L4MatchAttributes, port uint32, gateway, vsNS string) bool {
	if len(ms) == 0 {
		return true
	}
	for _, m := range ms {
		if m.GetPort() != 0 && m.GetPort() != port {
			continue
		}
		if len(m.GetSourceLabels()) > 0 && !labelsMatch(m.GetSourceLabels(), b.p.Labels) {
			continue
		}
		if len(m.GetGateways()) > 0 && !gatewayListed(m.GetGateways(), vsNS, gateway) {
			continue
		}
		return true
	}
	return false
}

func (b *builder) l4Weights(ds []*networking.RouteDestination, ns string, port uint32) []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight {
	var out []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	for _, d := range ds {
		w := uint32(d.GetWeight())
		if w == 0 && len(ds) > 1 {
			continue
		}
		if w == 0 {
			w = 1
		}
		name, _, _ := b.destCluster(d.GetDestination(), ns, port)
		out = append(out, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: name, Weight: w})
	}
	return out
}

type sniChain struct {
	name     string
	sni      []string
	clusters []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight
	tunnel   *tcpproxyv3.TcpProxy_TunnelingConfig
}

// tlsRoutes returns SNI filter chains for a TLS service port: one per
// VirtualService tls route that applies, then the service's own host.
func (b *builder) tlsRoutes(svc *registry.Service, port uint32) []sniChain {
	var out []sniChain
	if c := b.virtualServiceFor(svc.Hostname, MeshGateway); c != nil {
		for i, tr := range c.Spec.(*networking.VirtualService).GetTls() {
			for _, m := range tr.GetMatch() {
				if m.GetPort() != 0 && m.GetPort() != port {
					continue
				}
				if len(m.GetSourceLabels()) > 0 && !labelsMatch(m.GetSourceLabels(), b.p.Labels) {
					continue
				}
				ws := b.l4Weights(tr.GetRoute(), nsOf(c), port)
				if len(ws) == 0 {
					continue
				}
				out = append(out, sniChain{
					name:     svc.Hostname + "|" + strconv.Itoa(i) + "|" + c.Meta.Name + "." + nsOf(c),
					sni:      m.GetSniHosts(),
					clusters: ws,
					tunnel:   b.tunnelFor(tr.GetRoute(), nsOf(c)),
				})
			}
		}
	}
	out = append(out, sniChain{name: svc.Hostname + "|~default", sni: []string{svc.Hostname}, clusters: one(ClusterName(port, "", svc.Hostname)),
		tunnel: b.tunnelFor([]*networking.RouteDestination{{Destination: &networking.Destination{Host: svc.Hostname}}}, svc.Namespace)})
	return out
}

// inboundPort is one port the local application serves.
type inboundPort struct {
	port     uint32
	protocol string
	endpoint string // host:port of the app, default 127.0.0.1:port
}

// inboundPorts collects the ports of services the proxy is an endpoint of,
// APP_PORTS, and Sidecar ingress listeners.
func (b *builder) inboundPorts() []inboundPort {
	ports := map[uint32]inboundPort{}
	for _, ap := range b.p.AppPorts {
		ports[ap] = inboundPort{port: ap, protocol: "HTTP"}
	}
	if b.reg != nil {
		for _, svc := range b.reg.Services {
			if svc.Namespace != b.p.Namespace {
				continue
			}
			mine := false
			for _, e := range b.reg.EndpointsOf(svc.Hostname) {
				if e.Workload == b.p.Workload && e.Namespace == b.p.Namespace && b.p.Workload != "" {
					mine = true
					break
				}
			}
			if !mine {
				continue
			}
			for _, sp := range svc.Ports {
				n := sp.TargetPort
				if n == 0 {
					n = sp.Number
				}
				if _, ok := ports[n]; !ok || ports[n].protocol == "HTTP" {
					ports[n] = inboundPort{port: n, protocol: protocolOf(sp)}
				}
			}
		}
	}
	for _, in := range b.sidecar.GetIngress() {
		n := in.GetPort().GetNumber()
		ip := inboundPort{port: n, protocol: protocolOf(registry.Port{Name: in.GetPort().GetName(), Protocol: in.GetPort().GetProtocol()})}
		if ep := in.GetDefaultEndpoint(); ep != "" {
			ip.endpoint = ep
		}
		ports[n] = ip
	}
	out := make([]inboundPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].port < out[j].port })
	return out
}

// buildInbound emits virtualInbound and the inbound|PORT|| clusters.
func (b *builder) buildInbound() {
	ports := b.inboundPorts()
	if len(ports) == 0 {
		return
	}
	vi := listener(VirtualInbound, "0.0.0.0", VirtualInboundPort, corev3.TrafficDirection_INBOUND)
	vi.UseOriginalDst = wrapperspb.Bool(true)
	httpFilters := b.inboundHTTPFilters()
	tcpRBAC := b.inboundTCPRBAC()
	sniffInbound := false
	for _, ip := range ports {
		cname := InboundClusterName(ip.port)
		host, port := "127.0.0.1", ip.port
		if ip.endpoint != "" {
			if h, ps, err := net.SplitHostPort(ip.endpoint); err == nil {
				if n, err := strconv.ParseUint(ps, 10, 16); err == nil {
					host, port = h, uint32(n)
				}
			}
		}
		c := staticCluster(cname, host, port)
		b.clusters[cname] = c
		fc := &listenerv3.FilterChain{
			Name:             cname,
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(ip.port)},
		}
		if isHTTP(ip.protocol) || ip.protocol == ProtocolAuto {
			h := &hcmv3.HttpConnectionManager{
				StatPrefix: "inbound_" + strconv.Itoa(int(ip.port)),
				RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
					Name: cname,
					VirtualHosts: []*routev3.VirtualHost{{
						Name: "inbound|http|" + strconv.Itoa(int(ip.port)), Domains: []string{"*"},
						Routes: []*routev3.Route{{
							Name:  "default",
							Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
							Action: &routev3.Route_Route{Route: &routev3.RouteAction{
								ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cname}, Timeout: durationpb.New(0),
							}},
						}},
					}},
				}},
				HttpFilters: httpFilters,
			}
			fc.Filters = []*listenerv3.Filter{hcmFilter(h)}
		} else {
			fc.Filters = append(append([]*listenerv3.Filter{}, tcpRBAC...), tcpProxy(cname, one(cname), nil))
		}
		vi.FilterChains = append(vi.FilterChains, fc)
		if ip.protocol == ProtocolAuto {
			// Sniffed port: HTTP (detected by the http_inspector) takes the
			// HTTP chain, anything else this TCP one.
			fc.FilterChainMatch.ApplicationProtocols = httpALPN
			sniffInbound = true
			vi.FilterChains = append(vi.FilterChains, &listenerv3.FilterChain{
				Name:             cname + "-tcp",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(ip.port)},
				Filters:          append(append([]*listenerv3.Filter{}, tcpRBAC...), tcpProxy(cname, one(cname), nil)),
			})
		}
	}
	if sniffInbound {
		vi.ListenerFilters = append(vi.ListenerFilters, httpInspector())
	}
	b.listeners[VirtualInbound] = vi
}

// buildProxyless emits, for every visible service port, a HOST:PORT
// api_listener, its RouteConfiguration, and the clusters and endpoints.
func (b *builder) buildProxyless() {
	for _, svc := range b.services {
		b.buildClusters(svc)
		for _, port := range svc.Ports {
			ps := strconv.Itoa(int(port.Number))
			name := svc.Hostname + ":" + ps
			// gRPC clients may dial short names (xds:///echo.ns:7070, or
			// xds:///echo:7070 within the namespace); each alias is its own
			// listener sharing the HOST:PORT route configuration.
			for _, alias := range append([]string{svc.Hostname}, b.shortNames(svc)...) {
				ln := alias + ":" + ps
				if _, taken := b.listeners[ln]; taken {
					continue
				}
				b.listeners[ln] = &listenerv3.Listener{
					Name:        ln,
					ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcmRDS(name, name, true))},
				}
			}
			vh := &routev3.VirtualHost{Name: name, Domains: b.domains(svc, port.Number, map[string]bool{})}
			vh.Routes = b.serviceRoutes(svc, port.Number, true)
			b.routes[name] = &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}
		}
	}
}

// inboundRBAC returns the AuthorizationPolicy RBAC http filters (DENY
// before ALLOW) for the proxy's inbound HTTP chains; see package authz.
// inboundHTTPFilters is the inbound HCM filter chain: jwt_authn, RBAC, the
// WasmPlugins that apply, then the router. A WasmPlugin that cannot be
// translated is left out (and reported in Output.Warnings); the others
// still apply.
func (b *builder) inboundHTTPFilters() []*hcmv3.HttpFilter {
	chain := append(b.inboundRBAC(), &hcmv3.HttpFilter{Name: RouterFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}})
	var plugins []*config.Resource
	for _, r := range b.in.Configs {
		if r.Kind == config.KindWasmPlugin {
			plugins = append(plugins, r)
		}
	}
	if len(plugins) == 0 {
		return chain
	}
	// EnvoyFilter HTTP_FILTER patches are applied with all other patches
	// at the end of the build (applyEnvoyFilters).
	out, err := wasm.Apply(chain, plugins, nil, b.p, wasm.Inbound, b.in.RootNamespace)
	if err != nil { // the plugin is left out; proxy-status shows why
		b.warnings = append(b.warnings, strings.Split(err.Error(), "\n")...)
	}
	if out != nil {
		return out
	}
	return chain
}

func (b *builder) inboundRBAC() []*hcmv3.HttpFilter {
	pol, err := authz.TranslateWith(b.in.Configs, b.p, authz.Options{RootNamespace: b.in.RootNamespace, Mesh: b.in.Mesh, LookupService: b.lookupService})
	if err != nil { // fail closed: allow nothing
		pol = &authz.Policies{Allow: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}}}
	}
	var out []*hcmv3.HttpFilter
	if ja, err := authn.Translate(b.in.Configs, b.p, b.in.RootNamespace, b.in.JWKSURI); err == nil && ja != nil { // jwt_authn before RBAC
		out = append(out, &hcmv3.HttpFilter{Name: authn.FilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(ja)}})
	}
	return append(out, pol.HTTPFilters()...)
}

// inboundTCPRBAC returns the network RBAC filters (AuthorizationPolicy on
// opaque TCP, see authz.TranslateTCP) for the inbound TCP chains; a
// translation error allows nothing.
func (b *builder) inboundTCPRBAC() []*listenerv3.Filter {
	pol, err := authz.TranslateTCP(b.in.Configs, b.p, authz.Options{RootNamespace: b.in.RootNamespace, Mesh: b.in.Mesh, LookupService: b.lookupService})
	if err != nil {
		pol = &authz.TCPPolicies{Allow: &rbacnetv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}, StatPrefix: authz.TCPStatPrefix}}
	}
	return pol.Filters()
}

// lookupService resolves an ext_authz provider's service host for the
// proxy: the registry host it names (short names expand in ns, else the
// proxy's namespace), only if the proxy sees it (so its outbound cluster
// exists).
func (b *builder) lookupService(host, ns string) (string, bool) {
	if ns == "" {
		ns = b.p.Namespace
	}
	h := b.reg.Resolve(host, ns)
	for _, s := range b.services {
		if s.Hostname == h && (ns == b.p.Namespace || s.Namespace == ns) {
			return h, true
		}
	}
	return "", false
}
