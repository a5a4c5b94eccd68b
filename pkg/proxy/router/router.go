// Package router compiles Envoy RouteConfigurations into immutable route
// tables and matches requests against them. Regular expressions are
// compiled once; matching a request does not allocate in the common cases.
package router

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"regexp"
	"sort"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Filter names used in typed_per_filter_config.
const (
	FaultFilter = "envoy.filters.http.fault"
	CorsFilter  = "envoy.filters.http.cors"
)

// DefaultTimeout is Envoy's route timeout when none is configured.
const DefaultTimeout = 15 * time.Second

// ErrUnsupported marks configuration the proxy cannot execute.
var ErrUnsupported = errors.New("unsupported")

// Table is one compiled RouteConfiguration. It is immutable and safe for
// concurrent use.
type Table struct {
	Name     string
	exact    map[string]*VirtualHost
	suffixes []domainPattern // "*.example.com" → ".example.com", longest first
	prefixes []domainPattern // "foo.*" → "foo.", longest first
	any      *VirtualHost
	// Hosts lists the virtual hosts in configuration order.
	Hosts []*VirtualHost
}

type domainPattern struct {
	s  string
	vh *VirtualHost
}

// VirtualHost is a compiled virtual host.
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []*Route
	Headers HeaderOps
	Cors    *Cors
}

// HeaderOps adds and removes request and response headers.
type HeaderOps struct {
	RequestAdd     []HeaderValue
	RequestRemove  []string
	ResponseAdd    []HeaderValue
	ResponseRemove []string
}

// HeaderValue is one header to add; Append false overwrites.
type HeaderValue struct {
	Key, Value string
	Append     bool
}

// Route is a compiled route: a match and an action (Forward, Redirect or
// Direct; exactly one is non-nil).
type Route struct {
	Name string
	// match
	prefix, path, sepPrefix string
	regex                   *regexp.Regexp
	caseInsensitive         bool
	headers                 []headerMatcher
	queries                 []queryMatcher

	Forward  *Forward
	Redirect *Redirect
	Direct   *Direct
	Headers  HeaderOps
	Fault    *Fault
	Cors     *Cors
	// StatPrefix, when the route has a stat_prefix (Istio's
	// HTTPMatchRequest.statPrefix), roots its statistics:
	// "vhost.VHOST.route.PREFIX"; empty otherwise.
	StatPrefix string
}

// Forward is a route action to one or more clusters.
type Forward struct {
	Clusters      []WeightedCluster
	totalWeight   uint32
	PrefixRewrite string
	RegexRewrite  *regexp.Regexp
	RegexSubst    string
	HostRewrite   string
	// Timeout is the whole-request timeout; 0 disables it.
	Timeout  time.Duration
	Retry    *RetryPolicy
	Mirrors  []Mirror
	Hash     []HashPolicy
	matchPfx string // the route's prefix, for prefix_rewrite
}

// WeightedCluster is one target of a forward action.
type WeightedCluster struct {
	Name    string
	Weight  uint32
	Headers HeaderOps
}

// RetryOn bits.
const (
	Retry5xx = 1 << iota
	RetryGatewayError
	RetryConnectFailure
	RetryRefusedStream
	RetryRetriableStatusCodes
	RetryReset
	RetryRetriable4xx
	RetryGRPCUnavailable
	RetryGRPCCancelled
	RetryGRPCDeadlineExceeded
	RetryGRPCResourceExhausted
)

var retryOnNames = map[string]int{
	"5xx": Retry5xx, "gateway-error": RetryGatewayError, "connect-failure": RetryConnectFailure,
	"refused-stream": RetryRefusedStream, "retriable-status-codes": RetryRetriableStatusCodes,
	"reset": RetryReset, "retriable-4xx": RetryRetriable4xx, "unavailable": RetryGRPCUnavailable,
	"cancelled": RetryGRPCCancelled, "deadline-exceeded": RetryGRPCDeadlineExceeded,
	"resource-exhausted": RetryGRPCResourceExhausted,
}

// RetryPolicy is a compiled retry_policy.
type RetryPolicy struct {
	On            int
	NumRetries    int
	PerTryTimeout time.Duration
	StatusCodes   []int
	// PreviousPriorities is the update_frequency of Envoy's
	// previous_priorities retry priority (Istio's retryRemoteLocalities),
	// 0 without it: from attempt N = PreviousPriorities on, every N-th
	// attempt excludes the priorities of the hosts tried so far, and later
	// attempts keep that exclusion until the next update.
	PreviousPriorities int
}

