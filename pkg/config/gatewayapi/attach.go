package gatewayapi

import (
	"slices"
	"strings"
)

// Controller names weft implements. Gateways of class "istio" or "weft"
// are weft's without a GatewayClass object.
const (
	ControllerIstio = "istio.io/gateway-controller"
	ControllerWeft  = "weftmesh.io/gateway-controller"
)

// OurClass reports whether a Gateway of class name is weft's, given the
// GatewayClass objects known (name → spec).
func OurClass(name string, classes map[string]GatewayClassSpec) bool {
	if name == "istio" || name == "weft" {
		return true
	}
	c, ok := classes[name]
	return ok && (c.ControllerName == ControllerIstio || c.ControllerName == ControllerWeft)
}

// ParentSelects reports whether parentRef pr of a route in namespace
// routeNS names listener l of Gateway gwNS/gwName (name, namespace,
// sectionName and port).
func ParentSelects(pr ParentReference, routeNS, gwNS, gwName string, l Listener) bool {
	return pr.IsGateway() && pr.Name == gwName && deref(pr.Namespace, routeNS) == gwNS &&
		(pr.SectionName == nil || *pr.SectionName == l.Name) &&
		(pr.Port == nil || *pr.Port == l.Port)
}

// Listener TLS modes.
const (
	TLSModeTerminate   = "Terminate"
	TLSModePassthrough = "Passthrough"
)

// TLSMode returns a listener's TLS mode (Terminate when unset).
func (l Listener) TLSMode() string {
	if l.TLS == nil {
		return TLSModeTerminate
	}
	return deref(l.TLS.Mode, TLSModeTerminate)
}

// RouteKinds returns the route kinds a listener of l's protocol (and TLS
// mode) can carry in weft: HTTPRoute and GRPCRoute on HTTP and HTTPS,
// TLSRoute on TLS Passthrough, TCPRoute and TLSRoute (by SNI after
// termination, the Gateway API's TLSRouteModeTerminate) on TLS Terminate,
// TCPRoute on TCP. UDP and unknown protocols carry none.
func RouteKinds(l Listener) []string {
	switch l.Protocol {
	case "HTTP", "HTTPS":
		return []string{"HTTPRoute", "GRPCRoute"}
	case "TLS":
		if l.TLSMode() == TLSModePassthrough {
			return []string{"TLSRoute"}
		}
		return []string{"TCPRoute", "TLSRoute"}
	case "TCP":
		return []string{"TCPRoute"}
	}
	return nil
}

// ListenerAccepts reports whether listener l can carry routes of kind.
func ListenerAccepts(l Listener, kind string) bool { return slices.Contains(RouteKinds(l), kind) }

// AllowsRoute applies a listener's allowedRoutes to a route of kind
// (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) from namespace routeNS for a Gateway in gwNS
// (Same and All; Selector admits nothing, as weft reads no namespace
// labels).
func AllowsRoute(l Listener, gwNS, routeNS, kind string) bool {
	ar := l.AllowedRoutes
	if ar != nil && len(ar.Kinds) > 0 {
		ok := false
		for _, k := range ar.Kinds {
			ok = ok || (deref(k.Group, Group) == Group && k.Kind == kind)
		}
		if !ok {
			return false
		}
	}
	from := "Same"
	if ar != nil && ar.Namespaces != nil {
		from = deref(ar.Namespaces.From, "Same")
	}
	switch from {
	case "All":
		return true
	case "Same":
		return routeNS == gwNS
	}
	return false
}

// Intersect applies the Gateway API's hostname rules: a route's hostnames
// narrowed to what the listener accepts ("*" when neither names any; none
// when they do not overlap).
func Intersect(listener *string, routeHosts []string) []string {
	if listener == nil || *listener == "" {
		if len(routeHosts) == 0 {
			return []string{"*"}
		}
		return slices.Clone(routeHosts)
	}
	l := *listener
	if len(routeHosts) == 0 {
		return []string{l}
	}
	var out []string
	for _, h := range routeHosts {
		switch {
		case h == l:
			out = append(out, h)
		case strings.HasPrefix(l, "*.") && strings.HasSuffix(h, l[1:]):
			out = append(out, h) // route host within the listener's wildcard
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(l, h[1:]):
			out = append(out, l) // listener host within the route's wildcard
		}
	}
	return out
}
