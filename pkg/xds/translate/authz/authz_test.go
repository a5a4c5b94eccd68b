package authz_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

func decode(t testing.TB, y string) []*config.Resource {
	t.Helper()
	rs, errs := config.DecodeAll("test.yaml", []byte(y))
	if len(errs.Errors()) > 0 {
		t.Fatalf("decode: %v", errs)
	}
	return rs
}

func engineFor(t testing.TB, y string, p *model.Proxy) (*rbac.Engine, *authz.Policies) {
	t.Helper()
	pol, err := authz.Translate(decode(t, y), p, "istio-system")
	if err != nil {
		t.Fatalf("Translate: %v", err)
	}
	for _, c := range pol.Configs() {
		if err := c.Validate(); err != nil {
			t.Fatalf("generated RBAC fails Envoy validation: %v", err)
		}
	}
	e, err := rbac.New(pol.Configs()...)
	if err != nil {
		t.Fatalf("rbac.New: %v", err)
	}
	return e, pol
}

func productpage() *model.Proxy {
	return &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "productpage", "version": "v1"}}
}

type req struct {
	method, path, from string
	hdr                map[string]string
	claims             map[string][]string
	reqPrincipal       string
	src                string
	port               uint32
	host               string
}

func (r req) build() *rbac.Request {
	h := http.Header{}
	for k, v := range r.hdr {
		h.Set(k, v)
	}
	m := r.method
	if m == "" {
		m = "GET"
	}
	host := r.host
	if host == "" {
		host = "productpage:9080"
	}
	out := &rbac.Request{Method: m, Host: host, Path: r.path, Header: h, Principal: r.from,
		Claims: r.claims, RequestPrincipal: r.reqPrincipal, DestPort: r.port}
	if out.Path == "" {
		out.Path = "/"
	}
	if r.src != "" {
		out.SourceIP = netip.MustParseAddr(r.src)
	}
	return out
}

const (
	sleepDefault = "spiffe://cluster.local/ns/default/sa/sleep"
	sleepFoo     = "spiffe://cluster.local/ns/foo/sa/sleep"
	bookinfoGW   = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
)

func TestIstioTaskOutcomes(t *testing.T) {
	type check struct {
		r      req
		allow  bool
		policy string // substring of the deciding policy, "" = none expected
	}
	tests := []struct {
		name   string
		yaml   string
		proxy  *model.Proxy
		checks []check
	}{
		{
			name: "no policies allows everything",
			yaml: ``,
			checks: []check{
				{r: req{path: "/"}, allow: true},
				{r: req{method: "POST", path: "/x"}, allow: true},
			},
		},
		{
			name: "allow-nothing spec {} denies all",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
`,
			checks: []check{
				{r: req{path: "/"}, allow: false},
				{r: req{path: "/productpage", from: bookinfoGW}, allow: false},
			},
		},
		{
			name: "allow-nothing in root namespace applies mesh-wide",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-system}
spec: {}
`,
			checks: []check{{r: req{path: "/"}, allow: false}},
		},
		{
			name: "policy in another namespace does not apply",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: foo}
spec: {}
`,
			checks: []check{{r: req{path: "/"}, allow: true}},
		},
		{
			name: "selector not matching does not apply",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules: [{}]
`,
			checks: []check{{r: req{path: "/"}, allow: true}},
		},
		{
			name: "allow all with rules [{}]",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec:
  rules: [{}]
`,
			checks: []check{{r: req{method: "DELETE", path: "/anything"}, allow: true, policy: "allow-all"}},
		},
		{
			name: "rules [] is allow nothing",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-none, namespace: default}
spec:
  rules: []
`,
			checks: []check{{r: req{path: "/"}, allow: false}},
		},
		{
			name: "GET only",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
  - to:
    - operation: {methods: ["GET"]}
`,
			checks: []check{
				{r: req{method: "GET", path: "/productpage"}, allow: true, policy: "productpage-viewer"},
				{r: req{method: "POST", path: "/productpage"}, allow: false},
				{r: req{method: "get", path: "/productpage"}, allow: false},
			},
		},
		{
			name: "principal based",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: details-viewer, namespace: default}
spec:
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/default/sa/sleep"]}
    to:
    - operation: {methods: ["GET"]}
`,
			checks: []check{
				{r: req{from: sleepDefault}, allow: true},
				{r: req{from: sleepFoo}, allow: false},
				{r: req{}, allow: false}, // plaintext
				{r: req{from: sleepDefault, method: "POST"}, allow: false},
			},
		},
		{
			name: "namespace based",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-foo, namespace: default}
spec:
  rules:
  - from:
    - source: {namespaces: ["foo"]}
`,
			checks: []check{
				{r: req{from: sleepFoo}, allow: true},
				{r: req{from: sleepDefault}, allow: false},
				{r: req{from: "spiffe://cluster.local/ns/foobar/sa/x"}, allow: false},
				{r: req{}, allow: false},
			},
		},
		{
			name: "notNamespaces and ipBlocks",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-foo, namespace: default}
spec:
  rules:
  - from:
    - source: {notNamespaces: ["foo"], ipBlocks: ["10.0.0.0/8", "192.168.1.1"]}
`,
			checks: []check{
				{r: req{from: sleepDefault, src: "10.1.2.3"}, allow: true},
				{r: req{from: sleepDefault, src: "192.168.1.1"}, allow: true},
				{r: req{from: sleepDefault, src: "192.168.1.2"}, allow: false},
				{r: req{from: sleepFoo, src: "10.1.2.3"}, allow: false},
			},
		},
		{
			name: "DENY with header condition",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-header, namespace: default}