// Mirror is a request_mirror_policy: Fraction in parts per million.
type Mirror struct {
	Cluster  string
	Fraction uint32
}

// HashPolicy selects what a consistent-hash load balancer hashes.
type HashPolicy struct {
	Header, Cookie, QueryParam string
	SourceIP, Terminal         bool
}

// Redirect is a redirect action.
type Redirect struct {
	Scheme, Host, Path, PrefixRewrite string
	Port                              uint32
	Code                              int
	StripQuery                        bool
	matchPfx                          string
}

// Direct is a direct_response action.
type Direct struct {
	Status int
	Body   string
}

// Fault is a compiled fault.v3.HTTPFault. Percentages are per million.
type Fault struct {
	Delay        time.Duration
	DelayPerM    uint32
	AbortStatus  int
	AbortGRPC    int // -1 when not a gRPC abort
	AbortPerM    uint32
	HasAbort     bool
	HasDelay     bool
	MaxActive    uint32
	HeaderFilter []headerMatcher
}

// Cors is a compiled CORS policy.
type Cors struct {
	Origins          []stringMatcher
	AllowMethods     string
	AllowHeaders     string
	ExposeHeaders    string
	MaxAge           string
	AllowCredentials bool
}

type stringMatcher struct {
	exact, prefix, suffix, contains *string
	regex                           *regexp.Regexp
	ignoreCase                      bool
}

func (m *stringMatcher) match(v string) bool {
	switch {
	case m.exact != nil:
		if m.ignoreCase {
			return strings.EqualFold(v, *m.exact)
		}
		return v == *m.exact
	case m.prefix != nil:
		if m.ignoreCase {
			return len(v) >= len(*m.prefix) && strings.EqualFold(v[:len(*m.prefix)], *m.prefix)
		}
		return strings.HasPrefix(v, *m.prefix)
	case m.suffix != nil:
		if m.ignoreCase {
			return len(v) >= len(*m.suffix) && strings.EqualFold(v[len(v)-len(*m.suffix):], *m.suffix)
		}
		return strings.HasSuffix(v, *m.suffix)
	case m.contains != nil:
		if m.ignoreCase {
			return strings.Contains(strings.ToLower(v), strings.ToLower(*m.contains))
		}
		return strings.Contains(v, *m.contains)
	case m.regex != nil:
		return m.regex.MatchString(v)
	}
	return false
}

func compileStringMatcher(sm *matcherv3.StringMatcher) (stringMatcher, error) {
	m := stringMatcher{ignoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		m.exact = &p.Exact
	case *matcherv3.StringMatcher_Prefix:
		m.prefix = &p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		m.suffix = &p.Suffix
	case *matcherv3.StringMatcher_Contains:
		m.contains = &p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex(), sm.GetIgnoreCase())
		if err != nil {
			return m, err
		}
		m.regex = re
	default:
		return m, fmt.Errorf("string matcher %T: %w", p, ErrUnsupported)
	}
	return m, nil
}

func compileRegex(expr string, ignoreCase bool) (*regexp.Regexp, error) {
	if ignoreCase {
		expr = "(?i)" + expr
	}
	// Envoy regexes match the whole value.
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", expr, err)
	}
	return re, nil
}

type headerMatcher struct {
	key     string // canonical header key, or a pseudo header
	present bool   // present_match
	sm      stringMatcher
	isStr   bool
	invert  bool
}

