package translate

import (
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// MTLSMode is the effective PeerAuthentication mode of one inbound port.
type MTLSMode int

// Modes, as Istio's: PERMISSIVE is the mesh default.
const (
	MTLSPermissive MTLSMode = iota
	MTLSStrict
	MTLSDisable
)

func (m MTLSMode) String() string {
	switch m {
	case MTLSStrict:
		return "STRICT"
	case MTLSDisable:
		return "DISABLE"
	}
	return "PERMISSIVE"
}

// Names used on mTLS filter chains (Envoy's and Istio's).
const (
	TLSInspectorFilter  = "envoy.filters.listener.tls_inspector"
	TransportTLS        = "tls"
	TransportRawBuffer  = "raw_buffer"
	WorkloadCertSecret  = "default"
	RootCASecret        = "ROOTCA"
	istioPeerExchange   = "istio-peer-exchange"
	istioALPN           = "istio"
	mtlsChainNameSuffix = "-mtls"
)

// PeerAuthnModes resolves the PeerAuthentication policies in configs for
// proxy p the way Istio does: a workload policy (selector matching p's
// labels) over the namespace policy (no selector, p's namespace) over the
// mesh policy (no selector, a root namespace); UNSET inherits from the next
// level and the mesh default is PERMISSIVE. Within a level the oldest policy
// wins (then namespace/name order). portLevelMtls of the workload policy
// override the result per port (UNSET inherits the workload's mode); they
// are ignored on policies without a selector, as in Istio.
//
// It returns the mode of ports not listed and the per-port overrides.
func PeerAuthnModes(configs []*config.Resource, p *model.Proxy, roots map[string]bool) (MTLSMode, map[uint32]MTLSMode) {
	var mesh, ns, wl *config.Resource
	cfgs := append([]*config.Resource(nil), configs...)
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
	for _, c := range cfgs {
		pa, ok := c.Spec.(*security.PeerAuthentication)
		if !ok {
			continue
		}
		hasSel := len(pa.GetSelector().GetMatchLabels()) > 0
		switch {
		case nsOf(c) == p.Namespace && hasSel:
			if wl == nil && labelsMatch(pa.GetSelector().GetMatchLabels(), p.Labels) {
				wl = c
			}
		case nsOf(c) == p.Namespace && !hasSel:
			if ns == nil {
				ns = c
			}
		case roots[nsOf(c)] && !hasSel:
			if mesh == nil {
				mesh = c
			}
		}
	}
	mode := MTLSPermissive
	for _, c := range []*config.Resource{mesh, ns, wl} {
		if c == nil {
			continue
		}
		if m, ok := modeOf(c.Spec.(*security.PeerAuthentication).GetMtls()); ok {
			mode = m
		}
	}
	ports := map[uint32]MTLSMode{}
	if wl != nil {
		for port, pm := range wl.Spec.(*security.PeerAuthentication).GetPortLevelMtls() {
			if m, ok := modeOf(pm); ok {
				ports[port] = m
			}
		}
	}
	return mode, ports
}

// modeOf maps a mutual TLS setting; ok is false for UNSET (inherit).
func modeOf(m *security.PeerAuthentication_MutualTLS) (MTLSMode, bool) {
	switch m.GetMode() {
	case security.PeerAuthentication_MutualTLS_STRICT:
		return MTLSStrict, true
	case security.PeerAuthentication_MutualTLS_PERMISSIVE:
		return MTLSPermissive, true
	case security.PeerAuthentication_MutualTLS_DISABLE:
		return MTLSDisable, true
	}
	return 0, false
}

// ApplyPeerAuthn rewrites virtualInbound's per-port filter chains for the
// resolved modes, in Envoy's form: STRICT keeps one chain matching
// transport_protocol "tls" with a DownstreamTlsContext that requires a
// client certificate (SDS "default" and "ROOTCA"); PERMISSIVE adds a copy
// matching "raw_buffer" for plaintext; DISABLE leaves the chain plaintext
// (no transport_protocol match). A tls_inspector listener filter is added
// when any chain matches on the transport protocol. Chains of STRICT and
// PERMISSIVE ports get Istio's istio.metadata_exchange filter first; their
// TLS chains offer ALPN istio-peer-exchange when they carry opaque TCP.
func ApplyPeerAuthn(vi *listenerv3.Listener, def MTLSMode, ports map[uint32]MTLSMode) {
	if vi == nil {
		return
	}
	var out []*listenerv3.FilterChain
	inspect := false
	for _, fc := range vi.GetFilterChains() {
		mode := def
		if m, ok := ports[fc.GetFilterChainMatch().GetDestinationPort().GetValue()]; ok {
			mode = m
		}
		if mode == MTLSDisable {
			out = append(out, fc)
			continue
		}
		inspect = true
		tlsChain := proto.Clone(fc).(*listenerv3.FilterChain)
		addInboundMetadataExchange(tlsChain)
		if tlsChain.FilterChainMatch == nil {
			tlsChain.FilterChainMatch = &listenerv3.FilterChainMatch{}
		}
		tlsChain.FilterChainMatch.TransportProtocol = TransportTLS
		alpn := alpnHTTP
		if isTCPChain(fc) {
			alpn = alpnTCPWithExchange
		}
		tlsChain.TransportSocket = inboundMTLS(alpn)
		if mode == MTLSPermissive {
			tlsChain.Name = fc.GetName() + mtlsChainNameSuffix
			raw := proto.Clone(fc).(*listenerv3.FilterChain)
			if raw.FilterChainMatch == nil {
				raw.FilterChainMatch = &listenerv3.FilterChainMatch{}
			}
			raw.FilterChainMatch.TransportProtocol = TransportRawBuffer
			addInboundMetadataExchange(raw) // inert without ALPN, as in Istio
			out = append(out, tlsChain, raw)
			continue
		}
		out = append(out, tlsChain)
	}
	vi.FilterChains = out
	if inspect {
		vi.ListenerFilters = append(vi.ListenerFilters, &listenerv3.ListenerFilter{
			Name:       TLSInspectorFilter,
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		})
	}
}

// ALPN of inbound mTLS chains, as Istio's: opaque TCP chains offer
// istio-peer-exchange first (the TCP metadata exchange), HTTP chains only
// the HTTP protocols, so HTTP never runs the exchange.
var (
	alpnTCPWithExchange = []string{istioPeerExchange, "h2", "http/1.1"}
	alpnHTTP            = []string{"h2", "http/1.1"}
)

// isTCPChain reports whether fc proxies opaque TCP (tcp_proxy, no HCM).
func isTCPChain(fc *listenerv3.FilterChain) bool {
	tcp := false
	for _, f := range fc.GetFilters() {
		switch f.GetName() {
		case HCMFilter:
			return false
		case TCPProxyFilter:
			tcp = true
		}
	}
	return tcp
}

// inboundMTLS is the DownstreamTlsContext of an mTLS inbound chain
// offering ALPN protocols alpn.
func inboundMTLS(alpn []string) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  alpn,
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: WorkloadCertSecret, SdsConfig: workloadSDS()}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootCASecret, SdsConfig: workloadSDS()},
			}},
		},
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// TLSModeLabel is the endpoint label Istio's injector sets on meshed pods;
// Weft proxies with a workload certificate advertise it. Auto mTLS is used
// towards clusters whose every endpoint carries it with value "istio".
const TLSModeLabel = "security.istio.io/tlsMode"

