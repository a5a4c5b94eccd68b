package validation

import (
	"fmt"
	"strings"
	"testing"
)

const gwv1 = "gateway.networking.k8s.io/v1"

// route is an HTTPRoute attached to gateway gw with the given rules.
func route(rules string) string {
	return doc(gwv1, "HTTPRoute", "parentRefs: [{name: gw}]\nrules:\n"+rules)
}

var gatewayAPIInvalid = []invalidCase{
	{"class controller", specMarked(doc(gwv1, "GatewayClass", "description: x")), "spec.controllerName", "controllerName is required", false},
	{"gateway class name", specMarked(doc(gwv1, "Gateway", "listeners: [{name: http, port: 80, protocol: HTTP}]")), "spec.gatewayClassName", "gatewayClassName is required", false},
	{"no listeners", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners: [] # <-"), "spec.listeners", "at least one listener", false},
	{"listener name twice", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- {name: a, port: 80, protocol: HTTP}\n- name: a # <-\n  port: 81\n  protocol: HTTP"), "spec.listeners[1].name", "used twice", false},
	{"listener port", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 70000 # <-\n  protocol: HTTP"), "spec.listeners[0].port", "out of range", false},
	{"udp listener", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 53\n  protocol: UDP # <-"), "spec.listeners[0].protocol", "not supported by weft", false},
	{"udp listener of another class", doc(gwv1, "Gateway", "gatewayClassName: nginx\nlisteners:\n- name: a\n  port: 53\n  protocol: UDP # <-"), "spec.listeners[0].protocol", "not supported by weft", true},
	{"tcp listener hostname", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 9000\n  protocol: TCP\n  hostname: a.com # <-"), "spec.listeners[0].hostname", "must not be set on a TCP listener", false},
	{"tcp listener tls", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 9000\n  protocol: TCP\n  tls: {mode: Passthrough} # <-"), "spec.listeners[0].tls", "only allowed on HTTPS and TLS", false},
	{"tls listener without tls", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a # <-\n  port: 8443\n  protocol: TLS"), "spec.listeners[0].tls", "mode Passthrough, or mode Terminate", false},
	{"tls terminate without certificate", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 8443\n  protocol: TLS\n  tls: {mode: Terminate} # <-"), "spec.listeners[0].tls.certificateRefs", "TLS listener in mode Terminate needs", false},
	{"tls mode", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 8443\n  protocol: TLS\n  tls:\n    mode: Reencrypt # <-"), "spec.listeners[0].tls.mode", "unknown tls mode", false},
	{"passthrough certificate unused", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 8443\n  protocol: TLS\n  tls:\n    mode: Passthrough\n    certificateRefs: [{name: c}] # <-"), "spec.listeners[0].tls.certificateRefs", "not used in mode Passthrough", true},
	{"passthrough route kind", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 8443\n  protocol: TLS\n  tls: {mode: Passthrough}\n  allowedRoutes:\n    kinds:\n    - kind: TCPRoute # <-"), "spec.listeners[0].allowedRoutes.kinds[0].kind", "in mode Passthrough does not carry TCPRoute", false},
	{"port protocol clash", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- {name: a, port: 80, protocol: HTTP}\n- name: b\n  port: 80\n  hostname: a.com\n  protocol: HTTPS # <-\n  tls: {certificateRefs: [{name: c}]}"), "spec.listeners[1].protocol", "must share its protocol", false},
	{"same port and hostname", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- {name: a, port: 80, protocol: HTTP, hostname: a.com}\n- name: b\n  port: 80\n  protocol: HTTP\n  hostname: a.com # <-"), "spec.listeners[1].hostname", "already serves port 80", false},
	{"ip hostname", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 80\n  protocol: HTTP\n  hostname: 10.0.0.1 # <-"), "spec.listeners[0].hostname", "not an IP address", false},
	{"https without tls", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a # <-\n  port: 443\n  protocol: HTTPS"), "spec.listeners[0].tls", "needs tls", false},
	{"https passthrough", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 443\n  protocol: HTTPS\n  tls:\n    mode: Passthrough # <-\n    certificateRefs: [{name: c}]"), "spec.listeners[0].tls.mode", "not allowed on an HTTPS listener", false},
	{"cert namespace", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 443\n  protocol: HTTPS\n  tls:\n    certificateRefs:\n    - name: c\n      namespace: Other_NS # <-"), "spec.listeners[0].tls.certificateRefs[0].namespace", "invalid namespace", false},
	{"cert not a secret", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 443\n  protocol: HTTPS\n  tls:\n    certificateRefs:\n    - name: c # <-\n      kind: ConfigMap"), "spec.listeners[0].tls.certificateRefs[0]", "core Secrets only", false},
	{"tls on http", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 80\n  protocol: HTTP\n  tls: {certificateRefs: [{name: c}]} # <-"), "spec.listeners[0].tls", "only allowed on HTTPS and TLS", false},
	{"tlsroute v1 hostnames", specMarked(doc(gwv1, "TLSRoute", "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: a, port: 443}]}]")), "spec.hostnames", "needs at least one hostname", false},
	{"tlsroute service parent", doc("gateway.networking.k8s.io/v1alpha2", "TLSRoute", "parentRefs:\n- name: a # <-\n  group: ''\n  kind: Service\nrules: [{backendRefs: [{name: a, port: 443}]}]"), "spec.parentRefs[0]", "cannot have a Service parent", false},
	{"tlsroute backend port", doc("gateway.networking.k8s.io/v1alpha2", "TLSRoute", "parentRefs: [{name: gw}]\nhostnames: [a.example.com]\nrules:\n- backendRefs:\n  - name: a # <-"), "spec.rules[0].backendRefs[0].port", "port is required", false},
	{"tlsroute hostname", doc("gateway.networking.k8s.io/v1alpha2", "TLSRoute", "parentRefs: [{name: gw}]\nhostnames:\n- 10.0.0.1 # <-\nrules: [{backendRefs: [{name: a, port: 443}]}]"), "spec.hostnames[0]", "not an IP address", false},
	{"tcproute no rules", doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "parentRefs: [{name: gw}]\nrules: [] # <-"), "spec.rules", "at least one rule", false},
	{"tcproute no backends", doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "parentRefs: [{name: gw}]\nrules:\n- backendRefs: [] # <-"), "spec.rules[0].backendRefs", "at least one backendRef", false},
	{"tcproute weight", doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "parentRefs: [{name: gw}]\nrules:\n- backendRefs:\n  - name: a\n    port: 9000\n    weight: 2000000 # <-"), "spec.rules[0].backendRefs[0].weight", "out of range", false},
	{"tcproute rules", doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "parentRefs: [{name: gw}]\nrules: # <-\n- backendRefs: [{name: a, port: 9000}]\n- backendRefs: [{name: b, port: 9000}]"), "spec.rules", "only the first rule", true},
	{"tcproute hostnames", doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "parentRefs: [{name: gw}]\nhostnames: [a.com] # <-\nrules: [{backendRefs: [{name: a, port: 9000}]}]"), "spec.hostnames", "unknown field", false},
	{"namespace selector", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 80\n  protocol: HTTP\n  allowedRoutes:\n    namespaces:\n      from: Selector # <-"), "spec.listeners[0].allowedRoutes.namespaces.from", "Selector is not supported", false},
	{"route kind", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 80\n  protocol: HTTP\n  allowedRoutes:\n    kinds:\n    - kind: UDPRoute # <-"), "spec.listeners[0].allowedRoutes.kinds[0]", "HTTPRoute, GRPCRoute, TLSRoute, TCPRoute are", false},
	{"route kind for protocol", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- name: a\n  port: 80\n  protocol: HTTP\n  allowedRoutes:\n    kinds:\n    - kind: TLSRoute # <-"), "spec.listeners[0].allowedRoutes.kinds[0].kind", "HTTP listener does not carry TLSRoute", false},
	{"grpc method", doc(gwv1, "GRPCRoute", "parentRefs: [{name: gw}]\nrules:\n- matches:\n  - method:\n      service: helloworld.Greeter\n      method: say-hello # <-"), "spec.rules[0].matches[0].method.method", "invalid gRPC method name", false},
	{"grpc empty method match", doc(gwv1, "GRPCRoute", "parentRefs: [{name: gw}]\nrules:\n- matches:\n  - method: {type: Exact} # <-"), "spec.rules[0].matches[0].method", "needs service or method", false},
	{"grpc redirect", doc(gwv1, "GRPCRoute", "parentRefs: [{name: gw}]\nrules:\n- filters:\n  - type: RequestRedirect # <-\n    requestRedirect: {scheme: https}"), "spec.rules[0].filters[0].type", "not a GRPCRoute filter", false},
	{"grpc backend port", doc(gwv1, "GRPCRoute", "parentRefs: [{name: gw}]\nrules:\n- backendRefs:\n  - name: a # <-"), "spec.rules[0].backendRefs[0].port", "port is required", false},

	{"no parents", doc(gwv1, "HTTPRoute", "parentRefs: [] # <-\nrules: [{backendRefs: [{name: a, port: 80}]}]"), "spec.parentRefs", "attaches to nothing", true},
	{"parent kind", doc(gwv1, "HTTPRoute", "parentRefs:\n- name: gw # <-\n  kind: Ingress\nrules: []"), "spec.parentRefs[0]", "not supported", false},
	{"service parent section", doc(gwv1, "HTTPRoute", "parentRefs:\n- name: reviews\n  group: \"\"\n  kind: Service\n  sectionName: http # <-"), "spec.parentRefs[0].sectionName", "use port", false},
	{"route hostname wildcard", doc(gwv1, "HTTPRoute", "parentRefs: [{name: gw}]\nhostnames:\n- a.*.com # <-"), "spec.hostnames[0]", "wildcard must be the whole leftmost label", false},
	{"path type", route("- matches:\n  - path:\n      type: Prefix # <-\n      value: /a"), "spec.rules[0].matches[0].path.type", "unknown path match type", false},
	{"path slash", route("- matches:\n  - path:\n      value: a # <-"), "spec.rules[0].matches[0].path.value", "must start with /", false},
	{"path regex", route("- matches:\n  - path:\n      type: RegularExpression\n      value: '(' # <-"), "spec.rules[0].matches[0].path.value", "invalid RE2 regex", false},
	{"header twice", route("- matches:\n  - headers:\n    - {name: x-a, value: a}\n    - name: X-A # <-\n      value: b"), "spec.rules[0].matches[0].headers[1].name", "matched twice", false},
	{"header match type", route("- matches:\n  - headers:\n    - name: x-a\n      type: Prefix # <-\n      value: b"), "spec.rules[0].matches[0].headers[0].type", "unknown match type", false},
	{"method", route("- matches:\n  - method: FETCH # <-"), "spec.rules[0].matches[0].method", "unknown method", false},
	{"filter type", route("- filters:\n  - type: CORS # <-"), "spec.rules[0].filters[0].type", "unknown filter type", false},
	{"filter field missing", route("- filters:\n  - type: RequestHeaderModifier # <-"), "spec.rules[0].filters[0].requestHeaderModifier", "needs its requestHeaderModifier", false},
	{"filter field mismatch", route("- filters:\n  - type: URLRewrite\n    requestRedirect: {scheme: https} # <-"), "spec.rules[0].filters[0].requestRedirect", "type is \"URLRewrite\"", false},
	{"extension ref", route("- filters:\n  - type: ExtensionRef # <-\n    extensionRef: {group: x.io, kind: F, name: f}"), "spec.rules[0].filters[0].type", "ExtensionRef filters are not supported", false},
	{"header modifier twice", route("- filters:\n  - type: RequestHeaderModifier\n    requestHeaderModifier: {set: [{name: a, value: b}]}\n  - type: RequestHeaderModifier # <-\n    requestHeaderModifier: {set: [{name: c, value: d}]}"), "spec.rules[0].filters[1]", "only one RequestHeaderModifier", false},
	{"header name", route("- filters:\n  - type: ResponseHeaderModifier\n    responseHeaderModifier:\n      remove: ['a b'] # <-"), "spec.rules[0].filters[0].responseHeaderModifier.remove[0]", "invalid header name", false},
	{"redirect with backends", route("- filters:\n  - {type: RequestRedirect, requestRedirect: {scheme: https}}\n  backendRefs: # <-\n  - {name: a, port: 80}"), "spec.rules[0].backendRefs", "must not have backendRefs", false},
	{"redirect code", route("- filters:\n  - type: RequestRedirect\n    requestRedirect:\n      statusCode: 404 # <-"), "spec.rules[0].filters[0].requestRedirect.statusCode", "not a redirect", false},
	{"redirect prefix", route("- filters:\n  - type: RequestRedirect\n    requestRedirect:\n      path:\n        type: ReplacePrefixMatch # <-\n        replacePrefixMatch: /b"), "spec.rules[0].filters[0].requestRedirect.path.type", "not supported by weft", false},
	{"rewrite prefix needs prefix match", route("- matches: [{path: {type: Exact, value: /a}}]\n  filters:\n  - type: URLRewrite\n    urlRewrite:\n      path:\n        type: ReplacePrefixMatch # <-\n        replacePrefixMatch: /b\n  backendRefs: [{name: a, port: 80}]"), "spec.rules[0].filters[0].urlRewrite.path.type", "every match of the rule to be a PathPrefix", false},
	{"mirror percent", route("- filters:\n  - type: RequestMirror\n    requestMirror:\n      backendRef: {name: m, port: 80}\n      percent: 120 # <-"), "spec.rules[0].filters[0].requestMirror.percent", "out of range", false},
	{"backend port", route("- backendRefs:\n  - name: a # <-"), "spec.rules[0].backendRefs[0].port", "port is required", false},
	{"backend kind", route("- backendRefs:\n  - name: a # <-\n    kind: Bucket\n    group: s3.example.com"), "spec.rules[0].backendRefs[0]", "not supported", false},
	{"grant without from", specMarked(doc("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "to: [{group: '', kind: Service}]")), "spec.from", "at least one entry", false},
	{"grant from namespace", doc("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "from:\n- group: gateway.networking.k8s.io\n  kind: HTTPRoute\n  namespace: Not_A_Namespace # <-\nto: [{group: '', kind: Service}]"), "spec.from[0].namespace", "invalid namespace", false},
	{"backend weight", route("- backendRefs:\n  - name: a\n    port: 80\n    weight: -1 # <-"), "spec.rules[0].backendRefs[0].weight", "out of range", false},
	{"backend mirror filter", route("- backendRefs:\n  - name: a\n    port: 80\n    filters:\n    - type: RequestMirror # <-\n      requestMirror: {backendRef: {name: m, port: 80}}"), "spec.rules[0].backendRefs[0].filters[0].type", "only header modifiers", false},
	{"timeout syntax", route("- timeouts:\n    request: 1.5s # <-"), "spec.rules[0].timeouts.request", "Gateway API duration syntax", false},
	{"backend timeout longer", route("- timeouts:\n    request: 1s\n    backendRequest: 2s # <-"), "spec.rules[0].timeouts.backendRequest", "must not be longer", false},
}

func TestGatewayAPIInvalid(t *testing.T) {
	for _, tc := range gatewayAPIInvalid {
		t.Run(tc.name, func(t *testing.T) {
			line := markedLine(t, tc.text)
			rs, errs := ParseFile("case.yaml", []byte(tc.text))
			var found bool
			for _, e := range errs {
				if e.Path != tc.path || !strings.Contains(e.Msg, tc.msg) {
					continue
				}
				found = true
				if want := fmt.Sprintf("case.yaml:%d: ", line); !strings.HasPrefix(e.Error(), want) {
					t.Errorf("got %q, want prefix %q", e.Error(), want)
				}
				if e.Warning != tc.warning {
					t.Errorf("warning = %v, want %v", e.Warning, tc.warning)
				}
			}
			if !found {
				t.Fatalf("no problem at %s containing %q; got:\n%v", tc.path, tc.msg, errs)
			}
			if !tc.warning && rs != nil {
				t.Errorf("got %d resources despite an error", len(rs))
			}
		})
	}
}

func TestGatewayAPIValid(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"https gateway", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n- name: https\n  port: 443\n  hostname: '*.example.com'\n  protocol: HTTPS\n  tls: {mode: Terminate, certificateRefs: [{name: cert, kind: Secret, group: ''}]}")},
		{"tls and tcp gateway", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- {name: tls, port: 8443, protocol: TLS, hostname: '*.example.com', tls: {mode: Passthrough}, allowedRoutes: {kinds: [{kind: TLSRoute}]}}\n- {name: tcp, port: 9000, protocol: TCP}\n- {name: db, port: 5432, protocol: TLS, tls: {certificateRefs: [{name: db-cert}]}, allowedRoutes: {kinds: [{kind: TCPRoute}]}}")},
		{"cert in other namespace", doc(gwv1, "Gateway", "gatewayClassName: istio\nlisteners:\n- {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: c, namespace: certs}]}}")},
		{"tlsroute v1", doc(gwv1, "TLSRoute", "parentRefs: [{name: gw, sectionName: tls}]\nhostnames: [a.example.com]\nrules:\n- backendRefs: [{name: a, port: 8443, weight: 3}, {name: b, port: 8443, weight: 1}]")},
		{"tlsroute v1alpha3", doc("gateway.networking.k8s.io/v1alpha3", "TLSRoute", "parentRefs: [{name: gw}]\nhostnames: [a.example.com]\nrules:\n- backendRefs: [{name: a, port: 8443}]")},
		{"tcproute", doc("gateway.networking.k8s.io/v1alpha2", "TCPRoute", "parentRefs: [{name: gw, port: 9000}]\nrules:\n- backendRefs: [{name: echo, port: 9000, weight: 80}, {name: echo-v2, port: 9000, weight: 20}]")},
		{"gamma route", doc(gwv1, "HTTPRoute", "parentRefs: [{group: '', kind: Service, name: reviews, port: 9080}]\nrules:\n- backendRefs: [{name: reviews-v2, port: 9080}]")},
		{"full route", doc(gwv1, "HTTPRoute", "parentRefs: [{name: gw, sectionName: http}]\nhostnames: ['*.example.com']\nrules:\n- matches:\n  - path: {type: PathPrefix, value: /api}\n    headers: [{name: x-a, value: a}, {type: RegularExpression, name: x-b, value: 'v[0-9]'}]\n    queryParams: [{name: q, value: '1'}]\n    method: POST\n  filters:\n  - {type: URLRewrite, urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}\n  - {type: RequestMirror, requestMirror: {backendRef: {name: shadow, port: 80}, fraction: {numerator: 1, denominator: 3}}}\n  - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-served-by, value: weft}]}}\n  backendRefs:\n  - {name: api, port: 80, weight: 3, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-v, value: '1'}]}}]}\n  - {name: api-v2, port: 80, weight: 1}\n  timeouts: {request: 10s, backendRequest: 500ms}\n- filters: [{type: RequestRedirect, requestRedirect: {scheme: https, port: 443, statusCode: 301}}]")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, errs := ParseFile("ok.yaml", []byte(tc.text))
			if len(errs) > 0 || len(rs) != 1 {
				t.Fatalf("got %d resources, problems:\n%v", len(rs), errs)
			}
		})
	}
}