func compileHeaderMatcher(h *routev3.HeaderMatcher) (headerMatcher, error) {
	m := headerMatcher{key: h.GetName(), invert: h.GetInvertMatch()}
	if !strings.HasPrefix(m.key, ":") {
		m.key = textproto.CanonicalMIMEHeaderKey(m.key)
	}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case nil:
		m.present = true
	case *routev3.HeaderMatcher_PresentMatch:
		m.present = true
		if !s.PresentMatch {
			m.invert = !m.invert
		}
	case *routev3.HeaderMatcher_StringMatch:
		m.sm, err = compileStringMatcher(s.StringMatch)
		m.isStr = true
	case *routev3.HeaderMatcher_ExactMatch:
		m.sm, m.isStr = stringMatcher{exact: &s.ExactMatch}, true
	case *routev3.HeaderMatcher_PrefixMatch:
		m.sm, m.isStr = stringMatcher{prefix: &s.PrefixMatch}, true
	case *routev3.HeaderMatcher_SuffixMatch:
		m.sm, m.isStr = stringMatcher{suffix: &s.SuffixMatch}, true
	case *routev3.HeaderMatcher_ContainsMatch:
		m.sm, m.isStr = stringMatcher{contains: &s.ContainsMatch}, true
	case *routev3.HeaderMatcher_SafeRegexMatch:
		var re *regexp.Regexp
		re, err = compileRegex(s.SafeRegexMatch.GetRegex(), false)
		m.sm, m.isStr = stringMatcher{regex: re}, true
	default:
		err = fmt.Errorf("header matcher %T: %w", s, ErrUnsupported)
	}
	if err != nil {
		return m, fmt.Errorf("header %q: %w", h.GetName(), err)
	}
	return m, nil
}

// Request is what route matching looks at. Path excludes the query.
type Request struct {
	Host, Path, RawQuery, Method, Scheme string
	Header                               http.Header
}

func (m *headerMatcher) matches(r *Request) bool {
	var v string
	var ok bool
	switch m.key {
	case ":authority":
		v, ok = r.Host, true
	case ":path":
		v, ok = r.Path, true
	case ":method":
		v, ok = r.Method, true
	case ":scheme":
		v, ok = r.Scheme, true
	default:
		if vs := r.Header[m.key]; len(vs) > 0 {
			v, ok = vs[0], true
		}
	}
	var res bool
	if m.present {
		res = ok
	} else {
		res = ok && m.sm.match(v)
	}
	return res != m.invert
}

type queryMatcher struct {
	name    string
	present bool
	sm      stringMatcher
}

func (m *queryMatcher) matches(raw string) bool {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != m.name {
			continue
		}
		if m.present {
			return true
		}
		return m.sm.match(v)
	}
	return false
}

// Compile builds a Table from a RouteConfiguration. It fails on anything
// the proxy cannot execute.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	t := &Table{Name: rc.GetName(), exact: map[string]*VirtualHost{}}
	for _, v := range rc.GetVirtualHosts() {
		vh, err := compileVirtualHost(v)
		if err != nil {
			return nil, fmt.Errorf("route config %q: virtual host %q: %w", rc.GetName(), v.GetName(), err)
		}
		t.Hosts = append(t.Hosts, vh)
		for _, d := range v.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if t.any == nil {
					t.any = vh
				}
			case strings.HasPrefix(d, "*"):
				t.suffixes = append(t.suffixes, domainPattern{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				t.prefixes = append(t.prefixes, domainPattern{d[:len(d)-1], vh})
			default:
				if _, dup := t.exact[d]; dup {
					return nil, fmt.Errorf("route config %q: domain %q in two virtual hosts", rc.GetName(), d)
				}
				t.exact[d] = vh
			}
		}
	}
	sort.SliceStable(t.suffixes, func(i, j int) bool { return len(t.suffixes[i].s) > len(t.suffixes[j].s) })
	sort.SliceStable(t.prefixes, func(i, j int) bool { return len(t.prefixes[i].s) > len(t.prefixes[j].s) })
	return t, nil
}

