package rbac

import (
	"net/http"
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regex(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

func anyPrincipal() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}
func anyPerm() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }

func perm(p *rbacv3.Permission) *rbachttp.RBAC {
	return &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{p}, Principals: []*rbacv3.Principal{anyPrincipal()}}}}}
}

func princ(p *rbacv3.Principal) *rbachttp.RBAC {
	return &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{p}}}}}
}

func hdr(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

func TestMatchers(t *testing.T) {
	base := func() *Request {
		return &Request{Method: "GET", Host: "svc:80", Path: "/a", Header: http.Header{"X-Role": {"admin"}, "X-Multi": {"a", "b"}, "X-Num": {"42"}},
			Principal: "spiffe://cluster.local/ns/a/sa/b", SourceIP: netip.MustParseAddr("10.1.2.3"), RemoteIP: netip.MustParseAddr("1.2.3.4"),
			DestIP: netip.MustParseAddr("10.9.9.9"), DestPort: 8080, SNI: "outbound_.80_._.svc",
			RequestPrincipal: "iss/sub", Audiences: []string{"aud1"}, Presenter: "cli", Claims: map[string][]string{"groups": {"g1", "g2"}, "org.team": {"t"}}}
	}
	cidr := func(s string, n uint32) *corev3.CidrRange {
		return &corev3.CidrRange{AddressPrefix: s, PrefixLen: wrapperspb.UInt32(n)}
	}
	meta := func(filter string, v *matcherv3.ValueMatcher, keys ...string) *matcherv3.MetadataMatcher {
		m := &matcherv3.MetadataMatcher{Filter: filter, Value: v}
		for _, k := range keys {
			m.Path = append(m.Path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
		}
		return m
	}
	strV := func(s *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: s}}
	}
	listV := func(s *matcherv3.StringMatcher) *matcherv3.ValueMatcher {
		return &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: strV(s)}}}}
	}
	tests := []struct {
		name string
		cfg  *rbachttp.RBAC
		want bool
	}{
		{"header exact", perm(hdr(&routev3.HeaderMatcher{Name: "x-role", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("admin")}})), true},
		{"header exact miss", perm(hdr(&routev3.HeaderMatcher{Name: "x-role", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("user")}})), false},
		{"header multi joined", perm(hdr(&routev3.HeaderMatcher{Name: "x-multi", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "a,b"}})), true},
		{"header ignore case", perm(hdr(&routev3.HeaderMatcher{Name: "X-ROLE", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "ADMIN"}, IgnoreCase: true}}})), true},
		{"header invert", perm(hdr(&routev3.HeaderMatcher{Name: "x-role", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "adm"}})), false},
		{"header missing inverted never matches", perm(hdr(&routev3.HeaderMatcher{Name: "x-none", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "x"}})), false},
		{"header present", perm(hdr(&routev3.HeaderMatcher{Name: "x-role", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})), true},
		{"header absent", perm(hdr(&routev3.HeaderMatcher{Name: "x-none", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}})), false},
		{"header range", perm(hdr(&routev3.HeaderMatcher{Name: "x-num", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 40, End: 43}}})), true},
		{":method", perm(hdr(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}})), true},
		{":authority regex", perm(hdr(&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regex(`svc(:[0-9]+)?`)}})), true},
		{"regex is anchored", perm(hdr(&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: regex(`sv`)}})), false},
		{"url_path", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/a")}}}}), true},
		{"dest port", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}), true},
		{"dest port miss", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}}), false},
		{"dest ip", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.9.0.0", 16)}}), true},
		{"sni", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exact("outbound_.80_._.svc")}}), true},
		{"not rule", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: anyPerm()}}), false},
		{"and rules", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{anyPerm(), {Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 1}}}}}}), false},
		{"or rules", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 1}}, anyPerm()}}}}), true},
		{"authenticated", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: regex(`.*/ns/a/.*`)}}}), true},
		{"authenticated other ns", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: regex(`.*/ns/b/.*`)}}}), false},
		{"direct remote ip", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.0", 8)}}), true},
		{"source ip", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("10.1.2.3", 32)}}), true},
		{"remote ip uses xff client", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("1.2.3.4", 32)}}), true},
		{"remote ip not direct", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}), false},
		{"not id", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: anyPrincipal()}}), false},
		{"principal header", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "x-role", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "admin"}}}}), true},
		{"request principal", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(AuthnFilter, strV(exact("iss/sub")), "request.auth.principal")}}), true},
		{"audiences list", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(AuthnFilter, listV(exact("aud1")), "request.auth.audiences")}}), true},
		{"presenter", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(AuthnFilter, strV(exact("cli")), "request.auth.presenter")}}), true},
		{"claims list", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(AuthnFilter, listV(exact("g2")), "request.auth.claims", "groups")}}), true},
		{"nested claim", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(AuthnFilter, listV(exact("t")), "request.auth.claims", "org", "team")}}), true},
		{"jwt_authn payload claim", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(JWTFilter, listV(exact("g1")), "payload", "groups")}}), true},
		{"claims miss", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: meta(AuthnFilter, listV(exact("g3")), "request.auth.claims", "groups")}}), false},
		{"metadata invert", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{Filter: AuthnFilter, Invert: true,
			Path:  []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "request.auth.principal"}}},
			Value: strV(exact("iss/sub"))}}}), false},
	}
	for _, tt := range tests {
		e, err := New(tt.cfg)
		if err != nil {
			t.Fatalf("%s: New: %v", tt.name, err)
		}
		if got := e.Check(base()).Allowed; got != tt.want {
			t.Errorf("%s: allowed=%v want %v", tt.name, got, tt.want)
		}
	}
}

