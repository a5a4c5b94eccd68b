package rbac

import (
	"fmt"
	"log/slog"

	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// NetworkFilterName is the listener filter name carrying a network RBAC
// typed_config (AuthorizationPolicy on opaque TCP).
const NetworkFilterName = "envoy.filters.network.rbac"

// NetworkFilters returns the proxy's network filter factories this package
// provides (pass as proxy.Options.NetworkFilters).
func NetworkFilters(log *slog.Logger) map[string]listener.NetworkFilterFactory {
	return map[string]listener.NetworkFilterFactory{NetworkFilterName: NetworkFactory(log)}
}

// NetworkFactory builds a ConnFilter from a network RBAC typed_config.
func NetworkFactory(log *slog.Logger) listener.NetworkFilterFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(tc *anypb.Any) (listener.ConnFilter, error) {
		cfg := &rbacnet.RBAC{}
		if tc != nil {
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", NetworkFilterName, err)
			}
		}
		if cfg.GetMatcher() != nil || cfg.GetShadowMatcher() != nil {
			return nil, fmt.Errorf("%s: matcher API is not supported", NetworkFilterName)
		}
		if cfg.GetEnforcementType() == rbacnet.RBAC_CONTINUOUS {
			return nil, fmt.Errorf("%s: enforcement_type CONTINUOUS is not supported", NetworkFilterName)
		}
		e, err := New(&rbachttp.RBAC{Rules: cfg.GetRules(), ShadowRules: cfg.GetShadowRules(), ShadowRulesStatPrefix: cfg.GetShadowRulesStatPrefix()})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", NetworkFilterName, err)
		}
		return &NetworkFilter{Engine: e, Log: log}, nil
	}
}

// NetworkFilter runs one network RBAC config on accepted connections
// (listener.ConnFilter). HTTP-only matchers (headers, paths, request
// metadata) see an empty request and do not match.
type NetworkFilter struct {
	Engine *Engine
	Log    *slog.Logger
}

// CheckConn evaluates the connection; a denial's details are Envoy's
// connection termination details rbac_access_denied_matched_policy[P]
// ("none" when no ALLOW policy matched).
func (f *NetworkFilter) CheckConn(c *listener.ConnInfo) (bool, string) {
	req := ConnRequest(c)
	d := f.Engine.Check(req)
	for _, m := range d.Shadow { // CUSTOM: the network ext_authz filter reads it
		c.SetMetadata(NetworkFilterName, m.StatPrefix+ShadowEffectivePolicyKey, m.Policy)
	}
	if len(d.Audited) > 0 {
		f.Log.Info("rbac audit", "policies", d.Audited, "source", c.Source, "principal", c.Principal, "allowed", d.Allowed)
	}
	if d.Allowed {
		return true, ""
	}
	p := d.Policy
	if p == "" {
		p = "none"
	}
	return false, DeniedDetails + "_matched_policy[" + p + "]"
}

// ConnRequest is the engine's view of a connection (no HTTP attributes).
func ConnRequest(c *listener.ConnInfo) *Request {
	return &Request{Principal: c.Principal, SourceIP: c.Source.Addr(), RemoteIP: c.Source.Addr(),
		DestIP: c.Destination.Addr(), DestPort: uint32(c.Destination.Port()), SNI: c.SNI}
}

var _ listener.ConnFilter = (*NetworkFilter)(nil)
