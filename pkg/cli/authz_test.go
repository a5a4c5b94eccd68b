package cli

import (
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
