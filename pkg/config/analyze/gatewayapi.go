package analyze

import (
	"fmt"
	"strings"

	"github.com/weftmesh/weft/pkg/config"
	gw "github.com/weftmesh/weft/pkg/config/gatewayapi"
)

// Gateway API findings.
const (
	CodeGatewayAPIParentNotFound = "WEFT0112" // a route parentRef names a Gateway that does not exist
	CodeGatewayAPINotAttached    = "WEFT0113" // a route parentRef matches no listener that accepts it
	CodeGatewayAPIClass          = "WEFT0114" // a Gateway's class is not served by weft
	CodeGatewayAPIRefNotGranted  = "WEFT0115" // a backendRef or certificateRef to another namespace has no ReferenceGrant there
)

type gwapiGateway struct {
	r    *config.Resource
	spec gw.GatewaySpec
}

// gatewayAPI checks routes (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) against the Gateways they name (existence,
// a listener that accepts them, hostname overlap), their backendRefs
// against the known hosts, and Gateway classes.
func (a *analyzer) gatewayAPI() {
	classes := map[string]gw.GatewayClassSpec{}
	gateways := map[string]*gwapiGateway{} // ns/name
	var grants []gw.NamedGrant
	for _, r := range a.rs {
		switch r.Kind {
		case config.KindReferenceGrant:
			g := gw.NamedGrant{Namespace: r.Meta.Namespace}
			if gw.Spec(r.Spec, &g.Spec) == nil {
				grants = append(grants, g)
			}
		case config.KindGatewayClass:
			var s gw.GatewayClassSpec
			if gw.Spec(r.Spec, &s) == nil {
				classes[r.Meta.Name] = s
			}
		case config.KindKubernetesGateway:
			g := &gwapiGateway{r: r}
			if gw.Spec(r.Spec, &g.spec) == nil {
				gateways[r.Meta.Namespace+"/"+r.Meta.Name] = g
			}
		}
	}
	for _, g := range gateways {
		if !gw.OurClass(g.spec.GatewayClassName, classes) {
			a.report(g.r, Info, CodeGatewayAPIClass, "spec.gatewayClassName", "class %q is not served by weft (classes istio and weft are, and GatewayClasses whose controllerName is %s or %s)",
				g.spec.GatewayClassName, gw.ControllerIstio, gw.ControllerWeft)
			continue
		}
		for i, l := range g.spec.Listeners {
			if l.TLS == nil || l.TLSMode() != gw.TLSModeTerminate {
				continue
			}
			for j, c := range l.TLS.CertificateRefs {
				ns := gw.Deref(c.Namespace, g.r.Meta.Namespace)
				if !gw.SecretGranted(grants, g.r.Meta.Namespace, c.Name, ns) {
					a.report(g.r, Warning, CodeGatewayAPIRefNotGranted, fmt.Sprintf("spec.listeners[%d].tls.certificateRefs[%d].namespace", i, j),
						"no ReferenceGrant in namespace %s lets Gateways from %s use Secret %s: listener %s is not served", ns, g.r.Meta.Namespace, c.Name, l.Name)
				}
			}
		}
	}
	for _, r := range a.rs {
		var s gw.HTTPRouteSpec
		switch r.Kind {
		case config.KindHTTPRoute:
			if gw.Spec(r.Spec, &s) != nil {
				continue
			}
		case config.KindGRPCRoute:
			var g gw.GRPCRouteSpec
			if gw.Spec(r.Spec, &g) != nil {
				continue
			}
			s = g.HTTP()
		case config.KindTLSRoute:
			var t gw.TLSRouteSpec
			if gw.Spec(r.Spec, &t) != nil {
				continue
			}
			s = t.HTTP()
		case config.KindTCPRoute:
			var t gw.TCPRouteSpec
			if gw.Spec(r.Spec, &t) != nil {
				continue
			}
			s = t.HTTP()
		default:
			continue
		}
		for i, pr := range s.ParentRefs {
			path := fmt.Sprintf("spec.parentRefs[%d]", i)
			switch {
			case pr.IsService():
				a.checkBackendHost(r, path, pr.Name, gw.Deref(pr.Namespace, r.Meta.Namespace))
			case pr.IsGateway():
				a.checkParentGateway(r, path, pr, s.Hostnames, gateways, classes)
			}
		}
		for i, rule := range s.Rules {
			for j, b := range rule.BackendRefs {
				if b.IsService() && b.Name != "" {
					path := fmt.Sprintf("spec.rules[%d].backendRefs[%d]", i, j)
					ns := gw.Deref(b.Namespace, r.Meta.Namespace)
					a.checkBackendHost(r, path, b.Name, ns)
					if !gw.Granted(grants, gw.Group, r.Kind, r.Meta.Namespace, "", "Service", b.Name, ns) {
						a.report(r, Warning, CodeGatewayAPIRefNotGranted, path+".namespace", "no ReferenceGrant in namespace %s lets %ss from %s refer to Service %s: this backend gets no traffic", ns, r.Kind, r.Meta.Namespace, b.Name)
					}
				}
			}
			for j, f := range rule.Filters {
				if f.RequestMirror != nil && f.RequestMirror.BackendRef.IsService() {
					m := f.RequestMirror.BackendRef
					a.checkBackendHost(r, fmt.Sprintf("spec.rules[%d].filters[%d].requestMirror.backendRef", i, j), m.Name, gw.Deref(m.Namespace, r.Meta.Namespace))
				}
			}
		}
	}
}

