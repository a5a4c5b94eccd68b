package validation

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/config"
)

// doc builds a document; the spec is indented under "spec:" (line 6).
func doc(apiVersion, kind, spec string) string {
	return fmt.Sprintf("apiVersion: %s\nkind: %s\nmetadata:\n  name: x\n  namespace: ns\nspec:\n%s", apiVersion, kind, indent(spec))
}

// specMarked marks the "spec:" line: problems with missing spec fields are
// reported at their parent.
func specMarked(d string) string { return strings.Replace(d, "\nspec:\n", "\nspec: # <-\n", 1) }

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n") + "\n"
}

const (
	netv1 = "networking.istio.io/v1"
	sec   = "security.istio.io/v1"
	tel   = "telemetry.istio.io/v1"
	ext   = "extensions.istio.io/v1alpha1"
	net3  = "networking.istio.io/v1alpha3"
)

// markedLine returns the 1-based line holding the "# <-" marker.
func markedLine(t *testing.T, text string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, "# <-") {
			return i + 1
		}
	}
	t.Fatalf("no # <- marker in:\n%s", text)
	return 0
}

type invalidCase struct {
	name    string
	text    string
	path    string // expected field path (exact)
	msg     string // expected message substring
	warning bool   // the problem is a warning, not an error
}

var invalidCases = []invalidCase{
	// Decoding: schema, types, names.
	{"unknown field", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- rout: # <-\n  - destination: {host: a}"), "spec.http[0].rout", `did you mean "route"?`, false},
	{"unknown top-level field", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: x}\nspecs: {} # <-\n", "specs", `did you mean "spec"?`, false},
	{"unknown metadata field", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: x\n  lables: {a: b} # <-\nspec: {servers: [{port: {number: 80, protocol: HTTP, name: http}, hosts: ['*']}]}\n", "metadata.lables", `did you mean "labels"?`, false},
	{"unknown kind", "apiVersion: networking.istio.io/v1\nkind: VirtualServce # <-\nmetadata: {name: x}\n", "kind", `did you mean "VirtualService"?`, false},
	{"missing kind", "apiVersion: v1 # <-\nmetadata: {name: x}\n", "kind", "missing kind", false},
	{"wrong group", "apiVersion: security.istio.io/v1 # <-\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [a], http: [{route: [{destination: {host: a}}]}]}\n", "apiVersion", "served at networking.istio.io/v1,", false},
	{"missing name", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: # <-\n  namespace: a\nspec: {}\n", "metadata.name", "name is required", false},
	{"bad name", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: My_GW # <-\nspec: {}\n", "metadata.name", "DNS-1123", false},
	{"bad namespace", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: a.b # <-\nspec: {}\n", "metadata.namespace", "DNS-1123 label", false},
	{"label not a string", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  labels:\n    version: 2 # <-\nspec: {}\n", "metadata.labels[version]", "quote it", false},
	{"metadata label value", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: gw\n  labels:\n    app: 'a b' # <-\n", "metadata.labels[app]", "invalid label value", false},
	{"annotation key", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: gw\n  annotations:\n    'bad key!': x # <-\n", "metadata.annotations[bad key!]", "invalid annotation key", false},
	{"proxyconfig concurrency", doc("networking.istio.io/v1beta1", "ProxyConfig", "concurrency: -1 # <-"), "spec.concurrency", "must not be negative", false},
	{"string field got number", doc(netv1, "ServiceEntry", "hosts:\n- 123 # <-\nports: [{number: 80, name: http}]"), "spec.hosts[0]", "expected a string", false},
	{"int field got string", doc(netv1, "ServiceEntry", "hosts: [a.com]\nports:\n- number: eighty # <-\n  name: http"), "spec.ports[0].number", "integer", false},
	{"negative uint", doc(netv1, "ServiceEntry", "hosts: [a.com]\nports:\n- number: -1 # <-\n  name: http"), "spec.ports[0].number", "non-negative", false},
	{"bad enum", doc(sec, "PeerAuthentication", "mtls:\n  mode: STRICTT # <-"), "spec.mtls.mode", `did you mean "STRICT"?`, false},
	{"two oneof fields", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- match:\n  - uri:\n      exact: /a\n      prefix: /b # <-\n  route: [{destination: {host: a}}]"), "spec.http[0].match[0].uri.prefix", "only one of", false},
	{"list expected", doc(netv1, "VirtualService", "hosts: a # <-\nhttp: [{route: [{destination: {host: a}}]}]"), "spec.hosts", "expected a list", false},
	{"object expected", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy: yes # <-"), "spec.trafficPolicy", "expected an object", false},
	{"bad duration", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- timeout: 10 seconds # <-\n  route: [{destination: {host: a}}]"), "spec.http[0].timeout", "invalid duration", false},
	{"bool expected", doc(netv1, "Gateway", "servers:\n- port: {number: 80, protocol: HTTP, name: http}\n  hosts: ['*']\n  tls:\n    httpsRedirect: \"yes\" # <-"), "spec.servers[0].tls.httpsRedirect", "expected true or false", false},
	{"snake_case unknown", doc(netv1, "DestinationRule", "host: a\ntraffic_polcy: {} # <-"), "spec.traffic_polcy", `did you mean "trafficPolicy"?`, false},

	// VirtualService.
	{"weights sum", doc(netv1, "VirtualService", "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews, subset: v1}\n    weight: 60\n  - destination: {host: reviews, subset: v2}\n    weight: 50 # <-"), "spec.http[0].route[1].weight", "weights must sum to 100 (got 110)", false},
	{"negative weight", doc(netv1, "VirtualService", "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}\n    weight: -10 # <-\n  - destination: {host: ratings}\n    weight: 110"), "spec.http[0].route[0].weight", "must not be negative", false},
	{"tcp weights sum", doc(netv1, "VirtualService", "hosts: [db]\ntcp:\n- route:\n  - destination: {host: db, subset: a}\n    weight: 30\n  - destination: {host: db, subset: b} # <-"), "spec.tcp[0].route[1].weight", "weights must sum to 100 (got 30)", false},
	{"wildcard inside host", doc(netv1, "VirtualService", "hosts:\n- foo.*.com # <-\nhttp: [{route: [{destination: {host: a}}]}]"), "spec.hosts[0]", "leftmost label", false},
	{"star host on mesh", doc(netv1, "VirtualService", "hosts:\n- '*' # <-\nhttp: [{route: [{destination: {host: a}}]}]"), "spec.hosts[0]", "mesh gateway", false},
	{"bad host label", doc(netv1, "VirtualService", "hosts:\n- foo_bar.com # <-\nhttp: [{route: [{destination: {host: a}}]}]"), "spec.hosts[0]", "not a DNS label", false},
	{"no routes", specMarked(doc(netv1, "VirtualService", "hosts: [a]")), "spec", "at least one http, tcp or tls route", false},
	{"destination host missing", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route:\n  - destination: # <-\n      subset: v1"), "spec.http[0].route[0].destination.host", "host is required", false},
	{"destination wildcard", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: '*.a.com' # <-"), "spec.http[0].route[0].destination.host", "must not be a wildcard", false},
	{"destination port range", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route:\n  - destination:\n      host: a\n      port:\n        number: 70000 # <-"), "spec.http[0].route[0].destination.port.number", "out of range", false},
	{"bad regex", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- match:\n  - uri:\n      regex: '/a(b' # <-\n  route: [{destination: {host: a}}]"), "spec.http[0].match[0].uri.regex", "invalid RE2 regex", false},
	{"header match regex", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- match:\n  - headers:\n      x-user:\n        regex: 'x[' # <-\n  route: [{destination: {host: a}}]"), "spec.http[0].match[0].headers[x-user].regex", "invalid RE2 regex", false},
	{"upper case header", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- match:\n  - headers:\n      X-User: # <-\n        exact: a\n  route: [{destination: {host: a}}]"), "spec.http[0].match[0].headers[X-User]", "lower case", false},
	{"negative timeout", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- timeout: -1s # <-\n  route: [{destination: {host: a}}]"), "spec.http[0].timeout", "at least 1ms", false},
	{"negative retries", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries:\n    attempts: -1 # <-"), "spec.http[0].retries.attempts", "must not be negative", false},
	{"zero perTryTimeout", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  retries:\n    attempts: 3\n    perTryTimeout: 0s # <-"), "spec.http[0].retries.perTryTimeout", "at least 1ms", false},
	{"fault percent", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault:\n    abort:\n      httpStatus: 500\n      percentage:\n        value: 120 # <-"), "spec.http[0].fault.abort.percentage.value", "between 0 and 100", false},
	{"fault abort status", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault:\n    abort:\n      httpStatus: 99 # <-"), "spec.http[0].fault.abort.httpStatus", "between 200 and 599", false},
	{"fault delay missing", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  fault:\n    delay: # <-\n      percentage: {value: 10}"), "spec.http[0].fault.delay.fixedDelay", "fixedDelay is required", false},
	{"mirror percentage", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  mirror: {host: b}\n  mirrorPercentage:\n    value: 101 # <-"), "spec.http[0].mirrorPercentage.value", "between 0 and 100", false},
	{"cors method", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  corsPolicy:\n    allowMethods:\n    - GET\n    - FETCH # <-"), "spec.http[0].corsPolicy.allowMethods[1]", "unknown HTTP method", false},
	{"cors origin regex", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  corsPolicy:\n    allowOrigins:\n    - regex: '*.example.com' # <-"), "spec.http[0].corsPolicy.allowOrigins[0].regex", "invalid RE2 regex", false},
	{"route and redirect", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: a}}]\n  redirect: # <-\n    uri: /b"), "spec.http[0].redirect", "both route and redirect", false},
	{"gateway ref", doc(netv1, "VirtualService", "hosts: [a]\ngateways:\n- a/b/c # <-\nhttp: [{route: [{destination: {host: a}}]}]"), "spec.gateways[0]", "invalid gateway reference", false},
	{"single weight warning", doc(netv1, "VirtualService", "hosts: [a]\nhttp:\n- route: # <-\n  - destination: {host: a}\n    weight: 50"), "spec.http[0].route", "is ignored", true},

	{"vs exportTo", doc(netv1, "VirtualService", "hosts: [a]\nexportTo:\n- Bad_NS # <-\nhttp: [{route: [{destination: {host: a}}]}]"), "spec.exportTo[0]", "exportTo", false},

	// DestinationRule.
	{"dr tunnel protocol", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  tunnel:\n    protocol: GET # <-\n    targetHost: b.example.com\n    targetPort: 443"), "spec.trafficPolicy.tunnel.protocol", "CONNECT or POST", false},
	{"dr tunnel no target host", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  tunnel: # <-\n    targetPort: 443"), "spec.trafficPolicy.tunnel.targetHost", "targetHost is required", false},
	{"dr tunnel bad target host", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  tunnel:\n    targetHost: '*.example.com' # <-\n    targetPort: 443"), "spec.trafficPolicy.tunnel.targetHost", "DNS name or an IP", false},
	{"dr tunnel port range", doc(netv1, "DestinationRule", "host: a\nsubsets:\n- name: s\n  labels: {a: b}\n  trafficPolicy:\n    tunnel:\n      targetHost: 10.0.0.1\n      targetPort: 70000 # <-"), "spec.subsets[0].trafficPolicy.tunnel.targetPort", "out of range", false},
	{"dr tunnel and proxyProtocol", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  proxyProtocol: {version: V1}\n  tunnel: # <-\n    targetHost: b\n    targetPort: 443"), "spec.trafficPolicy.tunnel", "must not be set together", false},
	{"dr exportTo", doc(netv1, "DestinationRule", "host: a\nexportTo:\n- '-' # <-"), "spec.exportTo[0]", "exportTo", false},
	{"warmup minimumPercent", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  loadBalancer:\n    warmup:\n      duration: 10s\n      minimumPercent: 120 # <-"), "spec.trafficPolicy.loadBalancer.warmup.minimumPercent", "between 0 and 100", false},
	{"warmup aggression", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  loadBalancer:\n    warmup:\n      duration: 10s\n      aggression: 0 # <-"), "spec.trafficPolicy.loadBalancer.warmup.aggression", "greater than 0", false},
	{"warmup without duration", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  loadBalancer:\n    warmup: # <-\n      aggression: 2"), "spec.trafficPolicy.loadBalancer.warmup.duration", "duration is required", false},
	{"warmup and warmupDurationSecs", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  loadBalancer:\n    warmupDurationSecs: 10s\n    warmup: # <-\n      duration: 10s"), "spec.trafficPolicy.loadBalancer.warmup", "mutually exclusive", false},
	{"warmup with consistentHash", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: true}\n    warmup: # <-\n      duration: 10s"), "spec.trafficPolicy.loadBalancer.warmup", "no effect", true},
	{"retryBudget percent", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  retryBudget:\n    percent: -5 # <-"), "spec.trafficPolicy.retryBudget.percent", "between 0 and 100", false},
	{"subset without name", doc(netv1, "DestinationRule", "host: reviews\nsubsets:\n- labels: {version: v1} # <-"), "spec.subsets[0].name", "subset name is required", false},
	{"duplicate subset", doc(netv1, "DestinationRule", "host: reviews\nsubsets:\n- name: v1\n  labels: {version: v1}\n- name: v1 # <-\n  labels: {version: v2}"), "spec.subsets[1].name", "duplicate subset name", false},
	{"subset without labels", doc(netv1, "DestinationRule", "host: reviews\nsubsets:\n- name: v1 # <-"), "spec.subsets[0].labels", "no labels", true},
	{"bad label value", doc(netv1, "DestinationRule", "host: reviews\nsubsets:\n- name: v1\n  labels:\n    version: -v1- # <-"), "spec.subsets[0].labels[version]", "invalid label value", false},
	{"bad label key", doc(netv1, "DestinationRule", "host: reviews\nsubsets:\n- name: v1\n  labels:\n    bad key: v1 # <-"), "spec.subsets[0].labels[bad key]", "invalid label key", false},
	{"consistent hash no key", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: # <-\n      minimumRingSize: 1024"), "spec.trafficPolicy.loadBalancer.consistentHash", "needs one key", false},
	{"consistent hash two keys", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n      httpHeaderName: x-user\n      useSourceIp: true # <-"), "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp", "only one of", false},
	{"mutual tls no cert", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  tls: # <-\n    mode: MUTUAL"), "spec.trafficPolicy.tls", "clientCertificate and privateKey", false},
	{"istio mutual with cert", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  tls: # <-\n    mode: ISTIO_MUTUAL\n    clientCertificate: /a.pem"), "spec.trafficPolicy.tls", "must not set", false},
	{"max ejection percent", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  outlierDetection:\n    maxEjectionPercent: 150 # <-"), "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "between 0 and 100", false},
	{"failure percentage threshold", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  outlierDetection:\n    failurePercentageThreshold: 101 # <-"), "spec.trafficPolicy.outlierDetection.failurePercentageThreshold", "between 0 and 100", false},
	{"outlier http error code", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  outlierDetection:\n    outlierDetectionHttpErrorCodes: [503, 600] # <-"), "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]", "between 100 and 599", false},
	{"locality distribute and failover", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting: # <-\n      distribute:\n      - {from: us-east/*, to: {us-east/*: 100}}\n      failover:\n      - {from: us-east, to: eu-west}"), "spec.trafficPolicy.loadBalancer.localityLbSetting", "cannot be set together", false},
	{"locality distribute sum", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - from: us-east/*\n        to: # <-\n          us-east/*: 60\n          eu-west/*: 30"), "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "add up to 100, got 90", false},
	{"locality failover zone", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      failover:\n      - {from: us-east/zone-a, to: eu-west} # <-"), "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "between regions", false},
	{"failover priority twice", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      failoverPriority:\n      - version\n      - version=v2 # <-"), "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority[1]", "listed twice", false},
	{"outlier interval", doc(netv1, "DestinationRule", "host: reviews\ntrafficPolicy:\n  outlierDetection:\n    interval: 0s # <-"), "spec.trafficPolicy.outlierDetection.interval", "at least 1ms", false},
	{"dr host missing", specMarked(doc(netv1, "DestinationRule", "subsets:\n- name: v1\n  labels: {a: b}")), "spec.host", "host is required", false},
	{"port level port", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  portLevelSettings:\n  - port:\n      number: 0 # <-\n    loadBalancer: {simple: RANDOM}"), "spec.trafficPolicy.portLevelSettings[0].port.number", "out of range", false},
	{"negative pending", doc(netv1, "DestinationRule", "host: a\ntrafficPolicy:\n  connectionPool:\n    http:\n      http1MaxPendingRequests: -1 # <-"), "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests", "must not be negative", false},

	// Gateway.
	{"gateway port", doc(netv1, "Gateway", "servers:\n- port:\n    number: 0 # <-\n    protocol: HTTP\n    name: http\n  hosts: ['*']"), "spec.servers[0].port.number", "out of range", false},
	{"gateway protocol", doc(netv1, "Gateway", "servers:\n- port:\n    number: 80\n    protocol: HTTPX # <-\n    name: http\n  hosts: ['*']"), "spec.servers[0].port.protocol", "did you mean \"HTTP\"", false},
	{"gateway no hosts", doc(netv1, "Gateway", "servers:\n- port: {number: 80, protocol: HTTP, name: http} # <-"), "spec.servers[0].hosts", "at least one host", false},
	{"gateway ns host", doc(netv1, "Gateway", "servers:\n- port: {number: 80, protocol: HTTP, name: http}\n  hosts:\n  - Bad_NS/foo.com # <-"), "spec.servers[0].hosts[0]", "invalid namespace", false},
	{"simple tls no cert", doc(netv1, "Gateway", "servers:\n- port: {number: 443, protocol: HTTPS, name: https}\n  hosts: ['*']\n  tls: # <-\n    mode: SIMPLE"), "spec.servers[0].tls", "SIMPLE mode needs credentialName", false},
	{"https redirect on https", doc(netv1, "Gateway", "servers:\n- port: {number: 443, protocol: HTTPS, name: https}\n  hosts: ['*']\n  tls:\n    httpsRedirect: true # <-\n    mode: SIMPLE\n    credentialName: c"), "spec.servers[0].tls.httpsRedirect", "only valid on HTTP servers", false},
	{"https without tls", doc(netv1, "Gateway", "servers:\n- port: {number: 443, protocol: HTTPS, name: https} # <-\n  hosts: ['*']"), "spec.servers[0].tls", "needs tls settings", false},
	{"no servers", specMarked(doc(netv1, "Gateway", "selector: {istio: ingressgateway}")), "spec.servers", "at least one server", false},

	// ServiceEntry.
	{"se no hosts", specMarked(doc(netv1, "ServiceEntry", "ports: [{number: 80, name: http}]")), "spec.hosts", "at least one host", false},
	{"se static no endpoints", doc(netv1, "ServiceEntry", "hosts: [a.com]\nresolution: STATIC # <-\nports: [{number: 80, name: http}]"), "spec.resolution", "STATIC resolution needs", false},
	{"se dns wildcard", doc(netv1, "ServiceEntry", "hosts:\n- '*.a.com' # <-\nresolution: DNS\nports: [{number: 80, name: http}]"), "spec.hosts[0]", "cannot be resolved", false},
	{"se duplicate port", doc(netv1, "ServiceEntry", "hosts: [a.com]\nports:\n- {number: 80, name: http}\n- {number: 80, name: http2} # <-"), "spec.ports[1].number", "duplicate port number", false},
	{"se port name", doc(netv1, "ServiceEntry", "hosts: [a.com]\nports:\n- number: 80 # <-\n  protocol: HTTP"), "spec.ports[0].name", "port name is required", false},
	{"se ip host", doc(netv1, "ServiceEntry", "hosts:\n- 10.0.0.1 # <-\nports: [{number: 80, name: http}]"), "spec.hosts[0]", "not IP addresses", false},
	{"se static endpoint not ip", doc(netv1, "ServiceEntry", "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http}]\nendpoints:\n- address: foo.com # <-"), "spec.endpoints[0].address", "needs IP addresses", false},
	{"se bad address", doc(netv1, "ServiceEntry", "hosts: [a.com]\naddresses:\n- 10.0.0.0/33 # <-\nports: [{number: 80, name: http}]"), "spec.addresses[0]", "not an IP address or CIDR", false},

	// WorkloadEntry, WorkloadGroup.
	{"we no address", specMarked(doc(netv1, "WorkloadEntry", "labels: {app: a}")), "spec.address", "address is required", false},
	{"we port range", doc(netv1, "WorkloadEntry", "address: 10.0.0.1\nports:\n  http: 0 # <-"), "spec.ports[http]", "out of range", false},

	// Sidecar.
	{"sidecar host form", doc(netv1, "Sidecar", "egress:\n- hosts:\n  - foo.com # <-"), "spec.egress[0].hosts[0]", "namespace/dnsName", false},
	{"sidecar bind without port", doc(netv1, "Sidecar", "egress:\n- bind: 127.0.0.2 # <-\n  hosts: ['./*']"), "spec.egress[0].bind", "bind needs a port", false},
	{"sidecar captureMode NONE without port", doc(netv1, "Sidecar", "egress:\n- captureMode: NONE # <-\n  hosts: ['./*']"), "spec.egress[0].captureMode", "needs a port", false},
	{"sidecar bad bind", doc(netv1, "Sidecar", "egress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  bind: 127.0.0.300 # <-\n  hosts: ['./*']"), "spec.egress[0].bind", "must be an IP address or unix:// path", false},
	{"sidecar unix bind port", doc(netv1, "Sidecar", "egress:\n- port:\n    number: 9080 # <-\n    protocol: HTTP\n  bind: unix:///tmp/a.sock\n  hosts: ['./*']"), "spec.egress[0].port.number", "must have port number 0", false},
	{"sidecar port 0 without unix", doc(netv1, "Sidecar", "egress:\n- port:\n    number: 0 # <-\n    protocol: HTTP\n  bind: 127.0.0.2\n  hosts: ['./*']"), "spec.egress[0].port.number", "needs a unix:// bind", false},
	{"sidecar unix relative", doc(netv1, "Sidecar", "egress:\n- port: {number: 0, protocol: HTTP}\n  bind: unix://a.sock # <-\n  hosts: ['./*']"), "spec.egress[0].bind", "absolute path", false},
	{"sidecar unix iptables", doc(netv1, "Sidecar", "egress:\n- port: {number: 0, protocol: HTTP}\n  bind: unix:///a.sock\n  captureMode: IPTABLES # <-\n  hosts: ['./*']"), "spec.egress[0].captureMode", "DEFAULT or NONE", false},
	{"sidecar bound no protocol", doc(netv1, "Sidecar", "egress:\n- port: # <-\n    number: 9080\n  captureMode: NONE\n  hosts: ['./*']"), "spec.egress[0].port.protocol", "needs a protocol", false},
	{"sidecar ingress bind", doc(netv1, "Sidecar", "ingress:\n- port: {number: 9080, protocol: HTTP, name: http}\n  bind: unix:///a.sock # <-\n  defaultEndpoint: 127.0.0.1:8080"), "spec.ingress[0].bind", "must be an IP address", false},
	{"sidecar catch-all order", doc(netv1, "Sidecar", "egress:\n- hosts: ['./*'] # <-\n- port: {number: 80, protocol: HTTP, name: http}\n  hosts: ['*/*']"), "spec.egress[0].port", "must be the last", false},

	// EnvoyFilter.
	{"ef applyTo missing", doc(net3, "EnvoyFilter", "configPatches:\n- patch: # <-\n    operation: MERGE\n    value: {a: 1}"), "spec.configPatches[0].applyTo", "applyTo is required", false},
	{"ef value missing", doc(net3, "EnvoyFilter", "configPatches:\n- applyTo: CLUSTER\n  patch: # <-\n    operation: MERGE"), "spec.configPatches[0].patch.value", "MERGE needs a value", false},
	{"ef operation missing", doc(net3, "EnvoyFilter", "configPatches:\n- applyTo: CLUSTER\n  patch: # <-\n    value: {a: 1}"), "spec.configPatches[0].patch.operation", "operation is required", false},
	{"ef http filter ADD", doc(net3, "EnvoyFilter", "configPatches:\n- applyTo: HTTP_FILTER\n  patch:\n    operation: ADD # <-\n    value: {name: a}"), "spec.configPatches[0].patch.operation", "ADD with a filterClass", false},
	{"ef merge-replace value missing", doc(net3, "EnvoyFilter", "configPatches:\n- applyTo: CLUSTER\n  patch: # <-\n    operation: MERGE_AND_REPLACE_LIST"), "spec.configPatches[0].patch.value", "needs a value", false},

	// PeerAuthentication, RequestAuthentication.
	{"pa port level without selector", doc(sec, "PeerAuthentication", "mtls: {mode: STRICT}\nportLevelMtls: # <-\n  8080: {mode: DISABLE}"), "spec.portLevelMtls", "requires a workload selector", false},
	{"pa selector label", doc(sec, "PeerAuthentication", "selector:\n  matchLabels:\n    app/x/y: a # <-"), "spec.selector.matchLabels[app/x/y]", "invalid label key", false},
	{"ra issuer", doc(sec, "RequestAuthentication", "jwtRules:\n- audiences: [a] # <-"), "spec.jwtRules[0].issuer", "issuer is required", false},
	{"ra jwks both", doc(sec, "RequestAuthentication", "jwtRules:\n- issuer: a\n  jwks: '{}' # <-\n  jwksUri: https://a.com/keys"), "spec.jwtRules[0].jwks", "mutually exclusive", false},
	{"ra jwksUri scheme", doc(sec, "RequestAuthentication", "jwtRules:\n- issuer: a\n  jwksUri: ftp://a.com/keys # <-"), "spec.jwtRules[0].jwksUri", "http or https URL", false},
	{"ra header name", doc(sec, "RequestAuthentication", "jwtRules:\n- issuer: a\n  fromHeaders:\n  - prefix: 'Bearer ' # <-"), "spec.jwtRules[0].fromHeaders[0].name", "header name is required", false},
	{"ra plain http", doc(sec, "RequestAuthentication", "jwtRules:\n- issuer: a\n  jwksUri: http://a.com/keys # <-"), "spec.jwtRules[0].jwksUri", "plain http", true},

	// AuthorizationPolicy.
	{"ap custom no provider", doc(sec, "AuthorizationPolicy", "action: CUSTOM # <-\nrules: [{to: [{operation: {paths: [/a]}}]}]"), "spec.action", "needs a provider", false},
	{"ap deny with provider", doc(sec, "AuthorizationPolicy", "action: DENY\nprovider: # <-\n  name: ext\nrules: [{to: [{operation: {paths: [/a]}}]}]"), "spec.provider", "only allowed with action CUSTOM", false},
	{"ap empty principal", doc(sec, "AuthorizationPolicy", "rules:\n- from:\n  - source:\n      principals:\n      - cluster.local/ns/a/sa/b\n      - '' # <-"), "spec.rules[0].from[0].source.principals[1]", "must not be empty", false},
	{"ap spiffe prefix", doc(sec, "AuthorizationPolicy", "rules:\n- from:\n  - source:\n      notPrincipals:\n      - spiffe://cluster.local/ns/a/sa/b # <-"), "spec.rules[0].from[0].source.notPrincipals[0]", "spiffe://", false},
	{"ap ip block", doc(sec, "AuthorizationPolicy", "rules:\n- from:\n  - source:\n      ipBlocks:\n      - 300.1.2.3 # <-"), "spec.rules[0].from[0].source.ipBlocks[0]", "not an IP address or CIDR", false},
	{"ap method case", doc(sec, "AuthorizationPolicy", "rules:\n- to:\n  - operation:\n      methods:\n      - get # <-"), "spec.rules[0].to[0].operation.methods[0]", "must be upper case", false},
	{"ap path template", doc(sec, "AuthorizationPolicy", "rules:\n- to:\n  - operation:\n      paths:\n      - /a/{**}/b # <-"), "spec.rules[0].to[0].operation.paths[0]", "{**} must be the last segment", false},
	{"ap path segment", doc(sec, "AuthorizationPolicy", "rules:\n- to:\n  - operation:\n      paths:\n      - /a/{id}/b # <-"), "spec.rules[0].to[0].operation.paths[0]", "exactly {*} or {**}", false},
	{"ap port", doc(sec, "AuthorizationPolicy", "rules:\n- to:\n  - operation:\n      ports:\n      - http # <-"), "spec.rules[0].to[0].operation.ports[0]", "must be a number", false},
	{"ap condition key", doc(sec, "AuthorizationPolicy", "rules:\n- when:\n  - key: request.header[x] # <-\n    values: [a]"), "spec.rules[0].when[0].key", "invalid key", false},
	{"ap condition unknown", doc(sec, "AuthorizationPolicy", "rules:\n- when:\n  - key: source.ipaddr # <-\n    values: [a]"), "spec.rules[0].when[0].key", "unknown condition key", false},
	{"ap condition values", doc(sec, "AuthorizationPolicy", "rules:\n- when:\n  - key: source.ip # <-"), "spec.rules[0].when[0].values", "values or notValues is required", false},
	{"ap condition ip", doc(sec, "AuthorizationPolicy", "rules:\n- when:\n  - key: source.ip\n    values:\n    - 10.0.0.0/8\n    - nope # <-"), "spec.rules[0].when[0].values[1]", "not an IP address", false},
	{"ap destination port", doc(sec, "AuthorizationPolicy", "rules:\n- when:\n  - key: destination.port\n    values:\n    - '99999' # <-"), "spec.rules[0].when[0].values[0]", "between 1 and 65535", false},
	{"ap claims without name", doc(sec, "AuthorizationPolicy", "rules:\n- when:\n  - key: request.auth.claims # <-\n    values: [a]"), "spec.rules[0].when[0].key", "needs a name in brackets", false},
	{"ap empty source", doc(sec, "AuthorizationPolicy", "rules:\n- from:\n  - source: {} # <-"), "spec.rules[0].from[0].source", "at least one field", false},

	// Telemetry, WasmPlugin.
	{"telemetry sampling", doc(tel, "Telemetry", "tracing:\n- randomSamplingPercentage: 150 # <-"), "spec.tracing[0].randomSamplingPercentage", "between 0 and 100", false},
	{"telemetry provider name", doc(tel, "Telemetry", "accessLogging:\n- providers:\n  - name: '' # <-"), "spec.accessLogging[0].providers[0].name", "provider name is required", false},
	{"telemetry selector and targetRefs", doc(tel, "Telemetry", "selector: {matchLabels: {app: a}}\ntargetRefs: # <-\n- {kind: Service, group: '', name: a}"), "spec.targetRefs", "mutually exclusive", false},
	{"telemetry targetRef kind", doc(tel, "Telemetry", "targetRefs:\n- group: apps\n  kind: Deployment # <-\n  name: a"), "spec.targetRefs[0].kind", "unsupported target apps/Deployment", false},
	{"telemetry targetRef namespace", doc(tel, "Telemetry", "targetRef:\n  group: gateway.networking.k8s.io\n  kind: Gateway\n  name: gw\n  namespace: other # <-"), "spec.targetRef.namespace", "must be the policy's namespace", false},
	{"telemetry filter token", doc(tel, "Telemetry", "accessLogging:\n- filter:\n    expression: response.code >= 400 | true # <-"), "spec.accessLogging[0].filter.expression", `offset 21: "|"`, false},
	{"telemetry filter attribute", doc(tel, "Telemetry", "accessLogging:\n- filter:\n    expression: request.hdrs['x'] == 'y' # <-"), "spec.accessLogging[0].filter.expression", `"request.hdrs": unknown attribute`, false},
	{"telemetry filter not bool", doc(tel, "Telemetry", "accessLogging:\n- filter:\n    expression: response.code # <-"), "spec.accessLogging[0].filter.expression", "a filter must be a bool", false},
	{"telemetry upsert expression", doc(tel, "Telemetry", "metrics:\n- overrides:\n  - tagOverrides:\n      host:\n        value: lower(request.host) # <-"), "spec.metrics[0].overrides[0].tagOverrides[host].value", `"lower": unsupported function`, false},
	{"telemetry upsert map", doc(tel, "Telemetry", "metrics:\n- overrides:\n  - tagOverrides:\n      h:\n        value: request.headers # <-"), "spec.metrics[0].overrides[0].tagOverrides[h].value", "is a map", false},
	{"telemetry tag name", doc(tel, "Telemetry", "metrics:\n- overrides:\n  - tagOverrides:\n      bad-name: # <-\n        value: request.host"), "spec.metrics[0].overrides[0].tagOverrides[bad-name]", "not a Prometheus label name", false},
	{"telemetry custom metric", doc(tel, "Telemetry", "metrics:\n- overrides:\n  - match:\n      customMetric: my_metric # <-\n    disabled: true"), "spec.metrics[0].overrides[0].match.customMetric", "no effect", true},
	{"telemetry metrics provider", doc(tel, "Telemetry", "metrics:\n- providers:\n  - name: stackdriver # <-"), "spec.metrics[0].providers[0].name", "only exports Prometheus metrics", true},
	{"wasm url scheme", doc(ext, "WasmPlugin", "url: ftp://a.com/p.wasm # <-"), "spec.url", "not supported", false},
	{"wasm sha", doc(ext, "WasmPlugin", "url: oci://a.com/p:1\nsha256: abc # <-"), "spec.sha256", "64 lower-case hex", false},
	{"wasm phase", doc(ext, "WasmPlugin", "url: oci://a.com/p:1\nphase: AUTH # <-"), "spec.phase", `did you mean "AUTHN"?`, false},
	{"wasm url missing", specMarked(doc(ext, "WasmPlugin", "phase: AUTHN")), "spec.url", "url is required", false},
}

func TestInvalid(t *testing.T) {
	if len(invalidCases) < 60 {
		t.Fatalf("only %d cases", len(invalidCases))
	}
	for _, tc := range invalidCases {
		t.Run(tc.name, func(t *testing.T) {
			line := markedLine(t, tc.text)
			rs, errs := ParseFile("case.yaml", []byte(tc.text))
			var found *config.FieldError
			for _, e := range errs {
				if e.Path == tc.path && strings.Contains(e.Msg, tc.msg) {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("no problem at %s containing %q; got:\n%v", tc.path, tc.msg, errs)
			}
			wantPrefix := fmt.Sprintf("case.yaml:%d: ", line)
			if !strings.HasPrefix(found.Error(), wantPrefix) {
				t.Errorf("got %q, want prefix %q", found.Error(), wantPrefix)
			}
			if !strings.Contains(found.Error(), tc.path+": ") {
				t.Errorf("message %q does not name path %s", found.Error(), tc.path)
			}
			if found.Warning != tc.warning {
				t.Errorf("warning = %v, want %v", found.Warning, tc.warning)
			}
			if !tc.warning && rs != nil {
				t.Errorf("got %d resources despite an error", len(rs))
			}
			if tc.warning && len(errs.Errors()) == 0 && len(rs) != 1 {
				t.Errorf("warnings only, but got %d resources", len(rs))
			}
		})
	}
}

// weft proxy generates the gRPC message metrics: overrides of them are
// accepted without a warning.
func TestTelemetryGRPCMessageOverrides(t *testing.T) {
	text := doc(tel, "Telemetry", `metrics:
- providers: [{name: prometheus}]
  overrides:
  - match: {metric: GRPC_REQUEST_MESSAGES, mode: CLIENT}
    disabled: true
  - match: {metric: GRPC_RESPONSE_MESSAGES}
    tagOverrides:
      rpc: {value: request.url_path}
      response_flags: {operation: REMOVE}`)
	rs, errs := ParseFile("case.yaml", []byte(text))
	if len(errs) != 0 || len(rs) != 1 {
		t.Fatalf("got %d resources, problems:\n%v", len(rs), errs)
	}
}
