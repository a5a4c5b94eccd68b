package translate

import (
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/translate/gwapi"
)

// gatewaySelects reports whether Istio Gateway c (spec gw) applies to
// this gateway proxy: its selector matches the proxy's labels. One
// converted from a Gateway API Gateway (package gwapi) selects proxies in
// the Gateway's namespace only, as Istio's deployments live there; and
// when the Gateway names a Service in spec.addresses (Istio's manual
// deployment), the endpoints of that Service are selected too.
func (b *builder) gatewaySelects(c *config.Resource, gw *networking.Gateway) bool {
	if host := c.Meta.Annotations[gwapi.ServiceAnnotation]; host != "" && b.proxyServes(host) {
		return true
	}
	if len(gw.GetSelector()) == 0 || !labelsMatch(gw.GetSelector(), b.p.Labels) {
		return false
	}
	return !gwapi.IsGenerated(c) || nsOf(c) == b.p.Namespace
}

// proxyServes reports whether the proxy is an endpoint of service host
// (same namespace and workload: a self-registered proxy that joined it, or
// a pod behind it).
func (b *builder) proxyServes(host string) bool {
	if b.reg == nil || b.p.Workload == "" {
		return false
	}
	for _, e := range b.reg.EndpointsOf(host) {
		if e.Workload == b.p.Workload && e.Namespace == b.p.Namespace {
			return true
		}
	}
	return false
}
