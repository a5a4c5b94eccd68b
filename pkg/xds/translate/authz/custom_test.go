package authz_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

const customMesh = `extensionProviders:
- name: authz-http
  envoyExtAuthzHttp: {service: ext-authz.foo.svc.cluster.local, port: 8000, failOpen: true}
- name: authz-grpc
  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000, timeout: 3s}
`

func customPolicy(name, provider, paths string) string {
	return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: default}\nspec:\n" +
		"  action: CUSTOM\n  provider: {name: " + provider + "}\n  rules:\n  - to: [{operation: {paths: " + paths + "}}]\n---\n"
}

// TestCustomTranslation: CUSTOM policies mark requests with shadow rules
// and add an ext_authz filter that runs only on marked requests; order
// audit, CUSTOM, ext_authz, DENY, ALLOW; provider problems deny the rules.
func TestCustomTranslation(t *testing.T) {
	mesh, err := meshconfig.Parse("mesh.yaml", []byte(customMesh))
	if err != nil {
		t.Fatal(err)
	}
	deny := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin, namespace: default}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [/admin]}}]\n---\n"
	tests := []struct {
		name, yaml string
		lookup     func(string, string) (string, bool)
		wantExt    string // cluster of the ext_authz filter; "" none
		wantWarn   string
		marked     map[string]bool // path → marked for the check (shadow) or, without ext_authz, denied
	}{
		{name: "http provider", yaml: customPolicy("ext", "authz-http", "[/headers, /api/*]") + deny,
			wantExt: "outbound|8000||ext-authz.foo.svc.cluster.local",
			marked:  map[string]bool{"/headers": true, "/api/x": true, "/ip": false, "/admin": false}},
		{name: "grpc provider", yaml: customPolicy("ext", "authz-grpc", "[/headers]"),
			wantExt: "outbound|9000||ext-authz.foo.svc.cluster.local",
			marked:  map[string]bool{"/headers": true, "/ip": false}},
		{name: "unknown provider denies the rules", yaml: customPolicy("ext", "nope", "[/headers]") + deny,
			wantWarn: `CUSTOM provider "nope"`, marked: map[string]bool{"/headers": true, "/ip": false}},
		{name: "two providers deny", yaml: customPolicy("a", "authz-http", "[/a]") + customPolicy("b", "authz-grpc", "[/b]"),
			wantWarn: "only one provider per workload", marked: map[string]bool{"/a": true, "/b": true, "/c": false}},
		{name: "service not in registry", yaml: customPolicy("ext", "authz-http", "[/headers]"),
			lookup:   func(string, string) (string, bool) { return "", false },
			wantWarn: "not found in the registry", marked: map[string]bool{"/headers": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol, err := authz.TranslateWith(decode(t, tt.yaml), productpage(), authz.Options{Mesh: mesh, LookupService: tt.lookup})
			if err != nil {
				t.Fatal(err)
			}
			if w := strings.Join(pol.Warnings, "\n"); (tt.wantWarn == "") != (w == "") || !strings.Contains(w, tt.wantWarn) {
				t.Fatalf("warnings %q, want %q", w, tt.wantWarn)
			}
			fs := pol.HTTPFilters()
			var names []string
			for _, f := range fs {
				names = append(names, f.GetName())
			}
			if tt.wantExt != "" {
				if len(names) < 2 || names[0] != authz.FilterName || names[1] != authz.ExtAuthzFilterName {
					t.Fatalf("filters %v: want rbac(CUSTOM), ext_authz first", names)
				}
				if err := pol.ExtAuthz.Validate(); err != nil {
					t.Fatalf("ext_authz fails Envoy validation: %v", err)
				}
				c := pol.ExtAuthz.GetHttpService().GetServerUri().GetCluster()
				if c == "" {
					c = pol.ExtAuthz.GetGrpcService().GetEnvoyGrpc().GetClusterName()
				}
				if c != tt.wantExt {
					t.Fatalf("ext_authz cluster %q, want %q", c, tt.wantExt)
				}
				if pol.Custom.GetRules() != nil || pol.Custom.GetShadowRulesStatPrefix() != authz.ExtAuthzStatPrefix {
					t.Fatalf("CUSTOM rbac is not shadow-only: %v", pol.Custom)
				}
			} else if pol.ExtAuthz != nil || strings.Contains(strings.Join(names, ","), authz.ExtAuthzFilterName) {
				t.Fatalf("ext_authz emitted for a bad provider: %v", names)
			}
			if err := pol.Custom.Validate(); err != nil {
				t.Fatalf("CUSTOM rbac fails Envoy validation: %v", err)
			}
			e, err := rbac.New(pol.Custom)
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range tt.marked {
				d := e.Check(&rbac.Request{Method: "GET", Path: path})
				if tt.wantExt != "" {
					got := len(d.Shadow) == 1 && strings.HasPrefix(d.Shadow[0].Policy, authz.ExtAuthzPrefix) && d.Shadow[0].StatPrefix+rbac.ShadowEffectivePolicyKey == authz.ExtAuthzMetadataKey
					if got != want || !d.Allowed {
						t.Errorf("%s: marked=%v allowed=%v (%+v), want marked=%v", path, got, d.Allowed, d, want)
					}
					continue
				}
				if d.Allowed == want {
					t.Errorf("%s: allowed=%v, want denied=%v", path, d.Allowed, want)
				}
				if !d.Allowed {
					if ns, name, _, ok := authz.ParsePolicyName(d.Policy); !ok || ns != "default" || name == "" {
						t.Errorf("%s: deny policy %q does not parse", path, d.Policy)
					}
				}
			}
		})
	}
}

// TestCustomWithoutMesh: Translate (no mesh config) cannot resolve a
// provider, so CUSTOM rules deny rather than being skipped.
func TestCustomWithoutMesh(t *testing.T) {
	e, pol := engineFor(t, customPolicy("ext", "authz-http", "[/headers]"), productpage())
	if pol.ExtAuthz != nil || len(pol.Warnings) == 0 {
		t.Fatalf("ext_authz %v, warnings %v", pol.ExtAuthz, pol.Warnings)
	}
	if d := e.Check(&rbac.Request{Method: "GET", Path: "/headers"}); d.Allowed {
		t.Fatalf("/headers allowed: %+v", d)
	}
	if d := e.Check(&rbac.Request{Method: "GET", Path: "/ip"}); !d.Allowed {
		t.Fatalf("/ip denied: %+v", d)
	}
}
