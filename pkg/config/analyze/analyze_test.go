package analyze

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

func decode(t *testing.T, text string) []*config.Resource {
	t.Helper()
	rs, err := config.Decode("in.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

const base = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-service}
spec:
  hosts: [extsvc.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ['*.wild.example.com']
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: extsvc.example.com
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  servers: [{port: {number: 80, protocol: HTTP, name: http}, hosts: ['*']}]
---
`

func TestAnalyze(t *testing.T) {
	tests := []struct {
		name  string
		input string
		opts  []Option
		want  []string // substrings of the messages, in order; nil: none
	}{
		{"clean", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ok}
spec:
  hosts: [extsvc.example.com]
  gateways: [gw, mesh]
  http:
  - route:
    - destination: {host: extsvc.example.com, subset: v1}
    - destination: {host: a.wild.example.com}
      weight: 0
`, nil, nil},
		{"service entry name used as host", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: seed}
spec:
  hosts: [extsvc.example.com]
  http:
  - route:
    - destination:
        host: ext-service
`, nil, []string{`in.yaml:38: Warning [WEFT0101] VirtualService default/seed: spec.http[0].route[0].destination.host: host "ext-service" (ext-service.default.svc.cluster.local) matches no ServiceEntry or known service; did you mean "extsvc.example.com", the host of ServiceEntry default/ext-service?`}},
		{"unknown cluster-local host is info without a registry", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
`, nil, []string{`in.yaml:35: Info [WEFT0101] VirtualService default/r: spec.http[0].route[0].destination.host: host "reviews" (reviews.default.svc.cluster.local) matches no ServiceEntry or known service here; fine if it is a Kubernetes service`}},
		{"unknown host is a warning with a registry", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
`, []Option{WithKnownHosts("ratings.default.svc.cluster.local")}, []string{`in.yaml:35: Warning [WEFT0101]`}},
		{"known hosts", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
`, []Option{WithKnownHosts("reviews.default.svc.cluster.local")}, nil},
		{"delegates", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root}
spec:
  hosts: [extsvc.example.com]
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: team-a, namespace: team}
  - match: [{uri: {prefix: /b}}]
    delegate: {name: missing}
  - match: [{uri: {prefix: /c}}]
    delegate: {name: root}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: team-a, namespace: team}
spec:
  http: [{route: [{destination: {host: extsvc.example.com}}]}]
