package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const authzPolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - when: [{key: "request.headers[x-evil]", values: ["1"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {namespaces: ["other"]}}]
  - from: [{source: {principals: ["cluster.local/ns/front/sa/ui"]}}]
    to: [{operation: {methods: ["GET"]}}]
    when: [{key: "request.auth.claims[role]", values: ["user"]}]
`

func TestAuthzCheckCommand(t *testing.T) {
	base := []string{"authz", "check", "-f", "-", "--to-labels", "app=web", "--to-namespace", "shop"}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"allowed by principal rule", []string{"--from-principal", "spiffe://cluster.local/ns/front/sa/ui", "--path", "/x", "--jwt-claims", "role=user"},
			0, "ALLOWED by AuthorizationPolicy shop/allow-frontend rule 1"},
		{"principal without spiffe prefix", []string{"--from-principal", "cluster.local/ns/front/sa/ui", "--jwt-claims", "role=user"},
			0, "ALLOWED by AuthorizationPolicy shop/allow-frontend rule 1"},
		{"wrong method", []string{"--from-principal", "cluster.local/ns/front/sa/ui", "--method", "POST", "--jwt-claims", "role=user"},
			2, "DENIED: ALLOW policies apply and none matched"},
		{"missing claim", []string{"--from-principal", "cluster.local/ns/front/sa/ui"},
			2, "DENIED: ALLOW policies apply"},
		{"denied by path", []string{"--from-principal", "spiffe://cluster.local/ns/other/sa/x", "--path", "/public/../admin"},
			2, "DENIED by AuthorizationPolicy shop/deny-admin rule 0"},
		{"denied by header", []string{"--from-principal", "spiffe://cluster.local/ns/other/sa/x", "--header", "x-evil=1"},
			2, "DENIED by AuthorizationPolicy shop/deny-admin rule 1"},
		{"namespace rule", []string{"--from-principal", "spiffe://cluster.local/ns/other/sa/x", "--path", "/%61pi"},
			0, `normalized (BASE) to "/api"`},
		{"invalid path", []string{"--path", "/a%zz"}, 2, "REJECTED (400)"},
		{"other workload has no policies", []string{"--to-labels", "app=db", "--path", "/admin"}, 0, "ALLOWED: no ALLOW or DENY policy applies"},
		{"bad header flag", []string{"--header", "novalue"}, 1, "want KEY=VALUE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runWeft(t, authzPolicies, append(append([]string{}, base...), tt.args...)...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Errorf("code %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant %q", code, tt.code, out, errOut, tt.want)
			}
		})
	}
}

const customPolicies = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: CUSTOM
  provider: {name: authz-http}
  rules:
  - to: [{operation: {paths: ["/headers", "/headers/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/headers/admin"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db, namespace: shop}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/web"]}}]
    to: [{operation: {ports: ["5432"]}}]
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/report"]}}]
    to: [{operation: {methods: ["GET"]}}]
`

// TestAuthzCheckCustomAndTCP: the check explains CUSTOM (which rule sends
// the request to which provider, what follows the provider's answer, an
// unusable provider denying) and TCP decisions.
func TestAuthzCheckCustomAndTCP(t *testing.T) {
	mesh := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(mesh, []byte("extensionProviders:\n- name: authz-http\n  envoyExtAuthzHttp: {service: ext-authz.shop.svc.cluster.local, port: 8000}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	web := []string{"authz", "check", "-f", "-", "--to-labels", "app=web", "--to-namespace", "shop", "--mesh-config", mesh}
	db := []string{"authz", "check", "-f", "-", "--to-labels", "app=db", "--to-namespace", "shop", "--tcp"}
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"custom, provider allows", append(web, "--path", "/headers"), 0, []string{
			`CUSTOM: AuthorizationPolicy shop/ext-authz rule 0 sends the request to ext_authz provider "authz-http" (HTTP, cluster outbound|8000||ext-authz.shop.svc.cluster.local)`,
			"ALLOWED: no ALLOW or DENY policy applies"}},
		{"custom, provider denies", append(web, "--path", "/headers", "--ext-authz-result", "deny"), 2, []string{`DENIED by ext_authz provider "authz-http"`}},
		{"custom passes, DENY wins", append(web, "--path", "/headers/admin"), 2, []string{"sends the request to ext_authz", "DENIED by AuthorizationPolicy shop/deny-admin rule 0"}},
		{"custom rule does not match", append(web, "--path", "/ip", "--ext-authz-result", "deny"), 0, []string{`CUSTOM: no rule matches; ext_authz provider "authz-http" is not asked`, "ALLOWED"}},
		{"custom without the provider denies", []string{"authz", "check", "-f", "-", "--to-labels", "app=web", "--to-namespace", "shop", "--path", "/headers"}, 2,
			[]string{`"authz-http" is not in meshConfig.extensionProviders`, "DENIED by AuthorizationPolicy shop/ext-authz rule 0: its provider \"authz-http\" cannot be used"}},
		{"tcp allowed principal and port", append(db, "--from-principal", "cluster.local/ns/shop/sa/web", "--port", "5432"), 0,
			[]string{"ALLOWED (TCP) by AuthorizationPolicy shop/db rule 0"}},
		{"tcp wrong port", append(db, "--from-principal", "cluster.local/ns/shop/sa/web", "--port", "6000"), 2,
			[]string{"DENIED (TCP, connection closed): ALLOW policies apply and none matched"}},
		{"tcp rule with methods is dropped", append(db, "--from-principal", "cluster.local/ns/shop/sa/report", "--port", "5432"), 2,
			[]string{"methods is HTTP only", "rules[1]: rule dropped", "DENIED (TCP, connection closed)"}},
		{"tcp custom with the http provider is not applied", append(append([]string{}, web...), "--tcp", "--from-principal", "cluster.local/ns/shop/sa/web"), 2,
			[]string{`provider "authz-http" is HTTP; not applied to TCP traffic`, "DENIED (TCP, connection closed) by AuthorizationPolicy shop/deny-admin rule 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runWeft(t, customPolicies, tt.args...)
			for _, w := range tt.want {
				if !strings.Contains(out+errOut, w) {
					t.Errorf("missing %q", w)
				}
			}
			if code != tt.code || t.Failed() {
				t.Errorf("code %d (want %d)\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
		})
	}
}

// TestAnalyzeCustomProvider: weft analyze --mesh-config reports a CUSTOM
// policy whose provider the mesh config lacks (its rules would deny).
func TestAnalyzeCustomProvider(t *testing.T) {
	mesh := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(mesh, []byte("extensionProviders:\n- name: authz-grpc\n  envoyExtAuthzGrpc: {service: ext-authz.shop.svc.cluster.local, port: 9000}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runWeft(t, customPolicies, "analyze", "-f", "-", "--mesh-config", mesh)
	if code != 1 || !strings.Contains(out, `[WEFT0108] AuthorizationPolicy shop/ext-authz: spec.provider.name: extension provider not found: "authz-http"`) {
		t.Errorf("code %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if out, errOut, code := runWeft(t, customPolicies, "analyze", "-f", "-"); code != 0 || strings.Contains(out, "WEFT0108") {
		t.Errorf("without --mesh-config: code %d\n%s%s", code, out, errOut)
	}
}
