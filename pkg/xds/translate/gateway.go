package translate

import (
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/gatewayapi"
	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
	"github.com/weftmesh/weft/pkg/xds/translate/gwapi"
)

// gwServer is one Gateway server with the gateway it belongs to.
type gwServer struct {
	gw    *config.Resource
	srv   *networking.Server
	index int
}

func (s gwServer) gatewayName() string { return nsOf(s.gw) + "/" + s.gw.Meta.Name }

// hosts returns the server's hosts without their namespace prefix.
func (s gwServer) hosts() []string {
	var out []string
	for _, h := range s.srv.GetHosts() {
		if _, host, ok := strings.Cut(h, "/"); ok {
			h = host
		}
		out = append(out, h)
	}
	return out
}

// buildGateway emits listeners for the servers of every Gateway whose
// selector matches the proxy, their routes, and clusters for all services.
func (b *builder) buildGateway() {
	b.addWellKnownClusters()
	for _, svc := range b.services {
		b.buildClusters(svc)
	}
	byPort := map[uint32][]gwServer{}
	for _, c := range b.gateways {
		gw := c.Spec.(*networking.Gateway)
		if !b.gatewaySelects(c, gw) {
			continue
		}
		for i, s := range gw.GetServers() {
			byPort[s.GetPort().GetNumber()] = append(byPort[s.GetPort().GetNumber()], gwServer{c, s, i})
		}
	}
	for port, servers := range byPort {
		b.gatewayListener(port, servers)
	}
}

func (b *builder) gatewayListener(port uint32, servers []gwServer) {
	lname := ListenerName("0.0.0.0", port)
	l := listener(lname, "0.0.0.0", port, corev3.TrafficDirection_OUTBOUND)
	ps := strconv.Itoa(int(port))
	var plainHTTP []gwServer
	tlsUsed := false
	for _, s := range servers {
		proto := strings.ToUpper(s.srv.GetPort().GetProtocol())
		mode := s.srv.GetTls().GetMode()
		switch {
		case (proto == "HTTP" || proto == "HTTP2" || proto == "GRPC") || (proto == "HTTPS" && s.srv.GetTls() == nil):
			plainHTTP = append(plainHTTP, s)
		case s.srv.GetTls() != nil && (mode == networking.ServerTLSSettings_PASSTHROUGH || mode == networking.ServerTLSSettings_AUTO_PASSTHROUGH):
			// PASSTHROUGH is the enum's zero value: only an explicit tls block means it.
			tlsUsed = true
			l.FilterChains = append(l.FilterChains, b.tlsRouteChains(s, port, false)...)
		case proto == "HTTPS" && isTerminating(mode):
			tlsUsed = true
			rname := "https." + ps + "." + serverName(s)
			b.routes[rname] = b.gatewayRoutes(rname, port, []gwServer{s})
			b.routeInfo[rname] = envoyfilter.RouteInfo{PortNames: []string{s.srv.GetPort().GetName()}, Gateways: []string{s.gatewayName()}}
			fc := &listenerv3.FilterChain{
				Name:            rname,
				Filters:         []*listenerv3.Filter{hcmFilter(hcmRDS(rname, rname, false))},
				TransportSocket: b.downstreamTLS(s.srv.GetTls()),
			}
			if sni := sniNames(s.hosts()); len(sni) > 0 {
				fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: sni}
			}
			l.FilterChains = append(l.FilterChains, fc)
		default: // TCP, and TLS terminated here, to tcp routes
			if s.srv.GetTls() != nil {
				if chains := b.tlsRouteChains(s, port, true); len(chains) > 0 {
					tlsUsed = true
					l.FilterChains = append(l.FilterChains, chains...)
				}
			}
			// The first tcp route that applies wins, as in Istio.
			if routes := b.gatewayTCP(s, port); len(routes) > 0 {
				fc := &listenerv3.FilterChain{Name: "tcp." + serverName(s), Filters: []*listenerv3.Filter{routes[0]}}
				if s.srv.GetTls() != nil {
					// Terminated here: chosen by SNI like an HTTPS server,
					// so several TLS servers (certificates) share a port.
					tlsUsed = true
					fc.TransportSocket = b.downstreamTLS(s.srv.GetTls())
					if sni := sniNames(s.hosts()); len(sni) > 0 {
						fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: sni}
					}
				}
				l.FilterChains = append(l.FilterChains, fc)
			}
		}
	}
	if len(plainHTTP) > 0 {
		rname := "http." + ps
		b.routes[rname] = b.gatewayRoutes(rname, port, plainHTTP)
		var info envoyfilter.RouteInfo
		for _, s := range plainHTTP {
			info.PortNames = append(info.PortNames, s.srv.GetPort().GetName())
			info.Gateways = append(info.Gateways, s.gatewayName())
		}
		b.routeInfo[rname] = info
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Name: rname, Filters: []*listenerv3.Filter{hcmFilter(hcmRDS(rname, rname, false))}})
	}
	if tlsUsed {
		l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: TLSInspector, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}}
	}
	if len(l.FilterChains) == 0 {
		return
	}
	sort.SliceStable(l.FilterChains, func(i, j int) bool { return l.FilterChains[i].Name < l.FilterChains[j].Name })
	b.listeners[lname] = l
}

