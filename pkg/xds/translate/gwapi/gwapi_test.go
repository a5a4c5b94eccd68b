package gwapi

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	gw "github.com/weftmesh/weft/pkg/config/gatewayapi"
)

func TestIntersect(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		listener *string
		route    []string
		want     []string
	}{
		{nil, nil, []string{"*"}},
		{nil, []string{"a.com"}, []string{"a.com"}},
		{s("a.com"), nil, []string{"a.com"}},
		{s("a.com"), []string{"a.com", "b.com"}, []string{"a.com"}},
		{s("*.example.com"), []string{"foo.example.com", "foo.bar.example.com", "example.com", "foo.other.com"}, []string{"foo.example.com", "foo.bar.example.com"}},
		{s("foo.example.com"), []string{"*.example.com"}, []string{"foo.example.com"}},
		{s("*.example.com"), []string{"*.example.com"}, []string{"*.example.com"}},
		{s("*.example.com"), []string{"*.a.example.com"}, []string{"*.a.example.com"}},
		{s("a.com"), []string{"b.com"}, nil},
	} {
		if got := gw.Intersect(tc.listener, tc.route); !cmp.Equal(got, tc.want) {
			t.Errorf("intersect(%v, %v) = %v, want %v", tc.listener, tc.route, got, tc.want)
		}
	}
}

func decode(t *testing.T, y string) []*config.Resource {
	t.Helper()
	rs, err := config.Decode("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestConvert(t *testing.T) {
	rs := decode(t, `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: custom}
spec: {controllerName: weftmesh.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: custom
  listeners:
  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}
  - {name: b, port: 81, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: foreign, namespace: infra}
spec:
  gatewayClassName: nginx
  listeners: [{name: a, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: same-ns, namespace: infra}
spec:
  parentRefs: [{name: gw, port: 81}, {name: foreign}]
  rules: [{backendRefs: [{name: web, port: 8080, weight: 0}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-ns, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: web, namespace: web}]
  rules: [{backendRefs: [{name: web-v2, namespace: web, port: 8080}]}]
`)
	out := Convert(rs, "")
	var got []string
	for _, c := range out {
		line := c.Kind + " " + c.Meta.Namespace + "/" + c.Meta.Name
		switch s := c.Spec.(type) {
		case *networking.Gateway:
			line += " " + s.GetSelector()[GatewayNameLabel] + " " + strings.Join(s.GetServers()[0].GetHosts(), ",")
		case *networking.VirtualService:
			line += " " + strings.Join(s.GetHosts(), ",") + " gw=" + strings.Join(s.GetGateways(), ",") + " export=" + strings.Join(s.GetExportTo(), ",")
			if r := s.GetHttp()[0]; r.GetDirectResponse() != nil {
				line += " status=" + string(rune('0'+r.GetDirectResponse().GetStatus()/100))
			}
		}
		if !IsGenerated(c) {
			t.Errorf("%s has no %s annotation", line, SourceAnnotation)
		}
		got = append(got, line)
	}
	want := []string{
		"Gateway infra/gw-gwapi-a gw */a.example.com",
		"Gateway infra/gw-gwapi-b gw */*",
		// same-ns: port 81 only (listener b); its only backend has weight 0: 500.
		"VirtualService infra/gw-gwapi-b-0 * gw=infra/gw-gwapi-b export= status=5",
		// other-ns is refused (from: Same); consumer is exported to its
		// namespace only, and its backend in namespace web has no
		// ReferenceGrant: 500.
		"VirtualService apps/gwapi-mesh-web-web web.web.svc.cluster.local gw= export=. status=5",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Convert (-want +got):\n%s", d)
	}

	// GAMMA: a consumer route sorts before the (older) producer route.
	rs = decode(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: web, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web-v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: apps, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: web, namespace: web}]
  rules: [{backendRefs: [{name: web-v2, namespace: web, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
`)
	out = Convert(rs, "")
	if len(out) != 2 {
		t.Fatalf("got %d resources", len(out))
	}
	prod, cons := out[0], out[1]
	if prod.Meta.Namespace != "web" {
		prod, cons = cons, prod
	}
	if d := cons.Spec.(*networking.VirtualService).GetHttp()[0].GetRoute(); len(d) != 1 || d[0].GetDestination().GetHost() != "web-v2.web.svc.cluster.local" {
		t.Errorf("consumer route with a ReferenceGrant routes to %v", d)
	}
	if !cons.Meta.CreationTimestamp.Before(prod.Meta.CreationTimestamp) {
		t.Errorf("consumer VirtualService created %v, producer %v: the consumer must sort first", cons.Meta.CreationTimestamp, prod.Meta.CreationTimestamp)
	}
}
