package gatewayapi

import "fmt"

// Condition is a metav1.Condition without lastTransitionTime (the writer
// keeps or stamps that).
type Condition struct {
	Type, Status, Reason, Message string
}

// RouteParentStatus is weft's entry in an HTTPRoute's status.parents.
type RouteParentStatus struct {
	// ParentRef echoes the spec's parentRef, group and kind filled in.
	ParentRef ParentReference
	// ControllerName is the parent Gateway's class's controller
	// (ControllerIstio for Service parents).
	ControllerName string
	Conditions     []Condition
}

// ListenerStatus is one entry of a Gateway's status.listeners.
type ListenerStatus struct {
	Name string
	// SupportedKinds are the route kinds the listener carries
	// (RouteKinds).
	SupportedKinds []string
	AttachedRoutes int32
	Conditions     []Condition
}

// GatewayStatus is what weft reports on a Gateway it serves.
type GatewayStatus struct {
	Conditions []Condition
	Listeners  []ListenerStatus
}

// NamedGateway is a Gateway with its namespace and name.
type NamedGateway struct {
	Namespace, Name string
	Spec            GatewaySpec
}

// NamedRoute is an HTTPRoute (or a GRPCRoute, TLSRoute or TCPRoute as
// the HTTPRoute its HTTP method returns, with Kind set) with its
// namespace and name.
type NamedRoute struct {
	Namespace, Name string
	// Kind is "HTTPRoute" when empty.
	Kind string
	Spec HTTPRouteSpec
}

// KindOr returns the route's kind, HTTPRoute by default.
func (r NamedRoute) KindOr() string {
	if r.Kind == "" {
		return "HTTPRoute"
	}
	return r.Kind
}

// Statuses computes the status weft reports (routes keyed "KIND/ns/name") for the Gateways it serves
// (class istio/weft or a GatewayClass naming weft's controller) and for the
// parentRefs of routes that name such a Gateway or a Service (GAMMA).
// Parents served by other controllers get no entry. ResolvedRefs checks
// backendRef kinds and ReferenceGrants; whether the Services exist is not
// known here.
func Statuses(classes map[string]GatewayClassSpec, gws []NamedGateway, routes []NamedRoute, grants []NamedGrant) (map[string]GatewayStatus, map[string][]RouteParentStatus) {
	gwOut := map[string]GatewayStatus{}
	byName := map[string]NamedGateway{}
	for _, g := range gws {
		if OurClass(g.Spec.GatewayClassName, classes) {
			byName[g.Namespace+"/"+g.Name] = g
		}
	}
	attached := map[string][]int32{} // gateway → attached routes per listener
	rtOut := map[string][]RouteParentStatus{}
	for _, r := range routes {
		resolved := Condition{Type: "ResolvedRefs", Status: "True", Reason: "ResolvedRefs", Message: "backendRefs are Services"}
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				switch ns := deref(b.Namespace, r.Namespace); {
				case !b.IsService():
					resolved = Condition{Type: "ResolvedRefs", Status: "False", Reason: "InvalidKind",
						Message: fmt.Sprintf("backendRef %s is a %s; weft routes to Services", b.Name, deref(b.Kind, "Service"))}
				case !Granted(grants, Group, r.KindOr(), r.Namespace, "", "Service", b.Name, ns):
					resolved = Condition{Type: "ResolvedRefs", Status: "False", Reason: "RefNotPermitted",
						Message: fmt.Sprintf("backendRef %s/%s: no ReferenceGrant in namespace %s allows it", ns, b.Name, ns)}
				}
			}
		}
		var parents []RouteParentStatus
		for _, pr := range r.Spec.ParentRefs {
			echo := pr
			if echo.Group == nil {
				g := Group
				echo.Group = &g
			}
			if echo.Kind == nil {
				k := "Gateway"
				echo.Kind = &k
			}
			switch {
			case pr.IsService() && (r.KindOr() == "TLSRoute" || r.KindOr() == "TCPRoute"):
				continue // GAMMA is for HTTP routes; validation refuses these
			case pr.IsService():
				parents = append(parents, RouteParentStatus{ParentRef: echo, ControllerName: ControllerIstio, Conditions: []Condition{
					{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "routes calls to the Service from sidecars"}, resolved}})
			case pr.IsGateway():
				key := deref(pr.Namespace, r.Namespace) + "/" + pr.Name
				g, ok := byName[key]
				if !ok {
					continue // not weft's (or missing: no controller to speak for it)
				}
				counts := attached[key]
				if counts == nil {
					counts = make([]int32, len(g.Spec.Listeners))
					attached[key] = counts
				}
				acc := Condition{Type: "Accepted", Status: "False", Reason: "NoMatchingParent", Message: "no listener matches the parentRef's sectionName and port"}
				for i, l := range g.Spec.Listeners {
					if !ParentSelects(pr, r.Namespace, g.Namespace, g.Name, l) {
						continue
					}
					switch {
					case !ListenerAccepts(l, r.KindOr()):
						if acc.Status != "True" {
							acc = Condition{Type: "Accepted", Status: "False", Reason: "NotAllowedByListeners", Message: "listener " + l.Name + " is " + l.Protocol + listenerMode(l) + ", which does not carry " + r.KindOr()}
						}
					case !AllowsRoute(l, g.Namespace, r.Namespace, r.KindOr()):
						if acc.Status != "True" {
							acc = Condition{Type: "Accepted", Status: "False", Reason: "NotAllowedByListeners", Message: "listener " + l.Name + " does not allow routes from namespace " + r.Namespace}
						}
					case len(Intersect(l.Hostname, r.Spec.Hostnames)) == 0:
						if acc.Status != "True" {
							acc = Condition{Type: "Accepted", Status: "False", Reason: "NoMatchingListenerHostname", Message: "no hostname of the route matches listener " + l.Name}
						}
					default:
						acc = Condition{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "attached"}
						counts[i]++
					}
				}
				parents = append(parents, RouteParentStatus{ParentRef: echo, ControllerName: controllerOf(g.Spec.GatewayClassName, classes), Conditions: []Condition{acc, resolved}})
			}
		}
		if len(parents) > 0 {
			rtOut[r.KindOr()+"/"+r.Namespace+"/"+r.Name] = parents
		}
	}
	for key, g := range byName {
		st := GatewayStatus{Conditions: []Condition{{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "served by weft proxies labelled gateway.networking.k8s.io/gateway-name=" + g.Name}}}
		counts := attached[key]
		for i, l := range g.Spec.Listeners {
			ls := ListenerStatus{Name: l.Name, SupportedKinds: RouteKinds(l)}
			if counts != nil {
				ls.AttachedRoutes = counts[i]
			}
			if len(RouteKinds(l)) > 0 {
				ls.Conditions = []Condition{{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "translated"}}
			} else {
				ls.Conditions = []Condition{{Type: "Accepted", Status: "False", Reason: "UnsupportedProtocol", Message: "weft translates HTTP, HTTPS, TLS and TCP listeners"}}
			}
			ls.Conditions = append(ls.Conditions, listenerRefs(g, l, grants))
			st.Listeners = append(st.Listeners, ls)
		}
		gwOut[key] = st
	}
	return gwOut, rtOut
}