func isTerminating(m networking.ServerTLSSettings_TLSmode) bool {
	return m == networking.ServerTLSSettings_SIMPLE || m == networking.ServerTLSSettings_MUTUAL || m == networking.ServerTLSSettings_OPTIONAL_MUTUAL ||
		m == networking.ServerTLSSettings_ISTIO_MUTUAL
}

func serverName(s gwServer) string {
	if n := s.srv.GetName(); n != "" {
		return n + "." + s.gw.Meta.Name + "." + nsOf(s.gw)
	}
	return strconv.Itoa(s.index) + "." + s.gw.Meta.Name + "." + nsOf(s.gw)
}

// sniNames returns the SNI names of server hosts; "*" means any (none).
func sniNames(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if h == "*" {
			return nil
		}
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}

// downstreamTLS builds a server-side TLS context for a Gateway server.
// ISTIO_MUTUAL is the mesh's mutual TLS: the gateway's own workload
// certificate (SDS "default"), clients verified against the mesh roots
// ("ROOTCA"), as a sidecar's inbound mTLS but with the gateway's ALPN.
func (b *builder) downstreamTLS(t *networking.ServerTLSSettings) *corev3.TransportSocket {
	if t.GetMode() == networking.ServerTLSSettings_ISTIO_MUTUAL {
		ts := inboundMTLS(alpnHTTP)
		ctx := &tlsv3.DownstreamTlsContext{}
		_ = ts.GetTypedConfig().UnmarshalTo(ctx)
		if len(t.GetCipherSuites()) > 0 {
			ctx.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{CipherSuites: t.GetCipherSuites()}
		}
		ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}
		return ts
	}
	common := &tlsv3.CommonTlsContext{}
	var cred Credential
	if cn := t.GetCredentialName(); cn != "" {
		if b.in.Credentials != nil && b.credentialAllowed(cn) {
			var ok bool
			if cred, ok = b.in.Credentials(b.p.Namespace, cn); ok {
				common.TlsCertificates = []*tlsv3.TlsCertificate{{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cred.Cert}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cred.Key}},
				}}
			}
		}
		if len(common.TlsCertificates) == 0 {
			// Unknown credential: reference it by SDS name so the gap is visible.
			sds := "kubernetes://" + cn
			if strings.HasPrefix(cn, gwapi.CredentialPrefix) {
				sds = cn
			}
			common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: sds, SdsConfig: ads()}}
		}
	} else if t.GetServerCertificate() != "" {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: fileSource(t.GetServerCertificate()), PrivateKey: fileSource(t.GetPrivateKey())}}
	}
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: common}
	if m := t.GetMode(); m == networking.ServerTLSSettings_MUTUAL || m == networking.ServerTLSSettings_OPTIONAL_MUTUAL {
		ctx.RequireClientCertificate = wrapperspb.Bool(m == networking.ServerTLSSettings_MUTUAL)
		v := &tlsv3.CertificateValidationContext{}
		if ca := t.GetCaCertificates(); ca != "" {
			v.TrustedCa = fileSource(ca)
		} else if len(cred.CA) > 0 {
			v.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: cred.CA}}
		} else if cn := t.GetCredentialName(); cn != "" {
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "kubernetes://" + cn + "-cacert", SdsConfig: ads()}}
		}
		if common.ValidationContextType == nil {
			common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: v}
		}
	}
	if len(t.GetCipherSuites()) > 0 {
		common.TlsParams = &tlsv3.TlsParameters{CipherSuites: t.GetCipherSuites()}
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// gatewayRoutes builds the route configuration for HTTP servers: one
// virtual host per VirtualService host (bound to the gateway) that the
// servers' hosts admit.
func (b *builder) gatewayRoutes(name string, port uint32, servers []gwServer) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name, ValidateClusters: wrapperspb.Bool(false)}
	ps := strconv.Itoa(int(port))
	type vhInfo struct {
		vh       *routev3.VirtualHost
		redirect bool
		merged   map[*config.Resource]bool
	}
	vhs := map[string]*vhInfo{}
	for _, s := range servers {
		gwName := s.gatewayName()
		for _, c := range b.vss {
			vs := c.Spec.(*networking.VirtualService)
			if !gatewayListed(vs.GetGateways(), nsOf(c), gwName) {
				continue
			}
			for _, h := range vs.GetHosts() {
				if !serverAdmits(s, h, nsOf(c)) {
					continue
				}
				vi := vhs[h]
				if vi == nil {
					vi = &vhInfo{vh: &routev3.VirtualHost{Name: h + ":" + ps, Domains: []string{h, h + ":" + ps}}, merged: map[*config.Resource]bool{}}
					vhs[h] = vi
				}
				if !vi.merged[c] {
					// Gateways merge the routes of every VirtualService
					// naming the host, oldest first (as Istio does).
					vi.merged[c] = true
					vi.vh.Routes = append(vi.vh.Routes, b.httpRoutes(c, routeCtx{port: port, gateway: gwName})...)
				}
				if s.srv.GetTls().GetHttpsRedirect() {
					vi.redirect = true
				}
			}
		}
		if s.srv.GetTls().GetHttpsRedirect() {
			// Hosts with no VirtualService still redirect.
			for _, h := range s.hosts() {
				if _, ok := vhs[h]; !ok {
					vhs[h] = &vhInfo{vh: &routev3.VirtualHost{Name: h + ":" + ps, Domains: []string{h, h + ":" + ps}}, redirect: true}
					if h == "*" {
						vhs[h].vh.Domains = []string{"*"}
					}
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, k := range sortedKeys(vhs) {
		vi := vhs[k]
		var doms []string
		for _, d := range vi.vh.Domains {
			if !seen[d] {
				seen[d] = true
				doms = append(doms, d)
			}
		}
		if len(doms) == 0 {
			continue
		}
		vi.vh.Domains = doms
		if vi.redirect {
			// Envoy redirects on require_tls before routing; the explicit
			// redirect route does the same for proxies that do not
			// implement require_tls.
			vi.vh.RequireTls = routev3.VirtualHost_ALL
			vi.vh.Routes = []*routev3.Route{{Name: "https_redirect", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true}}}}}
		}
		if len(vi.vh.Routes) == 0 {
			continue
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vi.vh)
	}
	return rc
}