// checkBackendHost reports a Service name.ns that is not a known host
// (WEFT0101, as for VirtualService destinations), at the reference's name.
func (a *analyzer) checkBackendHost(r *config.Resource, path, name, ns string) {
	a.checkHost(r, path+".name", name+"."+ns+".svc."+a.o.domain)
}

func (a *analyzer) checkParentGateway(r *config.Resource, path string, pr gw.ParentReference, hostnames []string, gateways map[string]*gwapiGateway, classes map[string]gw.GatewayClassSpec) {
	gwNS := gw.Deref(pr.Namespace, r.Meta.Namespace)
	g := gateways[gwNS+"/"+pr.Name]
	if g == nil {
		msg := fmt.Sprintf("Gateway %s/%s (gateway.networking.k8s.io) not found: the route is not attached to it", gwNS, pr.Name)
		if a.gatewayExists(gwNS, pr.Name) {
			msg += "; an Istio Gateway of that name exists, but " + r.Kind + "s attach to Gateway API Gateways"
		}
		a.report(r, Warning, CodeGatewayAPIParentNotFound, path, "%s", msg)
		return
	}
	if !gw.OurClass(g.spec.GatewayClassName, classes) {
		return // another controller's Gateway: nothing to say
	}
	var why []string
	for _, l := range g.spec.Listeners {
		if !gw.ParentSelects(pr, r.Meta.Namespace, gwNS, pr.Name, l) {
			continue
		}
		switch {
		case !gw.ListenerAccepts(l, r.Kind):
			mode := ""
			if l.Protocol == "TLS" {
				mode = " in mode " + l.TLSMode()
			}
			why = append(why, fmt.Sprintf("listener %s is %s%s, which carries %s, not %s", l.Name, l.Protocol, mode, orNone(strings.Join(gw.RouteKinds(l), " and ")), r.Kind))
		case !gw.AllowsRoute(l, gwNS, r.Meta.Namespace, r.Kind):
			why = append(why, fmt.Sprintf("listener %s does not allow routes from namespace %s", l.Name, r.Meta.Namespace))
		case len(gw.Intersect(l.Hostname, hostnames)) == 0:
			why = append(why, fmt.Sprintf("listener %s's hostname %s matches none of the route's hostnames", l.Name, gw.Deref(l.Hostname, "")))
		default:
			return // attached
		}
	}
	if len(why) == 0 {
		sel := ""
		if pr.SectionName != nil {
			sel += " named " + *pr.SectionName
		}
		if pr.Port != nil {
			sel += fmt.Sprintf(" on port %d", *pr.Port)
		}
		why = append(why, "the Gateway has no listener"+sel)
	}
	a.report(r, Warning, CodeGatewayAPINotAttached, path, "not attached to Gateway %s/%s: %s", gwNS, pr.Name, strings.Join(why, "; "))
}

func orNone(s string) string {
	if s == "" {
		return "no routes"
	}
	return s
}