func compileHeaderOps(add []*corev3.HeaderValueOption, remove []string, radd []*corev3.HeaderValueOption, rremove []string) HeaderOps {
	conv := func(in []*corev3.HeaderValueOption) []HeaderValue {
		out := make([]HeaderValue, 0, len(in))
		for _, o := range in {
			appendV := o.GetAppend().GetValue()
			if o.GetAppend() == nil {
				appendV = o.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
			out = append(out, HeaderValue{Key: o.GetHeader().GetKey(), Value: o.GetHeader().GetValue(), Append: appendV})
		}
		return out
	}
	return HeaderOps{RequestAdd: conv(add), RequestRemove: remove, ResponseAdd: conv(radd), ResponseRemove: rremove}
}

func compileVirtualHost(v *routev3.VirtualHost) (*VirtualHost, error) {
	vh := &VirtualHost{Name: v.GetName(), Domains: v.GetDomains(),
		Headers: compileHeaderOps(v.GetRequestHeadersToAdd(), v.GetRequestHeadersToRemove(), v.GetResponseHeadersToAdd(), v.GetResponseHeadersToRemove())}
	if a := v.GetTypedPerFilterConfig()[CorsFilter]; a != nil {
		c, err := compileCors(a)
		if err != nil {
			return nil, err
		}
		vh.Cors = c
	}
	for i, r := range v.GetRoutes() {
		cr, err := compileRoute(r)
		if err != nil {
			return nil, fmt.Errorf("route %d (%q): %w", i, r.GetName(), err)
		}
		if p := r.GetStatPrefix(); p != "" {
			cr.StatPrefix = "vhost." + v.GetName() + ".route." + p
		}
		vh.Routes = append(vh.Routes, cr)
	}
	return vh, nil
}

func compileRoute(r *routev3.Route) (*Route, error) {
	out := &Route{Name: r.GetName(),
		Headers: compileHeaderOps(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove())}
	m := r.GetMatch()
	out.caseInsensitive = m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.prefix = p.Prefix
	case *routev3.RouteMatch_Path:
		out.path = p.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.sepPrefix = p.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileRegex(p.SafeRegex.GetRegex(), out.caseInsensitive)
		if err != nil {
			return nil, err
		}
		out.regex = re
	default:
		return nil, fmt.Errorf("path specifier %T: %w", p, ErrUnsupported)
	}
	for _, h := range m.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, err
		}
		out.headers = append(out.headers, hm)
	}
	for _, q := range m.GetQueryParameters() {
		qm := queryMatcher{name: q.GetName()}
		switch s := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_PresentMatch:
			qm.present = s.PresentMatch
		case *routev3.QueryParameterMatcher_StringMatch:
			sm, err := compileStringMatcher(s.StringMatch)
			if err != nil {
				return nil, fmt.Errorf("query %q: %w", q.GetName(), err)
			}
			qm.sm = sm
		default:
			qm.present = true
		}
		out.queries = append(out.queries, qm)
	}
	if len(m.GetCookies()) > 0 || len(m.GetDynamicMetadata()) > 0 || m.GetTlsContext() != nil {
		return nil, fmt.Errorf("route match on cookies/metadata/tls: %w", ErrUnsupported)
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		f, err := compileForward(a.Route, out.prefix)
		if err != nil {
			return nil, err
		}
		out.Forward = f
	case *routev3.Route_Redirect:
		rd := a.Redirect
		red := &Redirect{Host: rd.GetHostRedirect(), Port: rd.GetPortRedirect(), StripQuery: rd.GetStripQuery(),
			Path: rd.GetPathRedirect(), PrefixRewrite: rd.GetPrefixRewrite(), matchPfx: out.prefix}
		if rd.GetHttpsRedirect() {
			red.Scheme = "https"
		} else {
			red.Scheme = rd.GetSchemeRedirect()
		}
		if rd.GetRegexRewrite() != nil {
			return nil, fmt.Errorf("redirect regex_rewrite: %w", ErrUnsupported)
		}
		switch rd.GetResponseCode() {
		case routev3.RedirectAction_MOVED_PERMANENTLY:
			red.Code = 301
		case routev3.RedirectAction_FOUND:
			red.Code = 302
		case routev3.RedirectAction_SEE_OTHER:
			red.Code = 303
		case routev3.RedirectAction_TEMPORARY_REDIRECT:
			red.Code = 307
		case routev3.RedirectAction_PERMANENT_REDIRECT:
			red.Code = 308
		}
		out.Redirect = red
	case *routev3.Route_DirectResponse:
		d := &Direct{Status: int(a.DirectResponse.GetStatus())}
		if b := a.DirectResponse.GetBody(); b != nil {
			switch s := b.GetSpecifier().(type) {
			case *corev3.DataSource_InlineString:
				d.Body = s.InlineString
			case *corev3.DataSource_InlineBytes:
				d.Body = string(s.InlineBytes)
			default:
				return nil, fmt.Errorf("direct_response body %T: %w", s, ErrUnsupported)
			}
		}
		out.Direct = d
	default:
		return nil, fmt.Errorf("route action %T: %w", a, ErrUnsupported)
	}
	for name, a := range r.GetTypedPerFilterConfig() {
		switch name {
		case FaultFilter:
			f := &faultv3.HTTPFault{}
			if err := a.UnmarshalTo(f); err != nil {
				return nil, fmt.Errorf("fault config: %w", err)
			}
			cf, err := compileFault(f)
			if err != nil {
				return nil, err
			}
			out.Fault = cf
		case CorsFilter:
			c, err := compileCors(a)
			if err != nil {
				return nil, err
			}
			out.Cors = c
		default:
			// Other filters (e.g. stats, authz) are not configured per route here.
		}
	}
	return out, nil
}