spec:
  action: DENY
  rules:
  - when:
    - key: request.headers[x-token]
      values: ["admin"]
`,
			checks: []check{
				{r: req{hdr: map[string]string{"X-Token": "admin"}}, allow: false, policy: "deny-header"},
				{r: req{hdr: map[string]string{"X-Token": "guest"}}, allow: true},
				{r: req{}, allow: true},
			},
		},
		{
			name: "DENY wins over ALLOW",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec:
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation: {methods: ["POST"], paths: ["/admin*"]}
`,
			checks: []check{
				{r: req{method: "POST", path: "/admin/x"}, allow: false, policy: "deny-post"},
				{r: req{method: "GET", path: "/admin/x"}, allow: true, policy: "allow-all"},
				{r: req{method: "POST", path: "/other"}, allow: true},
			},
		},
		{
			name: "AUDIT does not change decisions",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: default}
spec:
  action: AUDIT
  rules: [{}]
`,
			checks: []check{{r: req{path: "/"}, allow: true}},
		},
		{
			name: "AUDIT with allow-nothing still denies",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-all, namespace: default}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
`,
			checks: []check{{r: req{path: "/"}, allow: false}},
		},
		{
			name: "JWT request principal and claims",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  rules:
  - from:
    - source: {requestPrincipals: ["testing@secure.istio.io/*"]}
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
`,
			checks: []check{
				{r: req{reqPrincipal: "testing@secure.istio.io/sub1", claims: map[string][]string{"groups": {"group1", "group2"}}}, allow: true},
				{r: req{reqPrincipal: "testing@secure.istio.io/sub1", claims: map[string][]string{"groups": {"group2"}}}, allow: false},
				{r: req{reqPrincipal: "other/sub1", claims: map[string][]string{"groups": {"group1"}}}, allow: false},
				{r: req{}, allow: false},
			},
		},
		{
			name: "hosts ports paths templates",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ops, namespace: default}
spec:
  rules:
  - to:
    - operation:
        hosts: ["productpage", "*.example.com"]
        ports: ["9080"]
        paths: ["/api/{*}/items", "/static/{**}", "*.png", "/exact"]
        notPaths: ["/static/secret/{**}"]
`,
			checks: []check{
				{r: req{host: "PRODUCTPAGE:9080", port: 9080, path: "/api/v1/items"}, allow: true},
				{r: req{host: "productpage", port: 9080, path: "/api/v1/v2/items"}, allow: false},
				{r: req{host: "a.example.com", port: 9080, path: "/static/a/b.css"}, allow: true},
				{r: req{host: "a.example.com", port: 9080, path: "/static/secret/k"}, allow: false},
				{r: req{host: "productpage", port: 9080, path: "/img/x.png"}, allow: true},
				{r: req{host: "productpage", port: 9080, path: "/exact"}, allow: true},
				{r: req{host: "productpage", port: 9080, path: "/exact/"}, allow: false},
				{r: req{host: "productpage", port: 9081, path: "/exact"}, allow: false},
				{r: req{host: "evil.com", port: 9080, path: "/exact"}, allow: false},
				{r: req{host: "productpage.evil.com", port: 9080, path: "/exact"}, allow: false},
			},
		},
		{
			name: "conditions on source and destination",
			yaml: `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: conds, namespace: default}
spec:
  rules:
  - when:
    - key: source.ip
      values: ["10.0.0.0/8"]
    - key: source.namespace
      notValues: ["foo"]
    - key: destination.port
      values: ["9080"]
`,
			checks: []check{
				{r: req{src: "10.0.0.1", from: sleepDefault, port: 9080}, allow: true},
				{r: req{src: "11.0.0.1", from: sleepDefault, port: 9080}, allow: false},
				{r: req{src: "10.0.0.1", from: sleepFoo, port: 9080}, allow: false},
				{r: req{src: "10.0.0.1", from: sleepDefault, port: 8080}, allow: false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.proxy
			if p == nil {
				p = productpage()
			}
			e, _ := engineFor(t, tt.yaml, p)
			for i, c := range tt.checks {
				d := e.Check(c.r.build())
				if d.Allowed != c.allow {
					t.Errorf("check %d %+v: allowed=%v want %v (decision %+v)", i, c.r, d.Allowed, c.allow, d)
				}
				if c.policy != "" && !strings.Contains(d.Policy, c.policy) {
					t.Errorf("check %d: policy %q, want it to name %q", i, d.Policy, c.policy)
				}
			}
		})
	}
}

