package analyze

import (
	"strings"
	"testing"
)

func TestGatewayAPI(t *testing.T) {
	rs := decode(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: a.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: nginx, namespace: infra}
spec:
  gatewayClassName: nginx
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw, namespace: apps}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, protocol: HTTP, name: http}, hosts: ['*']}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: infra}
spec:
  parentRefs: [{name: gw}, {name: nginx}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong, namespace: apps}
spec:
  parentRefs:
  - {name: gw, namespace: infra}
  - {name: gw, namespace: infra, sectionName: https}
  - {name: istio-gw}
  - {group: "", kind: Service, name: nope}
  hostnames: [b.example.com]
  rules: [{backendRefs: [{name: missing, port: 80}]}]
`)
	msgs := Analyze(rs, WithKnownHosts("web.infra.svc.cluster.local"))
	var got []string
	for _, m := range msgs {
		got = append(got, m.String())
	}
	want := []string{
		`Info [WEFT0114] Gateway.gateway.networking.k8s.io infra/nginx: spec.gatewayClassName: class "nginx" is not served by weft`,
		`Warning [WEFT0113] HTTPRoute apps/wrong: spec.parentRefs[0]: not attached to Gateway infra/gw: listener http does not allow routes from namespace apps`,
		`Warning [WEFT0113] HTTPRoute apps/wrong: spec.parentRefs[1]: not attached to Gateway infra/gw: the Gateway has no listener named https`,
		`Warning [WEFT0112] HTTPRoute apps/wrong: spec.parentRefs[2]: Gateway apps/istio-gw (gateway.networking.k8s.io) not found: the route is not attached to it; an Istio Gateway of that name exists`,
		`Warning [WEFT0101] HTTPRoute apps/wrong: spec.parentRefs[3].name: host "nope.apps.svc.cluster.local" (nope.apps.svc.cluster.local) matches no`,
		`Warning [WEFT0101] HTTPRoute apps/wrong: spec.rules[0].backendRefs[0].name: host "missing.apps.svc.cluster.local" (missing.apps.svc.cluster.local) matches no`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("message %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
	// Allowed from the namespace but the hostnames do not overlap.
	rs = decode(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: weft
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: a.example.com}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  hostnames: [b.example.com]
`)
	msgs = Analyze(rs)
	if len(msgs) != 1 || !strings.Contains(msgs[0].String(), "hostname a.example.com matches none of the route's hostnames") {
		t.Errorf("hostname mismatch: %v", msgs)
	}

	// A backend in another namespace needs a ReferenceGrant there.
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: db, namespace: data, port: 5432}]}]
`
	known := WithKnownHosts("web.apps.svc.cluster.local", "db.data.svc.cluster.local")
	msgs = Analyze(decode(t, route), known)
	if len(msgs) != 1 || !strings.Contains(msgs[0].String(), "Warning [WEFT0115] HTTPRoute apps/r: spec.rules[0].backendRefs[0].namespace: no ReferenceGrant in namespace data") {
		t.Errorf("cross-namespace backend without a grant: %v", msgs)
	}
	msgs = Analyze(decode(t, route+`---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service, name: db}]
`), known)
	if len(msgs) != 0 {
		t.Errorf("with a ReferenceGrant: %v", msgs)
	}
}

func TestGatewayAPITLSAndTCPRoutes(t *testing.T) {
	rs := decode(t, `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: edge}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tls, port: 8443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: db, port: 5432, protocol: TLS, tls: {certificateRefs: [{name: db-cert, namespace: certs}]}}
  - {name: web, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: web-cert, namespace: certs}]}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: edge, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: edge}]
  to: [{group: "", kind: Secret, name: web-cert}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: alpha, namespace: edge}
spec:
  parentRefs: [{name: edge}]
  hostnames: [alpha.example.com]
  rules: [{backendRefs: [{name: alpha, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: elsewhere, namespace: edge}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [alpha.example.org]
  rules: [{backendRefs: [{name: alpha, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo, namespace: edge}
spec:
  parentRefs: [{name: edge, sectionName: tcp}, {name: edge, sectionName: tls}]
  rules: [{backendRefs: [{name: echo, port: 9000}, {name: missing, port: 9000}]}]
`)
	msgs := Analyze(rs, WithKnownHosts("alpha.edge.svc.cluster.local", "echo.edge.svc.cluster.local"))
	var got []string
	for _, m := range msgs {
		got = append(got, m.String())
	}
	want := []string{
		`in.yaml:9: Warning [WEFT0115] Gateway.gateway.networking.k8s.io edge/edge: spec.listeners[2].tls.certificateRefs[0].namespace: no ReferenceGrant in namespace certs lets Gateways from edge use Secret db-cert: listener db is not served`,
		`in.yaml:31: Warning [WEFT0113] TLSRoute edge/elsewhere: spec.parentRefs[0]: not attached to Gateway edge/edge: listener tls's hostname *.example.com matches none of the route's hostnames`,
		`in.yaml:39: Warning [WEFT0113] TCPRoute edge/echo: spec.parentRefs[1]: not attached to Gateway edge/edge: listener tls is TLS in mode Passthrough, which carries TLSRoute, not TCPRoute`,
		`in.yaml:40: Warning [WEFT0101] TCPRoute edge/echo: spec.rules[0].backendRefs[1].name: host "missing.edge.svc.cluster.local"`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d findings, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, w)
		}
		if !found {
			t.Errorf("missing %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}
