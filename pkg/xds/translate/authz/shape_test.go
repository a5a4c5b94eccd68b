package authz_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

// TestEmittedShape pins the Envoy RBAC form of each Istio field (as Istio
// emits it), complementing the behavioural tests.
func TestEmittedShape(t *testing.T) {
	tests := []struct {
		rule string
		want []string
	}{
		{`from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}]`,
			[]string{`"authenticated":{"principalName":{"exact":"spiffe://cluster.local/ns/a/sa/b"}}`}},
		{`from: [{source: {principals: ["*"]}}]`, []string{`"safeRegex":{"regex":"spiffe://.+"}`}},
		{`from: [{source: {namespaces: ["foo"]}}]`, []string{`"safeRegex":{"regex":".*/ns/foo/.*"}`}},
		{`from: [{source: {ipBlocks: ["10.0.0.0/8"]}}]`, []string{`"directRemoteIp":{"addressPrefix":"10.0.0.0","prefixLen":8}`}},
		{`from: [{source: {remoteIpBlocks: ["1.2.3.4"]}}]`, []string{`"remoteIp":{"addressPrefix":"1.2.3.4","prefixLen":32}`}},
		{`from: [{source: {requestPrincipals: ["iss/sub"]}}]`,
			[]string{`"filter":"istio_authn"`, `"key":"request.auth.principal"`, `"exact":"iss/sub"`}},
		{`from: [{source: {notPrincipals: ["cluster.local/ns/a/sa/b"]}}]`, []string{`"notId":{"authenticated"`}},
		{`to: [{operation: {methods: ["GET"], paths: ["/api/*"]}}]`,
			[]string{`"andRules"`, `"name":":method","stringMatch":{"exact":"GET"}`, `"urlPath":{"path":{"prefix":"/api/"}}`}},
		{`to: [{operation: {paths: ["*.png"]}}]`, []string{`"urlPath":{"path":{"suffix":".png"}}`}},
		{`to: [{operation: {paths: ["/v1/{*}/x/{**}"]}}]`, []string{`"regex":"/v1/[^/]+/x/.*"`}},
		{`to: [{operation: {ports: ["8080"]}}]`, []string{`"destinationPort":8080`}},
		{`to: [{operation: {notMethods: ["DELETE"]}}]`, []string{`"notRule":{"header":{"name":":method"`}},
		{`when: [{key: "request.auth.claims[groups]", values: ["g1"]}]`,
			[]string{`"key":"request.auth.claims"`, `"key":"groups"`, `"listMatch":{"oneOf":{"stringMatch":{"exact":"g1"}}}`}},
		{`when: [{key: connection.sni, values: ["a.example"]}]`, []string{`"requestedServerName":{"exact":"a.example"}`}},
		{`when: [{key: destination.ip, values: ["10.0.0.1"]}]`, []string{`"destinationIp":{"addressPrefix":"10.0.0.1","prefixLen":32}`}},
	}
	for _, tt := range tests {
		y := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: default}\nspec:\n  rules:\n  - " + tt.rule + "\n"
		pol, err := authz.Translate(decode(t, y), productpage(), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(pol.Warnings) > 0 {
			t.Errorf("%s: warnings %v", tt.rule, pol.Warnings)
		}
		b, err := protojson.Marshal(pol.Allow)
		if err != nil {
			t.Fatal(err)
		}
		js := strings.ReplaceAll(string(b), " ", "")
		for _, w := range tt.want {
			if !strings.Contains(js, w) {
				t.Errorf("%s:\n%s\nmissing %s", tt.rule, js, w)
			}
		}
		if err := pol.Allow.Validate(); err != nil {
			t.Errorf("%s: generated RBAC fails Envoy validation: %v", tt.rule, err)
		}
	}
}