func compileForward(a *routev3.RouteAction, matchPfx string) (*Forward, error) {
	f := &Forward{PrefixRewrite: a.GetPrefixRewrite(), HostRewrite: a.GetHostRewriteLiteral(), Timeout: DefaultTimeout, matchPfx: matchPfx}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		f.Clusters = []WeightedCluster{{Name: cs.Cluster, Weight: 1}}
	case *routev3.RouteAction_WeightedClusters:
		for _, wc := range cs.WeightedClusters.GetClusters() {
			w := wc.GetWeight().GetValue()
			f.Clusters = append(f.Clusters, WeightedCluster{Name: wc.GetName(), Weight: w,
				Headers: compileHeaderOps(wc.GetRequestHeadersToAdd(), wc.GetRequestHeadersToRemove(), wc.GetResponseHeadersToAdd(), wc.GetResponseHeadersToRemove())})
		}
	default:
		return nil, fmt.Errorf("cluster specifier %T: %w", cs, ErrUnsupported)
	}
	for _, c := range f.Clusters {
		f.totalWeight += c.Weight
	}
	if f.totalWeight == 0 {
		return nil, errors.New("weighted clusters: total weight is 0")
	}
	if rr := a.GetRegexRewrite(); rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite: %w", err)
		}
		f.RegexRewrite, f.RegexSubst = re, envoySubst(rr.GetSubstitution())
	}
	if a.GetHostRewriteHeader() != "" || a.GetHostRewritePathRegex() != nil {
		return nil, fmt.Errorf("host rewrite from header/path: %w", ErrUnsupported)
	}
	if a.GetTimeout() != nil {
		f.Timeout = a.GetTimeout().AsDuration()
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		p := &RetryPolicy{NumRetries: 1, PerTryTimeout: rp.GetPerTryTimeout().AsDuration()}
		if rp.GetNumRetries() != nil {
			p.NumRetries = int(rp.GetNumRetries().GetValue())
		}
		for _, on := range strings.Split(rp.GetRetryOn(), ",") {
			on = strings.TrimSpace(on)
			if on == "" {
				continue
			}
			bit, ok := retryOnNames[on]
			if !ok {
				return nil, fmt.Errorf("retry_on %q: %w", on, ErrUnsupported)
			}
			p.On |= bit
		}
		for _, c := range rp.GetRetriableStatusCodes() {
			p.StatusCodes = append(p.StatusCodes, int(c))
		}
		if pr := rp.GetRetryPriority(); pr != nil {
			cfg := &previousprioritiesv3.PreviousPrioritiesConfig{}
			if tc := pr.GetTypedConfig(); tc == nil || !tc.MessageIs(cfg) {
				return nil, fmt.Errorf("retry_priority %q: %w", pr.GetName(), ErrUnsupported)
			} else if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("retry_priority %q: %w", pr.GetName(), err)
			}
			if cfg.GetUpdateFrequency() <= 0 {
				return nil, fmt.Errorf("retry_priority %q: update_frequency must be positive, got %d", pr.GetName(), cfg.GetUpdateFrequency())
			}
			p.PreviousPriorities = int(cfg.GetUpdateFrequency())
		}
		f.Retry = p
	}
	for _, mp := range a.GetRequestMirrorPolicies() {
		m := Mirror{Cluster: mp.GetCluster(), Fraction: 1_000_000}
		if rf := mp.GetRuntimeFraction(); rf != nil {
			m.Fraction = perMillion(rf.GetDefaultValue())
		}
		if m.Cluster == "" {
			return nil, fmt.Errorf("mirror policy without a cluster: %w", ErrUnsupported)
		}
		f.Mirrors = append(f.Mirrors, m)
	}
	for _, hp := range a.GetHashPolicy() {
		h := HashPolicy{Terminal: hp.GetTerminal()}
		switch p := hp.GetPolicySpecifier().(type) {
		case *routev3.RouteAction_HashPolicy_Header_:
			h.Header = textproto.CanonicalMIMEHeaderKey(p.Header.GetHeaderName())
		case *routev3.RouteAction_HashPolicy_Cookie_:
			h.Cookie = p.Cookie.GetName()
		case *routev3.RouteAction_HashPolicy_ConnectionProperties_:
			h.SourceIP = p.ConnectionProperties.GetSourceIp()
		case *routev3.RouteAction_HashPolicy_QueryParameter_:
			h.QueryParam = p.QueryParameter.GetName()
		default:
			return nil, fmt.Errorf("hash policy %T: %w", p, ErrUnsupported)
		}
		f.Hash = append(f.Hash, h)
	}
	return f, nil
}