// listenerRefs is a listener's ResolvedRefs condition: a certificateRef
// to a Secret in another namespace needs a ReferenceGrant there
// (RefNotPermitted: weft does not serve the listener); other kinds than
// Secret are InvalidCertificateRef.
func listenerRefs(g NamedGateway, l Listener, grants []NamedGrant) Condition {
	if l.TLS != nil && l.TLSMode() == TLSModeTerminate {
		for _, c := range l.TLS.CertificateRefs {
			ns := deref(c.Namespace, g.Namespace)
			switch {
			case deref(c.Group, "") != "" || deref(c.Kind, "Secret") != "Secret":
				return Condition{Type: "ResolvedRefs", Status: "False", Reason: "InvalidCertificateRef", Message: fmt.Sprintf("certificateRef %s is a %s; weft reads Secrets", c.Name, deref(c.Kind, "Secret"))}
			case !SecretGranted(grants, g.Namespace, c.Name, ns):
				return Condition{Type: "ResolvedRefs", Status: "False", Reason: "RefNotPermitted", Message: fmt.Sprintf("certificateRef %s/%s: no ReferenceGrant in namespace %s allows Gateways of %s to use it", ns, c.Name, ns, g.Namespace)}
			}
		}
	}
	return Condition{Type: "ResolvedRefs", Status: "True", Reason: "ResolvedRefs", Message: "references resolved"}
}

// listenerMode names a TLS listener's mode in messages.
func listenerMode(l Listener) string {
	if l.Protocol == "TLS" {
		return " (mode " + l.TLSMode() + ")"
	}
	return ""
}

// controllerOf is the controller name of a class weft serves.
func controllerOf(class string, classes map[string]GatewayClassSpec) string {
	switch class {
	case "istio":
		return ControllerIstio
	case "weft":
		return ControllerWeft
	}
	return classes[class].ControllerName
}
