package rbac

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/filter/dynmeta"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// TestShadowMarksRequest: shadow rules with a stat prefix (Istio's CUSTOM
// marking) never deny, and record the matched policy as dynamic metadata
// PREFIX+shadow_effective_policy_id for the ext_authz filter.
func TestShadowMarksRequest(t *testing.T) {
	path := &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
		Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "/headers"}}}}}}
	cfg := &rbachttp.RBAC{ShadowRulesStatPrefix: "istio_ext_authz_", ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"istio-ext-authz-ns[foo]-policy[p]-rule[0]": {Permissions: []*rbacv3.Permission{path}, Principals: []*rbacv3.Principal{anyPrincipal()}}}}}
	tc, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Factory(nil)(tc)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"/headers": "istio-ext-authz-ns[foo]-policy[p]-rule[0]", "/ip": ""} {
		r := httptest.NewRequest(http.MethodGet, p, nil)
		w := httptest.NewRecorder()
		if f.Filter(w, r) {
			t.Fatalf("%s: shadow rules answered %d", p, w.Code)
		}
		got, _ := dynmeta.Get(r.Context(), FilterName, "istio_ext_authz_"+ShadowEffectivePolicyKey)
		if got != want {
			t.Errorf("%s: marker %q, want %q", p, got, want)
		}
	}
}

// TestNetworkFilter: a network RBAC config decides on the connection's
// peer principal and reports Envoy's termination details.
func TestNetworkFilter(t *testing.T) {
	princ := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://cluster.local/ns/default/sa/a"}}}}}
	allow := &rbacnet.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[p]-rule[0]": {Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{princ}}}}}
	tc, err := anypb.New(allow)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NetworkFactory(nil)(tc)
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("127.0.0.1:4000")
	if ok, d := f.CheckConn(&listener.ConnInfo{Principal: "spiffe://cluster.local/ns/default/sa/a", Source: src}); !ok || d != "" {
		t.Errorf("principal a: %v %q", ok, d)
	}
	for _, p := range []string{"spiffe://cluster.local/ns/default/sa/b", ""} {
		if ok, d := f.CheckConn(&listener.ConnInfo{Principal: p, Source: src}); ok || d != "rbac_access_denied_matched_policy[none]" {
			t.Errorf("principal %q: %v %q", p, ok, d)
		}
	}
	cont, _ := anypb.New(&rbacnet.RBAC{EnforcementType: rbacnet.RBAC_CONTINUOUS, Rules: allow.Rules})
	if _, err := NetworkFactory(nil)(cont); err == nil {
		t.Error("CONTINUOUS enforcement accepted")
	}
}
