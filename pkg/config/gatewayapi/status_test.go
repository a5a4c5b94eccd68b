package gatewayapi

import (
	"fmt"
	"testing"
)

func TestStatuses(t *testing.T) {
	s := func(v string) *string { return &v }
	all := &AllowedRoutes{Namespaces: &RouteNamespaces{From: s("All")}}
	gws := []NamedGateway{
		{Namespace: "infra", Name: "gw", Spec: GatewaySpec{GatewayClassName: "weft", Listeners: []Listener{
			{Name: "http", Port: 80, Protocol: "HTTP", Hostname: s("a.example.com"), AllowedRoutes: all},
			{Name: "same", Port: 81, Protocol: "HTTP"},
			{Name: "tcp", Port: 90, Protocol: "TCP"},
			{Name: "udp", Port: 53, Protocol: "UDP"},
			{Name: "tls", Port: 443, Protocol: "TLS", Hostname: s("*.example.com"), TLS: &TLSConfig{Mode: s("Passthrough")}},
			{Name: "tls-term", Port: 5432, Protocol: "TLS", TLS: &TLSConfig{CertificateRefs: []SecretObjectReference{{Name: "c"}}}},
		}}},
		{Namespace: "infra", Name: "nginx", Spec: GatewaySpec{GatewayClassName: "nginx", Listeners: []Listener{{Name: "http", Port: 80, Protocol: "HTTP"}}}},
	}
	routes := []NamedRoute{
		{Namespace: "apps", Name: "ok", Spec: HTTPRouteSpec{ParentRefs: []ParentReference{{Name: "gw", Namespace: s("infra")}, {Name: "nginx", Namespace: s("infra")}}}},
		{Namespace: "apps", Name: "same", Spec: HTTPRouteSpec{ParentRefs: []ParentReference{{Name: "gw", Namespace: s("infra"), SectionName: s("same")}}}},
		{Namespace: "apps", Name: "host", Spec: HTTPRouteSpec{Hostnames: []string{"b.example.com"}, ParentRefs: []ParentReference{{Name: "gw", Namespace: s("infra"), SectionName: s("http")}}}},
		{Namespace: "apps", Name: "section", Spec: HTTPRouteSpec{ParentRefs: []ParentReference{{Name: "gw", Namespace: s("infra"), SectionName: s("nope")}}}},
		{Namespace: "apps", Name: "gamma", Spec: HTTPRouteSpec{ParentRefs: []ParentReference{{Group: s(""), Kind: s("Service"), Name: "web"}},
			Rules: []HTTPRouteRule{{BackendRefs: []HTTPBackendRef{{BackendObjectReference: BackendObjectReference{Name: "b", Group: s("x.io"), Kind: s("Bucket")}}}}}}},
	}
	gwSt, rtSt := Statuses(nil, gws, routes, nil)
	if _, ok := gwSt["infra/nginx"]; ok {
		t.Error("status for another controller's Gateway")
	}
	g := gwSt["infra/gw"]
	if len(g.Listeners) != 6 || g.Listeners[0].AttachedRoutes != 1 || g.Listeners[1].AttachedRoutes != 0 || g.Listeners[3].Conditions[0].Reason != "UnsupportedProtocol" {
		t.Errorf("gateway status %+v", g)
	}
	// TLSRoutes attach to the TLS listeners (Passthrough and Terminate),
	// TCPRoutes to the TCP and the TLS Terminate listeners; the other
	// kinds are refused.
	l4 := []NamedRoute{
		{Namespace: "infra", Name: "sni", Kind: "TLSRoute", Spec: TLSRouteSpec{Hostnames: []string{"a.example.com"}, ParentRefs: []ParentReference{{Name: "gw"}}}.HTTP()},
		{Namespace: "infra", Name: "sni-other", Kind: "TLSRoute", Spec: TLSRouteSpec{Hostnames: []string{"a.example.org"}, ParentRefs: []ParentReference{{Name: "gw", SectionName: s("tls")}}}.HTTP()},
		{Namespace: "infra", Name: "raw", Kind: "TCPRoute", Spec: TCPRouteSpec{ParentRefs: []ParentReference{{Name: "gw"}}}.HTTP()},
		{Namespace: "infra", Name: "raw-on-tls", Kind: "TCPRoute", Spec: TCPRouteSpec{ParentRefs: []ParentReference{{Name: "gw", SectionName: s("tls")}}}.HTTP()},
		{Namespace: "infra", Name: "http-on-tcp", Spec: HTTPRouteSpec{ParentRefs: []ParentReference{{Name: "gw", SectionName: s("tcp")}}}},
	}
	gwSt4, rtSt4 := Statuses(nil, gws, l4, nil)
	var attached []int32
	for _, l := range gwSt4["infra/gw"].Listeners {
		attached = append(attached, l.AttachedRoutes)
		if want := RouteKinds(gws[0].Spec.Listeners[len(attached)-1]); len(l.SupportedKinds) != len(want) {
			t.Errorf("listener %s supported kinds %v, want %v", l.Name, l.SupportedKinds, want)
		}
	}
	if want := []int32{0, 0, 1, 0, 1, 2}; fmt.Sprint(attached) != fmt.Sprint(want) {
		t.Errorf("attachedRoutes %v, want %v (http, same, tcp, udp, tls, tls-term)", attached, want)
	}
	if c := gwSt4["infra/gw"].Listeners[4].Conditions[0]; c.Status != "True" {
		t.Errorf("TLS listener condition %+v", c)
	}
	for key, want := range map[string]string{"TLSRoute/infra/sni": "Accepted", "TLSRoute/infra/sni-other": "NoMatchingListenerHostname",
		"TCPRoute/infra/raw": "Accepted", "TCPRoute/infra/raw-on-tls": "NotAllowedByListeners", "HTTPRoute/infra/http-on-tcp": "NotAllowedByListeners"} {
		if ps := rtSt4[key]; len(ps) != 1 || ps[0].Conditions[0].Reason != want {
			t.Errorf("%s: %+v, want reason %s", key, ps, want)
		}
	}
	for name, want := range map[string]string{"ok": "Accepted", "same": "NotAllowedByListeners", "host": "NoMatchingListenerHostname", "section": "NoMatchingParent", "gamma": "Accepted"} {
		ps := rtSt["HTTPRoute/apps/"+name]
		if len(ps) != 1 || ps[0].Conditions[0].Reason != want {
			t.Errorf("route %s: %+v, want one parent with reason %s", name, ps, want)
			continue
		}
		if *ps[0].ParentRef.Group == "" && ps[0].ControllerName != ControllerIstio || *ps[0].ParentRef.Kind == "Gateway" && ps[0].ControllerName != ControllerWeft {
			t.Errorf("route %s: controller %s for %+v", name, ps[0].ControllerName, ps[0].ParentRef)
		}
	}
	if c := rtSt["HTTPRoute/apps/gamma"][0].Conditions[1]; c.Reason != "InvalidKind" || c.Status != "False" {
		t.Errorf("gamma ResolvedRefs %+v", c)
	}
	// certificateRefs to another namespace need a ReferenceGrant there.
	certGW := []NamedGateway{{Namespace: "edge", Name: "gw", Spec: GatewaySpec{GatewayClassName: "istio", Listeners: []Listener{
		{Name: "granted", Port: 443, Protocol: "HTTPS", TLS: &TLSConfig{CertificateRefs: []SecretObjectReference{{Name: "shared", Namespace: s("certs")}}}},
		{Name: "denied", Port: 444, Protocol: "HTTPS", TLS: &TLSConfig{CertificateRefs: []SecretObjectReference{{Name: "private", Namespace: s("certs")}}}},
		{Name: "local", Port: 445, Protocol: "TLS", TLS: &TLSConfig{CertificateRefs: []SecretObjectReference{{Name: "own"}}}},
	}}}}
	certGrant := []NamedGrant{{Namespace: "certs", Spec: ReferenceGrantSpec{From: []ReferenceGrantFrom{{Group: Group, Kind: "Gateway", Namespace: "edge"}}, To: []ReferenceGrantTo{{Kind: "Secret", Name: s("shared")}}}}}
	cgSt, _ := Statuses(nil, certGW, nil, certGrant)
	for i, want := range []string{"ResolvedRefs", "RefNotPermitted", "ResolvedRefs"} {
		if c := cgSt["edge/gw"].Listeners[i].Conditions[1]; c.Type != "ResolvedRefs" || c.Reason != want {
			t.Errorf("listener %d: %+v, want ResolvedRefs %s", i, c, want)
		}
	}
	cross := []NamedRoute{{Namespace: "apps", Name: "cross", Spec: HTTPRouteSpec{ParentRefs: []ParentReference{{Group: s(""), Kind: s("Service"), Name: "web"}},
		Rules: []HTTPRouteRule{{BackendRefs: []HTTPBackendRef{{BackendObjectReference: BackendObjectReference{Name: "b", Namespace: s("db")}}}}}}}}
	if _, st := Statuses(nil, nil, cross, nil); st["HTTPRoute/apps/cross"][0].Conditions[1].Reason != "RefNotPermitted" {
		t.Errorf("cross-namespace backend without a grant: %+v", st["HTTPRoute/apps/cross"])
	}
	grant := []NamedGrant{{Namespace: "db", Spec: ReferenceGrantSpec{From: []ReferenceGrantFrom{{Group: Group, Kind: "HTTPRoute", Namespace: "apps"}}, To: []ReferenceGrantTo{{Kind: "Service", Name: s("b")}}}}}
	if _, st := Statuses(nil, nil, cross, grant); st["HTTPRoute/apps/cross"][0].Conditions[1].Reason != "ResolvedRefs" {
		t.Errorf("cross-namespace backend with a grant: %+v", st["HTTPRoute/apps/cross"])
	}
}