func TestPlaintextNotAuthenticated(t *testing.T) {
	e, err := New(princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}}))
	if err != nil {
		t.Fatal(err)
	}
	if e.Check(&Request{Path: "/"}).Allowed {
		t.Error("plaintext request matched authenticated")
	}
	if !e.Check(&Request{Path: "/", Principal: "spiffe://x/ns/a/sa/b"}).Allowed {
		t.Error("mTLS request did not match authenticated")
	}
}

func TestDecisionOrder(t *testing.T) {
	deny := &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"b-deny": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 1}}}, Principals: []*rbacv3.Principal{anyPrincipal()}},
		"a-deny": {Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{anyPrincipal()}},
	}}}
	allow := perm(anyPerm())
	shadow := &rbachttp.RBAC{ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"shadow": {Permissions: []*rbacv3.Permission{anyPerm()}, Principals: []*rbacv3.Principal{anyPrincipal()}}}}}
	e, err := New(shadow, deny, nil, allow)
	if err != nil {
		t.Fatal(err)
	}
	d := e.Check(&Request{Path: "/", DestPort: 1})
	if d.Allowed || d.Policy != "a-deny" || d.Action != "DENY" || len(d.Audited) != 1 || d.Audited[0] != "shadow" {
		t.Fatalf("decision %+v", d)
	}
	empty, err := New(&rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}})
	if err != nil {
		t.Fatal(err)
	}
	if d := empty.Check(&Request{Path: "/"}); d.Allowed {
		t.Fatalf("ALLOW without policies allowed: %+v", d)
	}
	var none *Engine
	if !none.Check(&Request{}).Allowed || !none.Empty() {
		t.Fatal("nil engine denies")
	}
}

func TestNewErrors(t *testing.T) {
	bad := []*rbachttp.RBAC{
		perm(&rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: regex("(")}}}}),
		princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "nope"}}}),
		princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{}}),
		princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{Filter: "other"}}}),
		{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"c": {Condition: nil, CheckedCondition: nil, Permissions: []*rbacv3.Permission{{}}}}}},
	}
	for i, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("config %d accepted", i)
		}
	}
}

func TestRemoteIPFrom(t *testing.T) {
	direct := netip.MustParseAddr("10.0.0.1")
	for _, tt := range []struct {
		xff  string
		hops int
		want string
	}{
		{"1.1.1.1, 2.2.2.2", 0, "10.0.0.1"},
		{"1.1.1.1, 2.2.2.2", 1, "2.2.2.2"},
		{"1.1.1.1, 2.2.2.2", 2, "1.1.1.1"},
		{"1.1.1.1", 3, "10.0.0.1"},
		{"garbage", 1, "10.0.0.1"},
	} {
		if got := RemoteIPFrom(direct, tt.xff, tt.hops); got.String() != tt.want {
			t.Errorf("RemoteIPFrom(%q, %d) = %v, want %s", tt.xff, tt.hops, got, tt.want)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	deny := &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"deny-admin": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/admin")}}}},
			{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin/"}}}}}},
		}}}}}, Principals: []*rbacv3.Principal{anyPrincipal()}},
	}}}
	allow := &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"ns-a": {Permissions: []*rbacv3.Permission{hdr(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("GET")}})},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: regex(`.*/ns/a/.*`)}}}}},
	}}}
	e, err := New(deny, allow)
	if err != nil {
		b.Fatal(err)
	}
	r := &Request{Method: "GET", Path: "/api/items", Header: http.Header{"X-Role": {"x"}}, Principal: "spiffe://cluster.local/ns/a/sa/b"}
	b.ReportAllocs()
	for b.Loop() {
		if !e.Check(r).Allowed {
			b.Fatal("denied")
		}
	}
}
