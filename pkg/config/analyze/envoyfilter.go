package analyze

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
)

// envoyFilters reports EnvoyFilter patches that can never apply
// (WEFT0110) and what patches set that weft proxy does not execute
// (WEFT0109, from pkg/proxy/executable).
func (a *analyzer) envoyFilters() {
	for _, r := range a.rs {
		ef, ok := r.Spec.(*networking.EnvoyFilter)
		if !ok {
			continue
		}
		for i, p := range ef.GetConfigPatches() {
			path := fmt.Sprintf("spec.configPatches[%d]", i)
			if field, err := envoyfilter.Check(p); err != nil {
				// protobuf-go varies the space after "proto:" on purpose.
				a.report(r, Warning, CodeEnvoyFilterInvalid, path+"."+field, "%s; the patch is skipped", strings.ReplaceAll(err.Error(), "\u00a0", " "))
				continue
			}
			if p.GetMatch().GetProxy().GetProxyVersion() != "" {
				a.report(r, Warning, CodeEnvoyFilterNotExecuted, path+".match.proxy.proxyVersion",
					"weft proxy sends no %s node metadata, so this patch applies only to proxies that do (Envoy with Istio's agent)", envoyfilter.ProxyVersionKey)
			}
			for _, f := range envoyfilter.NotExecuted(p) {
				a.report(r, Warning, CodeEnvoyFilterNotExecuted, path+".patch.value", "%s is not executed by weft proxy", f.Text)
			}
		}
	}
}
