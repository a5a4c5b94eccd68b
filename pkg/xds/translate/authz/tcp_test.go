package authz_test

import (
	"net/netip"
	"strings"
	"testing"

	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"

	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

// TestTCPSemantics checks Istio's TCP policy rules: TCP fields apply,
// HTTP-only fields drop an ALLOW rule and are ignored in a DENY rule.
func TestTCPSemantics(t *testing.T) {
	ap := func(name, action, rule string) string {
		return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: default}\nspec:\n  action: " + action + "\n  rules:\n  - " + rule + "\n---\n"
	}
	a, b := "spiffe://cluster.local/ns/default/sa/a", "spiffe://cluster.local/ns/other/sa/b"
	conn := func(principal, src string, port uint16) *listener.ConnInfo {
		return &listener.ConnInfo{Principal: principal, Source: netip.MustParseAddrPort(src + ":5000"), Destination: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port)}
	}
	tests := []struct {
		name, yaml string
		warn       string
		allowed    map[*listener.ConnInfo]bool
	}{
		{"allow principal", ap("p", "ALLOW", `from: [{source: {principals: ["cluster.local/ns/default/sa/a"]}}]`), "",
			map[*listener.ConnInfo]bool{conn(a, "10.0.0.2", 27017): true, conn(b, "10.0.0.2", 27017): false, conn("", "10.0.0.2", 27017): false}},
		{"allow namespace and port", ap("p", "ALLOW", `from: [{source: {namespaces: ["other"]}}]
    to: [{operation: {ports: ["27017"]}}]`), "",
			map[*listener.ConnInfo]bool{conn(b, "10.0.0.2", 27017): true, conn(b, "10.0.0.2", 3306): false, conn(a, "10.0.0.2", 27017): false}},
		{"allow with methods is dropped (allow nothing)", ap("p", "ALLOW", `from: [{source: {principals: ["cluster.local/ns/default/sa/a"]}}]
    to: [{operation: {methods: ["GET"]}}]`), "methods is HTTP only",
			map[*listener.ConnInfo]bool{conn(a, "10.0.0.2", 27017): false}},
		{"deny with paths ignores them", ap("p", "DENY", `from: [{source: {ipBlocks: ["10.1.0.0/16"]}}]
    to: [{operation: {paths: ["/admin"]}}]`), "paths is HTTP only",
			map[*listener.ConnInfo]bool{conn(a, "10.1.2.3", 27017): false, conn(a, "10.0.0.2", 27017): true}},
		{"deny on a request header condition denies all", ap("p", "DENY", `when: [{key: "request.headers[x-evil]", values: ["1"]}]`), "HTTP only",
			map[*listener.ConnInfo]bool{conn(a, "10.0.0.2", 27017): false}},
		{"allow requestPrincipals dropped", ap("p", "ALLOW", `from: [{source: {requestPrincipals: ["iss/sub"]}}]`) +
			ap("q", "ALLOW", `when: [{key: source.ip, values: ["10.0.0.0/24"]}]`), "requestPrincipals is HTTP only",
			map[*listener.ConnInfo]bool{conn(a, "10.0.0.2", 27017): true, conn(a, "10.9.0.2", 27017): false}},
		{"custom without a provider denies what its rules match", customPolicy("ext", "authz-http", "[/x]"), `connections its rules match are denied`,
			map[*listener.ConnInfo]bool{conn(a, "10.0.0.2", 27017): false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol, err := authz.TranslateTCP(decode(t, tt.yaml), productpage(), authz.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if w := strings.Join(pol.Warnings, "\n"); !strings.Contains(w, tt.warn) || (tt.warn == "") != (w == "") {
				t.Fatalf("warnings %q, want %q", w, tt.warn)
			}
			var cfgs []*rbachttp.RBAC
			for _, c := range []*rbacnet.RBAC{pol.Audit, pol.Custom, pol.Deny, pol.Allow} {
				if c == nil {
					continue
				}
				if err := c.Validate(); err != nil {
					t.Fatalf("network RBAC fails Envoy validation: %v", err)
				}
				cfgs = append(cfgs, &rbachttp.RBAC{Rules: c.GetRules()})
			}
			for _, f := range pol.Filters() {
				if f.GetName() != authz.NetworkFilterName && f.GetName() != authz.NetworkExtAuthzFilterName {
					t.Fatalf("filter %q", f.GetName())
				}
			}
			e, err := rbac.New(cfgs...)
			if err != nil {
				t.Fatal(err)
			}
			for c, want := range tt.allowed {
				if d := e.Check(rbac.ConnRequest(c)); d.Allowed != want {
					t.Errorf("%s from %s to :%d: allowed=%v (%+v), want %v", c.Principal, c.Source, c.Destination.Port(), d.Allowed, d, want)
				}
			}
		})
	}
}

// TestTCPCustom: on TCP, CUSTOM with a gRPC provider is a shadow network
// RBAC filter marking connections plus envoy.filters.network.ext_authz;
// an HTTP provider is not applied to TCP.
func TestTCPCustom(t *testing.T) {
	mesh, err := meshconfig.Parse("mesh.yaml", []byte(customMesh))
	if err != nil {
		t.Fatal(err)
	}
	y := "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: default}\nspec:\n" +
		"  action: CUSTOM\n  provider: {name: PROVIDER}\n  rules:\n  - from: [{source: {namespaces: [other]}}]\n"
	pol, err := authz.TranslateTCP(decode(t, strings.ReplaceAll(y, "PROVIDER", "authz-grpc")), productpage(), authz.Options{Mesh: mesh})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range pol.Filters() {
		names = append(names, f.GetName())
	}
	if strings.Join(names, ",") != authz.NetworkFilterName+","+authz.NetworkExtAuthzFilterName || len(pol.Warnings) != 0 {
		t.Fatalf("filters %v, warnings %v", names, pol.Warnings)
	}
	if err := pol.ExtAuthz.Validate(); err != nil {
		t.Fatal(err)
	}
	if c := pol.ExtAuthz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); c != "outbound|9000||ext-authz.foo.svc.cluster.local" ||
		pol.ExtAuthz.GetFilterEnabledMetadata().GetFilter() != authz.NetworkFilterName {
		t.Fatalf("network ext_authz %v", pol.ExtAuthz)
	}
	e, err := rbac.New(&rbachttp.RBAC{ShadowRules: pol.Custom.GetShadowRules(), ShadowRulesStatPrefix: pol.Custom.GetShadowRulesStatPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"spiffe://cluster.local/ns/other/sa/x": true, "spiffe://cluster.local/ns/default/sa/x": false} {
		d := e.Check(&rbac.Request{Principal: p})
		if got := len(d.Shadow) == 1; got != want || !d.Allowed {
			t.Errorf("%s: marked %v (%+v), want %v", p, got, d, want)
		}
	}
	pol, err = authz.TranslateTCP(decode(t, strings.ReplaceAll(y, "PROVIDER", "authz-http")), productpage(), authz.Options{Mesh: mesh})
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.Filters()) != 0 || !strings.Contains(strings.Join(pol.Warnings, ""), "not applied to TCP") {
		t.Fatalf("HTTP provider on TCP: filters %v, warnings %v", pol.Filters(), pol.Warnings)
	}
}
