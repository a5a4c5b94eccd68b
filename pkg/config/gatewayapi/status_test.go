package gatewayapi

import (
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
	if len(g.Listeners) != 3 || g.Listeners[0].AttachedRoutes != 1 || g.Listeners[1].AttachedRoutes != 0 || g.Listeners[2].Conditions[0].Reason != "UnsupportedProtocol" {
		t.Errorf("gateway status %+v", g)
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