func TestAuditReportsMatches(t *testing.T) {
	e, _ := engineFor(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-post, namespace: default}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {methods: ["POST"]}}]
`, productpage())
	d := e.Check(req{method: "POST", path: "/"}.build())
	if !d.Allowed || len(d.Audited) != 1 || d.Audited[0] != authz.PolicyName("default", "audit-post", 0) {
		t.Fatalf("POST decision %+v", d)
	}
	if d := e.Check(req{method: "GET", path: "/"}.build()); len(d.Audited) != 0 {
		t.Fatalf("GET audited: %+v", d)
	}
}

func TestUnsupported(t *testing.T) {
	_, pol := engineFor(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
`, productpage())
	if pol.Allow != nil || pol.Deny != nil || len(pol.Warnings) != 1 || !strings.Contains(pol.Warnings[0], "CUSTOM") {
		t.Fatalf("CUSTOM: %+v", pol)
	}

	// An unsupported condition drops an ALLOW rule (allows less) ...
	e, pol := engineFor(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: default}
spec:
  rules:
  - when: [{key: experimental.foo, values: ["x"]}]
`, productpage())
	if len(pol.Warnings) == 0 || e.Check(req{}.build()).Allowed {
		t.Fatalf("ALLOW with unsupported key: warnings %v, allowed", pol.Warnings)
	}
	// ... and is ignored in a DENY rule (denies more).
	e, pol = engineFor(t, `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: d, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin"]}}]
    when: [{key: experimental.foo, values: ["x"]}]
`, productpage())
	if len(pol.Warnings) == 0 || e.Check(req{path: "/admin"}.build()).Allowed || !e.Check(req{path: "/x"}.build()).Allowed {
		t.Fatalf("DENY with unsupported key: warnings %v", pol.Warnings)
	}
}

func TestPolicyName(t *testing.T) {
	n := authz.PolicyName("ns-a", "pol-1", 3)
	ns, name, idx, ok := authz.ParsePolicyName(n)
	if !ok || ns != "ns-a" || name != "pol-1" || idx != 3 {
		t.Fatalf("ParsePolicyName(%q) = %q %q %d %v", n, ns, name, idx, ok)
	}
	if _, _, _, ok := authz.ParsePolicyName("other"); ok {
		t.Fatal("ParsePolicyName(other) ok")
	}
}

func TestTranslateNilProxy(t *testing.T) {
	if _, err := authz.Translate(nil, nil, ""); err == nil {
		t.Fatal("nil proxy accepted")
	}
}

func TestRootNamespaces(t *testing.T) {
	policy := func(ns string) string {
		return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: " + ns + "}\nspec: {}\n"
	}
	for _, tt := range []struct {
		ns, root string
		applies  bool
	}{
		{"weft-system", "", true},
		{"istio-system", "", true},
		{"mesh-root", "", false},
		{"mesh-root", "mesh-root", true},
		{"istio-system", "mesh-root", true},
		{"weft-system", "mesh-root", false},
	} {
		pol, err := authz.Translate(decode(t, policy(tt.ns)), productpage(), tt.root)
		if err != nil {
			t.Fatal(err)
		}
		if got := pol.Allow != nil; got != tt.applies {
			t.Errorf("policy in %s with root %q: applies=%v want %v", tt.ns, tt.root, got, tt.applies)
		}
	}
}