// envoySubst converts Envoy's \1 backreferences into Go's ${1}.
func envoySubst(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
			b.WriteString("${" + string(s[i+1]) + "}")
			i++
			continue
		}
		if s[i] == '$' {
			b.WriteString("$$")
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func perMillion(p *typev3.FractionalPercent) uint32 {
	if p == nil {
		return 1_000_000
	}
	n := p.GetNumerator()
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	return min(n, 1_000_000)
}

func compileFault(f *faultv3.HTTPFault) (*Fault, error) {
	out := &Fault{AbortGRPC: -1, MaxActive: f.GetMaxActiveFaults().GetValue()}
	if d := f.GetDelay(); d != nil {
		if d.GetFixedDelay() == nil {
			return nil, fmt.Errorf("fault: header-controlled delay: %w", ErrUnsupported)
		}
		out.HasDelay, out.Delay, out.DelayPerM = true, d.GetFixedDelay().AsDuration(), perMillion(d.GetPercentage())
	}
	if a := f.GetAbort(); a != nil {
		out.HasAbort, out.AbortPerM = true, perMillion(a.GetPercentage())
		switch e := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			out.AbortStatus = int(e.HttpStatus)
		case *faultv3.FaultAbort_GrpcStatus:
			out.AbortGRPC, out.AbortStatus = int(e.GrpcStatus), 200
		default:
			return nil, fmt.Errorf("fault: abort %T: %w", e, ErrUnsupported)
		}
	}
	for _, h := range f.GetHeaders() {
		hm, err := compileHeaderMatcher(h)
		if err != nil {
			return nil, fmt.Errorf("fault: %w", err)
		}
		out.HeaderFilter = append(out.HeaderFilter, hm)
	}
	if f.GetResponseRateLimit() != nil || len(f.GetDownstreamNodes()) > 0 || f.GetUpstreamCluster() != "" {
		return nil, fmt.Errorf("fault: rate limit / downstream nodes / upstream cluster: %w", ErrUnsupported)
	}
	return out, nil
}

// FaultApplies reports whether the fault's header filter matches.
func (f *Fault) FaultApplies(r *Request) bool {
	for i := range f.HeaderFilter {
		if !f.HeaderFilter[i].matches(r) {
			return false
		}
	}
	return true
}

func compileCors(a *anypb.Any) (*Cors, error) {
	p := &corsv3.CorsPolicy{}
	if err := a.UnmarshalTo(p); err != nil {
		return nil, fmt.Errorf("cors config: %w", err)
	}
	c := &Cors{AllowMethods: p.GetAllowMethods(), AllowHeaders: p.GetAllowHeaders(),
		ExposeHeaders: p.GetExposeHeaders(), MaxAge: p.GetMaxAge(), AllowCredentials: p.GetAllowCredentials().GetValue()}
	for _, o := range p.GetAllowOriginStringMatch() {
		sm, err := compileStringMatcher(o)
		if err != nil {
			return nil, fmt.Errorf("cors origin: %w", err)
		}
		c.Origins = append(c.Origins, sm)
	}
	return c, nil
}

// AllowsOrigin reports whether origin matches one of the allowed origins.
func (c *Cors) AllowsOrigin(origin string) bool {
	for i := range c.Origins {
		if c.Origins[i].match(origin) {
			return true
		}
	}
	return false
}