// serverAdmits reports whether a VirtualService host (from namespace vsNS)
// is allowed by a server's "ns/host" entries.
func serverAdmits(s gwServer, vsHost, vsNS string) bool {
	for _, h := range s.srv.GetHosts() {
		ns, host, ok := strings.Cut(h, "/")
		if !ok {
			ns, host = "*", h
		}
		if ns == "." {
			ns = nsOf(s.gw)
		}
		if ns != "*" && ns != vsNS {
			continue
		}
		if hostMatch(host, vsHost) || hostMatch(vsHost, host) {
			return true
		}
	}
	return false
}

// tlsRouteChains routes TLS by SNI to the VirtualService tls routes bound
// to the gateway's server s: one chain per route match, with the SNI names
// the server admits that no earlier chain took. Passthrough chains
// (terminate false) honour the match's port and gateways. Terminated
// chains route the decrypted bytes of a TLS server terminated at the
// gateway and carry the server's certificate; they take only the
// VirtualServices generated for Gateway API TLSRoutes in mode Terminate
// (Istio applies tls routes to PASSTHROUGH servers only, so a hand-written
// VirtualService's tls routes are not used there).
func (b *builder) tlsRouteChains(s gwServer, port uint32, terminate bool) []*listenerv3.FilterChain {
	gwName := s.gatewayName()
	prefix := "passthrough."
	if terminate {
		prefix = "tls."
	}
	var out []*listenerv3.FilterChain
	seen := map[string]bool{}
	for _, c := range b.vss {
		vs := c.Spec.(*networking.VirtualService)
		if terminate && !gwapi.IsGenerated(c) || !gatewayListed(vs.GetGateways(), nsOf(c), gwName) {
			continue
		}
		for i, tr := range vs.GetTls() {
			for _, m := range tr.GetMatch() {
				if !terminate && m.GetPort() != 0 && m.GetPort() != port {
					continue
				}
				if !terminate && len(m.GetGateways()) > 0 && !gatewayListed(m.GetGateways(), nsOf(c), gwName) {
					continue
				}
				var snis []string
				for _, sni := range m.GetSniHosts() {
					if !seen[sni] && serverAdmits(s, sni, nsOf(c)) {
						seen[sni] = true
						snis = append(snis, sni)
					}
				}
				ws := b.l4Weights(tr.GetRoute(), nsOf(c), port)
				if len(snis) == 0 || len(ws) == 0 {
					continue
				}
				fc := &listenerv3.FilterChain{
					Name:    prefix + serverName(s) + "." + c.Meta.Name + "." + strconv.Itoa(i),
					Filters: []*listenerv3.Filter{tcpProxy(ws[0].Name, ws, b.tunnelFor(tr.GetRoute(), nsOf(c)))},
				}
				if terminate {
					fc.TransportSocket = b.downstreamTLS(s.srv.GetTls())
				}
				// sniHosts "*" (a TLSRoute without hostnames) matches any
				// SNI: the chain has no server_names.
				if sni := sniNames(snis); len(sni) > 0 {
					fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: sni}
				}
				out = append(out, fc)
			}
		}
	}
	return out
}