// autoMTLS returns the ISTIO_MUTUAL transport socket for a cluster without
// DestinationRule TLS (Istio's auto mTLS) when the mesh has a CA and every
// endpoint of the cluster (service port, subset labels) is a meshed sidecar;
// nil otherwise. When every endpoint names its service account (Kubernetes
// pods, WorkloadEntries, self-registered proxies), the server's certificate
// must carry one of their SPIFFE IDs (spiffe://TRUST_DOMAIN/ns/NS/sa/SA).
func (b *builder) autoMTLS(tp *networking.TrafficPolicy, svc *registry.Service, port registry.Port, subset map[string]string) *corev3.TransportSocket {
	if !b.in.MTLS || tp.GetTls() != nil || b.reg == nil {
		return nil
	}
	n := 0
	sans := map[string]bool{}
	allNamed := true
	for _, e := range b.reg.EndpointsOf(svc.Hostname) {
		if !e.Serves(port) || !labelsMatch(subset, e.Labels) {
			continue
		}
		if e.Labels[TLSModeLabel] != istioALPN {
			return nil
		}
		n++
		if e.ServiceAccount == "" || e.Namespace == "" {
			allNamed = false
		} else {
			sans["spiffe://"+b.trustDomain()+"/ns/"+e.Namespace+"/sa/"+e.ServiceAccount] = true
		}
	}
	if n == 0 {
		return nil
	}
	settings := &networking.ClientTLSSettings{Mode: networking.ClientTLSSettings_ISTIO_MUTUAL}
	if allNamed {
		for s := range sans {
			settings.SubjectAltNames = append(settings.SubjectAltNames, s)
		}
		sort.Strings(settings.SubjectAltNames)
	}
	return upstreamTLS(settings, svc.Hostname, port.Number, nil)
}

// trustDomain is the mesh's trust domain (default "cluster.local").
func (b *builder) trustDomain() string {
	if td := b.in.Mesh.GetTrustDomain(); td != "" {
		return td
	}
	return "cluster.local"
}

// applyPeerAuthn applies PeerAuthentication to the sidecar's virtualInbound
// when the mesh has a CA.
func (b *builder) applyPeerAuthn() {
	if !b.in.MTLS {
		return
	}
	vi, ok := b.listeners[VirtualInbound].(*listenerv3.Listener)
	if !ok {
		return
	}
	def, ports := PeerAuthnModes(b.in.Configs, b.p, b.root)
	ApplyPeerAuthn(vi, def, ports)
}
