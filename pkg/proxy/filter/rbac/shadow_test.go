package rbac

import (
	"net/http"
	"net/http/httptest"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/filter/dynmeta"
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
