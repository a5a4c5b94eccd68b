package validation

import "testing"

// validCases are legal corners the rules must not reject.
var validCases = []struct{ name, text string }{
	{"star host on gateway", doc(netv1, "VirtualService", "hosts: ['*']\ngateways: [gw]\nhttp: [{route: [{destination: {host: a}}]}]")},
	{"suffix wildcard host", doc(netv1, "VirtualService", "hosts: ['*.example.com']\ngateways: [ns/gw, mesh]\nhttp: [{route: [{destination: {host: a}}]}]")},
	{"ip host tcp", doc(netv1, "VirtualService", "hosts: [10.0.0.1]\ntcp: [{route: [{destination: {host: db}}]}]")},
	{"zero weights and 100", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: v1}\n    weight: 100\n  - destination: {host: a, subset: v2}\n    weight: 0")},
	{"delegate", doc(netv1, "VirtualService", "http: [{route: [{destination: {host: a}}]}]")},
	{"redirect only", doc(netv1, "VirtualService", "hosts: [a]\nhttp: [{redirect: {uri: /b, redirectCode: 301}}]")},
	{"direct response", doc(netv1, "VirtualService", "hosts: [a]\nhttp: [{directResponse: {status: 503, body: {string: down}}}]")},
	{"tls route", doc(netv1, "VirtualService", "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com], port: 443}], route: [{destination: {host: a.com}}]}]")},
	{"go duration forms", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  outlierDetection: {interval: 1m30s, baseEjectionTime: 2h}\n  connectionPool: {tcp: {connectTimeout: 250ms}}")},
	{"mutual with credentialName", doc(netv1, "DestinationRule", "host: a.com\ntrafficPolicy:\n  tls: {mode: MUTUAL, credentialName: client-cert}")},
	{"passthrough gateway", doc(netv1, "Gateway", "servers:\n- port: {number: 443, protocol: TLS, name: tls}\n  hosts: ['*.example.com']\n  tls: {mode: PASSTHROUGH}")},
	{"https with files", doc(netv1, "Gateway", "servers:\n- port: {number: 443, protocol: HTTPS, name: https}\n  hosts: [./a.com]\n  tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}")},
	{"dns wildcard with endpoints", doc(netv1, "ServiceEntry", "hosts: ['*.a.com']\nresolution: DNS\nports: [{number: 443, name: tls, protocol: TLS}]\nendpoints: [{address: proxy.a.com}]")},
	{"static with workloadSelector", doc(netv1, "ServiceEntry", "hosts: [vm.internal]\nresolution: STATIC\nports: [{number: 80, name: http}]\nworkloadSelector: {labels: {app: vm}}")},
	{"workload entry network only", doc(netv1, "WorkloadEntry", "network: remote\nlabels: {app: a}")},
	{"tunnel connect and post", doc(netv1, "DestinationRule", "host: proxy.a.svc.cluster.local\ntrafficPolicy:\n  tunnel: {targetHost: ext.example.com, targetPort: 443}\nsubsets:\n- name: post\n  labels: {a: b}\n  trafficPolicy:\n    tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 8080}")},
	{"sidecar bound egress", doc(netv1, "Sidecar", "egress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  bind: 127.0.0.2\n  captureMode: NONE\n  hosts: ['./*']\n- port: {number: 0, protocol: HTTP}\n  bind: unix:///var/run/egress.sock\n  hosts: ['./*']\n- port: {number: 3306, protocol: TCP}\n  captureMode: NONE\n  hosts: ['./*']\n- hosts: ['istio-system/*']")},
	{"sidecar unix ingress", doc(netv1, "Sidecar", "ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  defaultEndpoint: unix:///var/run/app.sock\negress: [{hosts: ['~/*']}]")},
	{"authz path forms", doc(sec, "AuthorizationPolicy", "action: DENY\nrules:\n- to:\n  - operation:\n      paths: ['*', /a/*, '*.js', '/x/{*}/y', '/z/{**}']\n      methods: [GET, /pkg.Svc/Method]\n      ports: ['8080']\n  when:\n  - key: request.headers[x-user]\n    values: [a]\n  - key: destination.port\n    values: ['443']\n  - key: request.auth.claims[groups][admin]\n    notValues: [x]\n  - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n    values: ['[update]']")},
	{"custom with provider", doc(sec, "AuthorizationPolicy", "action: CUSTOM\nprovider: {name: ext-authz}\nrules: [{to: [{operation: {paths: [/admin]}}]}]")},
	{"allow nothing", doc(sec, "AuthorizationPolicy", "{}")},
	{"pa port level with selector", doc(sec, "PeerAuthentication", "selector: {matchLabels: {app: a}}\nportLevelMtls:\n  8080: {mode: DISABLE}")},
	{"wasm file url", doc(ext, "WasmPlugin", "url: file:///opt/p.wasm\nphase: STATS\npriority: 5")},
	{"telemetry", doc(tel, "Telemetry", "tracing: [{randomSamplingPercentage: 0}]")},
	{"envoy filter remove", doc(net3, "EnvoyFilter", "configPatches:\n- applyTo: HTTP_FILTER\n  patch: {operation: REMOVE}")},
	{"envoy filter ADD with filterClass", doc(net3, "EnvoyFilter", "configPatches:\n- applyTo: HTTP_FILTER\n  patch: {operation: ADD, filterClass: AUTHZ, value: {name: x}}")},
}

func TestValid(t *testing.T) {
	for _, tc := range validCases {
		t.Run(tc.name, func(t *testing.T) {
			rs, errs := ParseFile("ok.yaml", []byte(tc.text))
			if len(errs.Errors()) > 0 || len(rs) != 1 {
				t.Fatalf("got %d resources, problems:\n%v", len(rs), errs)
			}
		})
	}
}
