package router

import (
	"errors"
	"net/http"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func route(name string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c-" + name}}}}
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func testTable(t testing.TB) *Table {
	hdr := prefix("/")
	hdr.Headers = []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}}}
	inv := prefix("/inv")
	inv.Headers = []*routev3.HeaderMatcher{{Name: "x-canary", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true}}
	q := prefix("/q")
	q.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "v", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("2")}}}
	ci := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/CASE"}, CaseSensitive: wrapperspb.Bool(false)}
	rc := &routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{
		{Name: "reviews", Domains: []string{"reviews", "reviews:9080", "reviews.default.svc.cluster.local"}, Routes: []*routev3.Route{
			route("regex", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/items/[0-9]+"}}}),
			route("exact", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}}),
			route("sep", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/sep"}}),
			route("ci", ci),
			route("inv", inv),
			route("query", q),
			route("jason", hdr),
			route("default", prefix("/")),
		}},
		{Name: "wild-suffix", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{route("suffix", prefix("/"))}},
		{Name: "wild-longer", Domains: []string{"*.api.example.com"}, Routes: []*routev3.Route{route("longer", prefix("/"))}},
		{Name: "wild-prefix", Domains: []string{"foo.*"}, Routes: []*routev3.Route{route("prefix", prefix("/"))}},
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{route("any", prefix("/"))}},
	}}
	tb, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestMatch(t *testing.T) {
	tb := testTable(t)
	tests := []struct {
		name, host, path, query string
		hdr                     http.Header
		want                    string
	}{
		{"exact host default route", "reviews", "/", "", nil, "default"},
		{"host with port", "reviews:9080", "/x", "", nil, "default"},
		{"host with unknown port falls back to bare host", "reviews:1234", "/x", "", nil, "default"},
		{"header match", "reviews", "/r", "", http.Header{"End-User": {"jason"}}, "jason"},
		{"header mismatch", "reviews", "/r", "", http.Header{"End-User": {"bob"}}, "default"},
		{"regex whole path", "reviews", "/items/42", "", nil, "regex"},
		{"regex partial is no match", "reviews", "/items/42/x", "", nil, "default"},
		{"exact path", "reviews", "/exact", "", nil, "exact"},
		{"exact path is not a prefix", "reviews", "/exact/more", "", nil, "default"},
		{"path separated prefix", "reviews", "/sep/a", "", nil, "sep"},
		{"path separated prefix needs a separator", "reviews", "/separate", "", nil, "default"},
		{"case insensitive path", "reviews", "/case", "", nil, "ci"},
		{"inverted present match: header absent", "reviews", "/inv", "", nil, "inv"},
		{"inverted present match: header present", "reviews", "/inv", "", http.Header{"X-Canary": {"1"}}, "default"},
		{"query param", "reviews", "/q", "a=1&v=2", nil, "query"},
		{"query param mismatch", "reviews", "/q", "v=3", nil, "default"},
		{"suffix wildcard", "a.example.com", "/", "", nil, "suffix"},
		{"longest suffix wins", "x.api.example.com", "/", "", nil, "longer"},
		{"prefix wildcard", "foo.bar", "/", "", nil, "prefix"},
		{"catch-all", "other", "/", "", nil, "any"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hdr == nil {
				tc.hdr = http.Header{}
			}
			_, r := tb.Match(&Request{Host: tc.host, Path: tc.path, RawQuery: tc.query, Method: "GET", Header: tc.hdr})
			if r == nil {
				t.Fatalf("no route, want %q", tc.want)
			}
			if r.Name != tc.want {
				t.Fatalf("route %q, want %q", r.Name, tc.want)
			}
		})
	}
}

func TestNoVirtualHost(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{route("a", prefix("/"))}}}}
	tb, err := Compile(rc)
	if err != nil {
		t.Fatal(err)
	}
	if vh, r := tb.Match(&Request{Host: "b", Path: "/", Header: http.Header{}}); vh != nil || r != nil {
		t.Fatalf("got %v %v, want no match", vh, r)
	}
}