`, nil, []string{
			"Warning [WEFT0111] VirtualService default/root: spec.http[1].delegate: delegate VirtualService default/missing not found",
			"Warning [WEFT0111] VirtualService default/root: spec.http[2].delegate: VirtualService default/root has hosts: a delegate must have none",
		}},
		{"missing subset and gateway", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [extsvc.example.com]
  gateways:
  - istio-system/ingress
  http:
  - route:
    - destination:
        host: extsvc.example.com
        subset: v2
`, nil, []string{
			"in.yaml:36: Warning [WEFT0103] VirtualService default/r: spec.gateways[0]: gateway istio-system/ingress not found",
			`in.yaml:41: Warning [WEFT0102] VirtualService default/r: spec.http[0].route[0].destination.subset: subset "v2" is not defined by DestinationRule default/ext (subsets: v1)`,
		}},
		{"conflicting virtual services", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [extsvc.example.com]
  http: [{route: [{destination: {host: extsvc.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts:
  - extsvc.example.com
  http: [{route: [{destination: {host: extsvc.example.com}}]}]
`, nil, []string{"in.yaml:42: Warning [WEFT0104] VirtualService default/b: spec.hosts[0]: host extsvc.example.com on gateway mesh is also routed by VirtualService default/a"}},
		{"redefinition is not a conflict", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [extsvc.example.com]
  http: [{route: [{destination: {host: extsvc.example.com, subset: v9}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [extsvc.example.com]
  http: [{route: [{destination: {host: extsvc.example.com}}]}]
`, nil, nil},
		{"same host different gateways is fine", base + `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [extsvc.example.com]
  http: [{route: [{destination: {host: extsvc.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [extsvc.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: extsvc.example.com}}]}]
`, nil, nil},
		{"selectors", base + `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  selector:
    matchLabels: {app: nope}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra}
spec:
  selector:
    matchLabels: {app: http-server}
  jwtRules: [{issuer: a}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm}
spec: {address: 10.0.0.1, labels: {app: vm}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa}
spec:
  selector:
    matchLabels: {app: vm}
`, []Option{WithWorkloads(Workload{Namespace: "default", Labels: map[string]string{"app": "http-server", "version": "v1"}})},
			[]string{"in.yaml:35: Warning [WEFT0105] AuthorizationPolicy default/ap: spec.selector.matchLabels: selector app=nope matches no workload in namespace default"}},
		{"selectors unchecked without workloads", base + `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  selector:
    matchLabels: {app: nope}
`, nil, nil},
		{"two default sidecars", base + `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: a}
spec: {egress: [{hosts: ['./*']}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: b}
spec:
  egress: [{hosts: ['./*']}]
`, nil, []string{"in.yaml:38: Warning [WEFT0106] Sidecar default/b: spec.workloadSelector: namespace default already has a Sidecar without workloadSelector (a)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs := Analyze(decode(t, tc.input), tc.opts...)
			if len(msgs) != len(tc.want) {
				t.Fatalf("got %d messages, want %d:\n%v", len(msgs), len(tc.want), msgs)
			}
			for i, w := range tc.want {
				if got := msgs[i].String(); !strings.Contains(got, w) {
					t.Errorf("message %d = %q, want it to contain %q", i, got, w)
				}
			}
		})
	}
}

func TestCustomProvider(t *testing.T) {
	rs := decode(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: good, namespace: foo}
spec:
  action: CUSTOM
  provider: {name: ext-authz-http}
  rules: [{to: [{operation: {paths: [/headers]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: typo, namespace: foo}
spec:
  action: CUSTOM
  provider:
    name: ext-authz-htp
  rules: [{to: [{operation: {paths: [/headers]}}]}]
`)
	mesh, err := meshconfig.Parse("mesh.yaml", []byte("extensionProviders:\n- name: ext-authz-http\n  envoyExtAuthzHttp: {service: ext-authz.foo.svc.cluster.local, port: 8000}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if msgs := Analyze(rs); len(msgs) != 0 {
		t.Fatalf("without mesh config: %v", msgs)
	}
	msgs := Analyze(rs, WithMeshConfig(mesh))
	if len(msgs) != 1 {
		t.Fatalf("messages %v, want one", msgs)
	}
	m := msgs[0]
	if m.Code != CodeCustomProvider || m.Severity != Error || m.Resource.Name != "typo" || m.Path != "spec.provider.name" ||
		(m.Source.Line != 15 && m.Source.Line != 16) || !strings.Contains(m.Text, `"ext-authz-htp" is not in meshConfig.extensionProviders`) {
		t.Errorf("message %s (line %d)", m, m.Source.Line)
	}
}

// EnvoyFilter patches: what weft proxy would not execute (WEFT0109) and
// patches that can never apply (WEFT0110), at the patch's line.
func TestEnvoyFilterPatches(t *testing.T) {
	msgs := Analyze(decode(t, `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef, namespace: default}
spec:
  configPatches:
  - applyTo: NETWORK_FILTER
    match: {listener: {portNumber: 6379, filterChain: {filter: {name: envoy.filters.network.tcp_proxy}}}}
    patch:
      operation: REPLACE
      value:
        name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: redis
          settings: {op_timeout: 1s}
  - applyTo: HTTP_ROUTE
    match: {routeConfiguration: {vhost: {name: "reviews:9080"}}}
    patch:
      operation: MERGE
      value: {route: {timeout: 3s, idle_timeout: 5s}}
  - applyTo: ROUTE_CONFIGURATION
    patch: {operation: ADD, value: {name: x}}
  - applyTo: CLUSTER
    patch: {operation: MERGE, value: {connect_timeout_typo: 1s}}
  - applyTo: HTTP_FILTER
    patch: {operation: INSERT_FIRST, value: {name: envoy.filters.http.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC}}}
  - applyTo: CLUSTER
    match: {proxy: {proxyVersion: '^1\.2.*'}}
    patch: {operation: REMOVE}
`))
	want := []string{
		"in.yaml:10: Warning [WEFT0109] EnvoyFilter default/ef: spec.configPatches[0].patch.value: network filter envoy.filters.network.redis_proxy is not executed by weft proxy",
		"in.yaml:20: Warning [WEFT0109] EnvoyFilter default/ef: spec.configPatches[1].patch.value: route field route.idle_timeout is not executed by weft proxy",
		"in.yaml:22: Warning [WEFT0110] EnvoyFilter default/ef: spec.configPatches[2].patch.operation: operation ADD is not supported for ROUTE_CONFIGURATION; the patch is skipped",
		`in.yaml:24: Warning [WEFT0110] EnvoyFilter default/ef: spec.configPatches[3].patch.value: patch.value as envoy.config.cluster.v3.Cluster: proto: (line 1:2): unknown field "connect_timeout_typo"; the patch is skipped`,
		"in.yaml:28: Warning [WEFT0109] EnvoyFilter default/ef: spec.configPatches[5].match.proxy.proxyVersion: weft proxy sends no ISTIO_VERSION node metadata",
	}
	var got []string
	for _, m := range msgs {
		got = append(got, m.String())
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.HasPrefix(got[i], want[i])
	}
	if !ok {
		t.Errorf("got:\n%s\nwant (prefixes):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