// gatewayTCP returns the tcp_proxy filters (weighted clusters, tunnel) of
// the tcp routes bound to the gateway for a TCP server.
func (b *builder) gatewayTCP(s gwServer, port uint32) []*listenerv3.Filter {
	gwName := s.gatewayName()
	var out []*listenerv3.Filter
	for _, c := range b.vss {
		vs := c.Spec.(*networking.VirtualService)
		if !gatewayListed(vs.GetGateways(), nsOf(c), gwName) {
			continue
		}
		for _, tr := range vs.GetTcp() {
			if !b.l4MatchApplies(tr.GetMatch(), port, gwName, nsOf(c)) {
				continue
			}
			if ws := b.l4Weights(tr.GetRoute(), nsOf(c), port); len(ws) > 0 {
				out = append(out, tcpProxy(ws[0].Name, ws, b.tunnelFor(tr.GetRoute(), nsOf(c))))
			}
		}
	}
	return out
}

// credentialAllowed reports whether the gateway proxy may use credential
// cn: always, except a Gateway API reference to a Secret in another
// namespace (gwapi.CredentialPrefix + "NS/NAME"), which needs a
// ReferenceGrant in NS from Gateways of the proxy's namespace, checked
// again here as Istio does when it serves such a secret (so an Istio
// Gateway cannot name another namespace's Secret that way).
func (b *builder) credentialAllowed(cn string) bool {
	ref, ok := strings.CutPrefix(cn, gwapi.CredentialPrefix)
	if !ok {
		return true
	}
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == b.p.Namespace {
		return ok
	}
	var grants []gatewayapi.NamedGrant
	for _, c := range b.in.Configs {
		if c.Kind == config.KindReferenceGrant {
			g := gatewayapi.NamedGrant{Namespace: nsOf(c)}
			if gatewayapi.Spec(c.Spec, &g.Spec) == nil {
				grants = append(grants, g)
			}
		}
	}
	return gatewayapi.SecretGranted(grants, b.p.Namespace, name, ns)
}