func TestCompileRejects(t *testing.T) {
	badRegex := route("bad", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}})
	badRetry := route("retry", prefix("/"))
	badRetry.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,bogus"}
	hdrCluster := &routev3.Route{Name: "h", Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_ClusterHeader{ClusterHeader: "x-cluster"}}}}
	otherPrio := route("prio", prefix("/"))
	otherPrio.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: "custom.priority",
		ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(t, wrapperspb.String("x"))}}}
	zeroFreq := route("freq", prefix("/"))
	zeroFreq.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", RetryPriority: &routev3.RetryPolicy_RetryPriority{Name: "envoy.retry_priorities.previous_priorities",
		ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(t, &previousprioritiesv3.PreviousPrioritiesConfig{})}}}
	tests := []struct {
		name        string
		r           *routev3.Route
		unsupported bool
	}{
		{"invalid regex", badRegex, false},
		{"unknown retry priority", otherPrio, true},
		{"previous_priorities without update_frequency", zeroFreq, false},
		{"unknown retry_on", badRetry, true},
		{"cluster_header", hdrCluster, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(&routev3.RouteConfiguration{Name: "x", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{tc.r}}}})
			if err == nil {
				t.Fatal("compiled, want an error")
			}
			if errors.Is(err, ErrUnsupported) != tc.unsupported {
				t.Fatalf("errors.Is(ErrUnsupported) = %v for %v", !tc.unsupported, err)
			}
		})
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestStatPrefixAndRetryPriority: a route's stat_prefix roots its stats
// under its virtual host; previous_priorities' update frequency is kept.
func TestStatPrefixAndRetryPriority(t *testing.T) {
	r := route("api", prefix("/api"))
	r.StatPrefix = "reviews-api"
	r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3), RetryPriority: &routev3.RetryPolicy_RetryPriority{
		Name: "envoy.retry_priorities.previous_priorities", ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{
			TypedConfig: mustAny(t, &previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})}}}
	tb, err := Compile(&routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{{Name: "reviews:9080", Domains: []string{"*"},
		Routes: []*routev3.Route{r, route("other", prefix("/"))}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, got := tb.Match(&Request{Host: "reviews", Path: "/api/x", Method: http.MethodGet})
	if got.StatPrefix != "vhost.reviews:9080.route.reviews-api" || got.Forward.Retry.PreviousPriorities != 2 {
		t.Fatalf("stat prefix %q, previous priorities %d", got.StatPrefix, got.Forward.Retry.PreviousPriorities)
	}
	if _, other := tb.Match(&Request{Host: "reviews", Path: "/", Method: http.MethodGet}); other.StatPrefix != "" {
		t.Fatalf("route without stat_prefix has %q", other.StatPrefix)
	}
}

func TestRewrite(t *testing.T) {
	f := &Forward{PrefixRewrite: "/v2/", matchPfx: "/api/"}
	if got := f.RewritePath("/api/x"); got != "/v2/x" {
		t.Fatalf("prefix rewrite: %q", got)
	}
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"},
		RegexRewrite: &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/service/([^/]+)(/.*)$"}, Substitution: "\\2/instance/\\1"}}
	f, err := compileForward(a, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.RewritePath("/service/foo/v1/api"); got != "/v1/api/instance/foo" {
		t.Fatalf("regex rewrite: %q", got)
	}
}

func TestPickClusterWeights(t *testing.T) {
	f := &Forward{Clusters: []WeightedCluster{{Name: "a", Weight: 25}, {Name: "b", Weight: 75}}, totalWeight: 100}
	counts := map[string]int{}
	for i := uint32(0); i < 100; i++ {
		counts[f.PickCluster(i).Name]++
	}
	if counts["a"] != 25 || counts["b"] != 75 {
		t.Fatalf("counts %v", counts)
	}
}

func BenchmarkMatch(b *testing.B) {
	tb := testTable(b)
	req := &Request{Host: "reviews:9080", Path: "/reviews/1", Method: "GET", Header: http.Header{"End-User": {"jason"}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, r := tb.Match(req); r == nil || r.Name != "jason" {
			b.Fatal("wrong route")
		}
	}
}

func BenchmarkMatchRegex(b *testing.B) {
	tb := testTable(b)
	req := &Request{Host: "reviews", Path: "/items/12345", Method: "GET", Header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		if _, r := tb.Match(req); r == nil || r.Name != "regex" {
			b.Fatal("wrong route")
		}
	}
}
