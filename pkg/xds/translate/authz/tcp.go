package authz

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthznet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// NetworkFilterName is the listener filter name of network RBAC configs.
const NetworkFilterName = "envoy.filters.network.rbac"

// TCPStatPrefix is the stat prefix Istio gives its network RBAC filters.
const TCPStatPrefix = "tcp."

// NetworkExtAuthzFilterName is the listener filter name of the network
// ext_authz filter (CUSTOM with a gRPC provider on TCP).
const NetworkExtAuthzFilterName = "envoy.filters.network.ext_authz"

// TCPPolicies are the network filter configs for one proxy's opaque TCP
// inbound filter chains, in chain order Audit, Custom (+ExtAuthz), Deny,
// Allow.
type TCPPolicies struct {
	Deny, Allow, Audit *rbacnet.RBAC
	// Custom marks the connections CUSTOM rules match (shadow rules, stat
	// prefix istio_ext_authz_) for ExtAuthz, or denies them when the
	// provider is unusable; nil when there is nothing to do on TCP (no
	// CUSTOM policy, or an HTTP provider, which Istio does not apply to TCP).
	Custom   *rbacnet.RBAC
	ExtAuthz *extauthznet.ExtAuthz
	Provider string
	Warnings []string
}

// TranslateTCP builds the network RBAC filters for the proxy's inbound
// TCP (non-HTTP) filter chains, with Istio's TCP semantics: principals,
// namespaces, ipBlocks, ports and the TCP conditions (source.ip,
// source.namespace, source.principal, destination.ip/port, connection.sni)
// apply; HTTP-only fields (requestPrincipals, hosts, methods, paths,
// request.* conditions) make an ALLOW rule match nothing (dropped) and are
// ignored in a DENY or AUDIT rule (it matches more). CUSTOM policies with
// an envoyExtAuthzGrpc provider become a shadow network RBAC filter and
// envoy.filters.network.ext_authz (as in Istio); HTTP providers are not
// applied to TCP (warning); an unusable provider denies the rules.
func TranslateTCP(policies []*config.Resource, proxy *model.Proxy, o Options) (*TCPPolicies, error) {
	p, err := translate(policies, proxy, o, true)
	if err != nil {
		return nil, err
	}
	out := &TCPPolicies{Warnings: p.Warnings}
	if p.Deny != nil {
		out.Deny = &rbacnet.RBAC{Rules: p.Deny.GetRules(), StatPrefix: TCPStatPrefix}
	}
	if p.Allow != nil {
		out.Allow = &rbacnet.RBAC{Rules: p.Allow.GetRules(), StatPrefix: TCPStatPrefix}
	}
	if p.Audit != nil {
		out.Audit = &rbacnet.RBAC{Rules: p.Audit.GetRules(), StatPrefix: TCPStatPrefix}
	}
	if p.Custom != nil {
		out.Provider = p.Provider
		out.Custom = &rbacnet.RBAC{Rules: p.Custom.GetRules(), ShadowRules: p.Custom.GetShadowRules(),
			ShadowRulesStatPrefix: p.Custom.GetShadowRulesStatPrefix(), StatPrefix: TCPStatPrefix}
	}
	if pr := p.extAuthzProvider; pr != nil {
		out.ExtAuthz = &extauthznet.ExtAuthz{
			StatPrefix:             TCPStatPrefix,
			GrpcService:            p.ExtAuthz.GetGrpcService(),
			FailureModeAllow:       pr.FailOpen,
			IncludePeerCertificate: true,
			TransportApiVersion:    corev3.ApiVersion_V3,
			FilterEnabledMetadata: &matcherv3.MetadataMatcher{
				Filter: NetworkFilterName,
				Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: ExtAuthzMetadataKey}}},
				Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: ExtAuthzPrefix}}}},
			},
		}
	}
	return out, nil
}

// Filters returns the listener filters in chain order (before tcp_proxy).
func (p *TCPPolicies) Filters() []*listenerv3.Filter {
	var out []*listenerv3.Filter
	add := func(name string, m proto.Message) {
		a, err := anypb.New(m)
		if err != nil { // only for unregistered types, never for these
			panic(fmt.Sprintf("authz: %s: %v", name, err))
		}
		out = append(out, &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	}
	if p.Audit != nil {
		add(NetworkFilterName, p.Audit)
	}
	if p.Custom != nil {
		add(NetworkFilterName, p.Custom)
	}
	if p.ExtAuthz != nil {
		add(NetworkExtAuthzFilterName, p.ExtAuthz)
	}
	if p.Deny != nil {
		add(NetworkFilterName, p.Deny)
	}
	if p.Allow != nil {
		add(NetworkFilterName, p.Allow)
	}
	return out
}
