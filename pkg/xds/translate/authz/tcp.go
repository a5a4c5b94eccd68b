package authz

import (
	"fmt"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// NetworkFilterName is the listener filter name of network RBAC configs.
const NetworkFilterName = "envoy.filters.network.rbac"

// TCPStatPrefix is the stat prefix Istio gives its network RBAC filters.
const TCPStatPrefix = "tcp."

// TCPPolicies are the network RBAC filter configs for one proxy's opaque
// TCP inbound filter chains, in chain order Audit, Deny, Allow.
type TCPPolicies struct {
	Deny, Allow, Audit *rbacnet.RBAC
	Warnings           []string
}

// TranslateTCP builds the network RBAC filters for the proxy's inbound
// TCP (non-HTTP) filter chains, with Istio's TCP semantics: principals,
// namespaces, ipBlocks, ports and the TCP conditions (source.ip,
// source.namespace, source.principal, destination.ip/port, connection.sni)
// apply; HTTP-only fields (requestPrincipals, hosts, methods, paths,
// request.* conditions) make an ALLOW rule match nothing (dropped) and are
// ignored in a DENY or AUDIT rule (it matches more). CUSTOM policies are
// not applied to TCP (warning).
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
	return out, nil
}

// Filters returns the listener filters in chain order (before tcp_proxy).
func (p *TCPPolicies) Filters() []*listenerv3.Filter {
	var out []*listenerv3.Filter
	for _, c := range []*rbacnet.RBAC{p.Audit, p.Deny, p.Allow} {
		if c == nil {
			continue
		}
		a, err := anypb.New(c)
		if err != nil { // only for unregistered types, never for this one
			panic(fmt.Sprintf("authz: %s: %v", NetworkFilterName, err))
		}
		out = append(out, &listenerv3.Filter{Name: NetworkFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}})
	}
	return out
}
