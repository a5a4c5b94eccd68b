package translate

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/registry"
)

// unixPrefix marks a Sidecar bind that is a unix domain socket.
const unixPrefix = "unix://"

// boundEgressListeners emits the listeners of Sidecar egress listeners
// with a bind address or captureMode NONE, as Istio does
// (buildSidecarOutboundListeners): one listener BIND_PORT per such egress
// port, on the bind address (127.0.0.1 when only captureMode NONE is
// given), with bind_to_port true (explicit, Istio leaves Envoy's default)
// for captureMode NONE and unix sockets
// (the application connects to it directly: no iptables), false otherwise
// (a captured listener matched by that original destination address).
// HTTP listeners use the port's route table (the egress listener decides
// which hosts it holds, as for the captured listener); a unix socket's
// route table is named by the bind and holds the egress listener's
// services on all their HTTP ports. TCP listeners proxy to the first
// service of the egress listener with that port, TLS ones pick the service
// by SNI. The captured listeners of the port stay as they are.
func (b *builder) boundEgressListeners() {
	if b.sidecar == nil {
		return
	}
	for _, eg := range b.sidecar.GetEgress() {
		bind, mode := eg.GetBind(), eg.GetCaptureMode()
		if eg.GetPort() == nil || (bind == "" && mode != networking.CaptureMode_NONE) {
			continue
		}
		unix := strings.HasPrefix(bind, unixPrefix)
		bindToPort := mode == networking.CaptureMode_NONE || unix
		if bind == "" {
			bind = "127.0.0.1"
		}
		port := eg.GetPort().GetNumber()
		name := ListenerName(bind, port)
		l := &listenerv3.Listener{Name: name, TrafficDirection: corev3.TrafficDirection_OUTBOUND}
		if unix {
			l.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: strings.TrimPrefix(bind, unixPrefix)}}}
		} else {
			l.Address = socketAddress(bind, port)
		}
		// Explicit either way: weft proxy binds a sidecar listener only
		// when told so (Envoy's default is true).
		l.BindToPort = wrapperspb.Bool(bindToPort)
		proto := strings.ToUpper(eg.GetPort().GetProtocol())
		switch {
		case isHTTP(proto) || proto == "" || proto == "HTTP_PROXY":
			rds := strconv.Itoa(int(port))
			if unix {
				rds = eg.GetBind()
				b.routes[rds] = b.unixRouteConfig(rds, eg)
			} else if b.routes[rds] == nil {
				b.routes[rds] = b.routeConfig(rds, port, nil)
			}
			l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcmFilter(hcmRDS("outbound_"+name, rds, false))}}}
		case unix:
			b.warnings = append(b.warnings, "Sidecar "+nsOf(b.sidecarR)+"/"+b.sidecarR.Meta.Name+": egress listener "+eg.GetBind()+
				": protocol "+proto+" on a unix domain socket is not translated (HTTP only)")
			continue
		case isTLS(proto):
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: TLSInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}}
			seen := map[string]bool{}
			for _, svc := range b.egressServices(eg, port) {
				for _, c := range b.tlsRoutes(svc, port) {
					var snis []string
					for _, s := range c.sni {
						if !seen[s] {
							seen[s] = true
							snis = append(snis, s)
						}
					}
					if len(snis) > 0 {
						l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Name: c.name,
							FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: snis},
							Filters:          []*listenerv3.Filter{tcpProxy(c.name, c.clusters, c.tunnel)}})
					}
				}
			}
			if len(l.FilterChains) == 0 {
				continue
			}
		default:
			fallback := b.fallbackCluster()
			f := tcpProxy(fallback, one(fallback), nil)
			if svcs := b.egressServices(eg, port); len(svcs) > 0 {
				f = b.tcpFilter(svcs[0], port) // the first service wins the port, as Istio's TCP-over-TCP conflict
			}
			l.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}}
		}
		b.listeners[name] = l
	}
}

// egressServices are the visible services an egress listener's hosts
// name that have port, in the builder's order.
func (b *builder) egressServices(eg *networking.IstioEgressListener, port uint32) []*registry.Service {
	var out []*registry.Service
	for _, svc := range b.services {
		if !b.egressHostsMatch(eg, svc) {
			continue
		}
		for _, p := range svc.Ports {
			if p.Number == port {
				out = append(out, svc)
				break
			}
		}
	}
	return out
}

// unixRouteConfig is the route table of an HTTP egress listener on a unix
// domain socket (Istio names it by the bind): a virtual host per HTTP port
// of each service the egress listener names (a bare host name goes to the
// service's first HTTP port), then allow_any or block_all.
func (b *builder) unixRouteConfig(name string, eg *networking.IstioEgressListener) *routev3.RouteConfiguration {
	rc := b.routeConfig(name, 0, nil)
	var vhs []*routev3.VirtualHost
	seen := map[string]bool{}
	for _, svc := range b.services {
		if !b.egressHostsMatch(eg, svc) {
			continue
		}
		for _, p := range svc.Ports {
			if !isHTTP(protocolOf(p)) {
				continue
			}
			vh := &routev3.VirtualHost{Name: svc.Hostname + ":" + strconv.Itoa(int(p.Number)), Domains: b.domains(svc, p.Number, seen)}
			if len(vh.Domains) == 0 {
				continue
			}
			vh.Routes = b.serviceRoutes(svc, p.Number, false)
			vhs = append(vhs, vh)
		}
	}
	rc.VirtualHosts = append(vhs, rc.VirtualHosts...)
	return rc
}

// boundIngressListeners emits, as Istio does for Sidecar ingress
// listeners with captureMode NONE (inboundCustomListener), a real inbound
// listener BIND_PORT (bind default 0.0.0.0, bind_to_port true) holding
// the virtualInbound filter chains of that port (after PeerAuthentication
// and Telemetry shaped them) and its listener filters: clients connect to
// it directly, without iptables. Other ingress listeners stay chains of
// virtualInbound (a bind there only names them in Istio).
func (b *builder) boundIngressListeners() {
	vi, _ := b.listeners[VirtualInbound].(*listenerv3.Listener)
	if b.sidecar == nil || vi == nil {
		return
	}
	for _, in := range b.sidecar.GetIngress() {
		if in.GetCaptureMode() != networking.CaptureMode_NONE || in.GetPort() == nil {
			continue
		}
		port := in.GetPort().GetNumber()
		bind := in.GetBind()
		if bind == "" {
			bind = "0.0.0.0"
		}
		name := ListenerName(bind, port)
		l := &listenerv3.Listener{Name: name, Address: socketAddress(bind, port), TrafficDirection: corev3.TrafficDirection_INBOUND,
			BindToPort: wrapperspb.Bool(true)}
		for _, fc := range vi.GetFilterChains() {
			if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == port {
				l.FilterChains = append(l.FilterChains, proto.Clone(fc).(*listenerv3.FilterChain))
			}
		}
		if len(l.FilterChains) == 0 {
			continue
		}
		for _, lf := range vi.GetListenerFilters() {
			l.ListenerFilters = append(l.ListenerFilters, proto.Clone(lf).(*listenerv3.ListenerFilter))
		}
		b.listeners[name] = l
	}
}
