// Package rbac executes Envoy RBAC filter configurations
// (envoy.extensions.filters.http.rbac.v3.RBAC) against one HTTP request. It
// supports the subset Weft's authorization translator emits: principals
// and_ids, or_ids, not_id, any, authenticated.principal_name, source_ip,
// direct_remote_ip, remote_ip, header, url_path and metadata; permissions
// and_rules, or_rules, not_rule, any, header, url_path, destination_ip,
// destination_port, destination_port_range, requested_server_name and
// metadata. Configs are compiled once (regexes precompiled); Check does not
// allocate for common requests.
package rbac

import (
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// FilterName is the HTTP filter name carrying an RBAC typed_config.
const FilterName = "envoy.filters.http.rbac"

// DeniedBody and DeniedDetails are what Envoy answers a denied request with
// (HTTP 403, response_code_details rbac_access_denied_matched_policy[...]).
const (
	DeniedBody    = "RBAC: access denied"
	DeniedDetails = "rbac_access_denied"
)

// Request is the view of one request the engine evaluates. Path must be
// normalized already (see package pathnorm) and exclude the query.
type Request struct {
	Method   string
	Host     string // :authority
	Path     string
	RawQuery string
	Header   http.Header
	// Principal is the peer's certificate identity (URI SAN, e.g.
	// spiffe://cluster.local/ns/a/sa/b); empty for plaintext.
	Principal string
	// RequestPrincipal is the JWT's iss/sub; Audiences, Presenter and Claims
	// come from the JWT filter (nested claims are keyed "a.b").
	RequestPrincipal string
	Audiences        []string
	Presenter        string
	Claims           map[string][]string
	// SourceIP is the downstream connection's peer address; RemoteIP is the
	// client address after x-forwarded-for processing (equal to SourceIP
	// with xff_num_trusted_hops 0; use RemoteIPFrom).
	SourceIP, RemoteIP netip.Addr
	DestIP             netip.Addr
	DestPort           uint32
	SNI                string
}

// RemoteIPFrom returns the client address Envoy derives with
// xff_num_trusted_hops = hops: the direct peer for 0, otherwise the entry
// hops positions from the right of x-forwarded-for.
func RemoteIPFrom(direct netip.Addr, xff string, hops int) netip.Addr {
	if hops <= 0 || xff == "" {
		return direct
	}
	parts := strings.Split(xff, ",")
	i := len(parts) - hops
	if i < 0 {
		return direct
	}
	a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
	if err != nil {
		return direct
	}
	return a
}

// Decision is the outcome of Check.
type Decision struct {
	Allowed bool
	// Policy names the policy that decided: the matching DENY policy, the
	// matching ALLOW policy, or "" when no ALLOW policy matched.
	Policy string
	// Action is the action of the stage that decided ("DENY", "ALLOW"), or
	// "" when no RBAC stage had anything to say.
	Action string
	// Audited lists LOG (AUDIT) and shadow policies that matched (shadow
	// rules with a stat prefix are in Shadow instead).
	Audited []string
	// Shadow lists the matches of shadow rules that have a
	// shadow_rules_stat_prefix (Istio's CUSTOM marking, prefix
	// istio_ext_authz_).
	Shadow []ShadowMatch
}

// ShadowMatch is a matched shadow policy: Envoy records it as dynamic
// metadata envoy.filters.http.rbac / StatPrefix+"shadow_effective_policy_id".
type ShadowMatch struct {
	StatPrefix, Policy string
}

// Engine is a compiled chain of RBAC filters, evaluated in order.
type Engine struct {
	stages []stage
}

type stage struct {
	action     rbacv3.RBAC_Action
	shadow     bool
	statPrefix string // shadow_rules_stat_prefix
	policies   []policy
}

type policy struct {
	name  string
	perms []matcher
	princ []matcher
}

type matcher interface{ match(*Request) bool }

// New compiles RBAC filter configs in filter-chain order (e.g. the DENY
// filter before the ALLOW filter). Nil configs are skipped.
func New(cfgs ...*rbachttp.RBAC) (*Engine, error) {
	e := &Engine{}
	for i, c := range cfgs {
		if c == nil {
			continue
		}
		if c.GetMatcher() != nil || c.GetShadowMatcher() != nil {
			return nil, fmt.Errorf("rbac filter %d: matcher API is not supported", i)
		}
		if r := c.GetRules(); r != nil {
			s, err := compileRBAC(r, false)
			if err != nil {
				return nil, fmt.Errorf("rbac filter %d: %w", i, err)
			}
			e.stages = append(e.stages, s)
		}
		if r := c.GetShadowRules(); r != nil {
			s, err := compileRBAC(r, true)
			if err != nil {
				return nil, fmt.Errorf("rbac filter %d shadow: %w", i, err)
			}
			s.statPrefix = c.GetShadowRulesStatPrefix()
			e.stages = append(e.stages, s)
		}
	}
	return e, nil
}

// Empty reports whether the engine has no stages (every request allowed).
func (e *Engine) Empty() bool { return e == nil || len(e.stages) == 0 }

// Check evaluates every stage; the first enforcing stage that denies wins.
func (e *Engine) Check(r *Request) Decision {
	d := Decision{Allowed: true}
	if e == nil {
		return d
	}
	for i := range e.stages {
		s := &e.stages[i]
		name, matched := s.first(r)
		if s.shadow && s.statPrefix != "" {
			if matched {
				d.Shadow = append(d.Shadow, ShadowMatch{StatPrefix: s.statPrefix, Policy: name})
			}
			continue
		}
		if s.shadow || s.action == rbacv3.RBAC_LOG {
			if matched {
				d.Audited = append(d.Audited, name)
			}
			continue
		}
		if !d.Allowed {
			continue // keep collecting audits only
		}
		switch s.action {
		case rbacv3.RBAC_DENY:
			if matched {
				d.Allowed, d.Policy, d.Action = false, name, "DENY"
			}
		case rbacv3.RBAC_ALLOW:
			if matched {
				d.Policy, d.Action = name, "ALLOW"
			} else {
				d.Allowed, d.Policy, d.Action = false, "", "ALLOW"
			}
		}
	}
	return d
}

func (s *stage) first(r *Request) (string, bool) {
	for i := range s.policies {
		p := &s.policies[i]
		if anyMatch(p.perms, r) && anyMatch(p.princ, r) {
			return p.name, true
		}
	}
	return "", false
}

func anyMatch(ms []matcher, r *Request) bool {
	for _, m := range ms {
		if m.match(r) {
			return true
		}
	}
	return false
}

func allMatch(ms []matcher, r *Request) bool {
	for _, m := range ms {
		if !m.match(r) {
			return false
		}
	}
	return true
}

func compileRBAC(r *rbacv3.RBAC, shadow bool) (stage, error) {
	s := stage{action: r.GetAction(), shadow: shadow}
	if s.action != rbacv3.RBAC_ALLOW && s.action != rbacv3.RBAC_DENY && s.action != rbacv3.RBAC_LOG {
		return s, fmt.Errorf("action %v not supported", s.action)
	}
	// Envoy evaluates policies in name order.
	names := make([]string, 0, len(r.GetPolicies()))
	for n := range r.GetPolicies() {
		names = append(names, n)
	}
	sortStrings(names)
	for _, n := range names {
		p := r.GetPolicies()[n]
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			return s, fmt.Errorf("policy %q: CEL conditions are not supported", n)
		}
		cp := policy{name: n}
		for i, pm := range p.GetPermissions() {
			m, err := compilePermission(pm)
			if err != nil {
				return s, fmt.Errorf("policy %q permission %d: %w", n, i, err)
			}
			cp.perms = append(cp.perms, m)
		}
		for i, pr := range p.GetPrincipals() {
			m, err := compilePrincipal(pr)
			if err != nil {
				return s, fmt.Errorf("policy %q principal %d: %w", n, i, err)
			}
			cp.princ = append(cp.princ, m)
		}
		s.policies = append(s.policies, cp)
	}
	return s, nil
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// Combinators.

type andM []matcher
type orM []matcher
type notM struct{ m matcher }
type anyM struct{}

func (a andM) match(r *Request) bool { return allMatch(a, r) }
func (o orM) match(r *Request) bool  { return anyMatch(o, r) }
func (n notM) match(r *Request) bool { return !n.m.match(r) }
func (anyM) match(*Request) bool     { return true }

func compilePermission(p *rbacv3.Permission) (matcher, error) {
	switch rule := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return anyM{}, nil
	case *rbacv3.Permission_AndRules:
		var out andM
		for _, x := range rule.AndRules.GetRules() {
			m, err := compilePermission(x)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Permission_OrRules:
		var out orM
		for _, x := range rule.OrRules.GetRules() {
			m, err := compilePermission(x)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Permission_NotRule:
		m, err := compilePermission(rule.NotRule)
		if err != nil {
			return nil, err
		}
		return notM{m}, nil
	case *rbacv3.Permission_Header:
		return compileHeader(rule.Header)
	case *rbacv3.Permission_UrlPath:
		sm, err := compileString(rule.UrlPath.GetPath())
		if err != nil {
			return nil, err
		}
		return pathM{sm}, nil
	case *rbacv3.Permission_DestinationIp:
		c, err := compileCIDR(rule.DestinationIp.GetAddressPrefix(), rule.DestinationIp.GetPrefixLen().GetValue(), rule.DestinationIp.GetPrefixLen() != nil)
		if err != nil {
			return nil, err
		}
		return ipM{c, func(r *Request) netip.Addr { return r.DestIP }}, nil
	case *rbacv3.Permission_DestinationPort:
		return portM{rule.DestinationPort, rule.DestinationPort}, nil
	case *rbacv3.Permission_DestinationPortRange:
		// [start, end)
		return portM{uint32(rule.DestinationPortRange.GetStart()), uint32(rule.DestinationPortRange.GetEnd()) - 1}, nil
	case *rbacv3.Permission_RequestedServerName:
		sm, err := compileString(rule.RequestedServerName)
		if err != nil {
			return nil, err
		}
		return sniM{sm}, nil
	case *rbacv3.Permission_Metadata:
		return compileMetadata(rule.Metadata)
	}
	return nil, fmt.Errorf("permission rule %T not supported", p.GetRule())
}

func compilePrincipal(p *rbacv3.Principal) (matcher, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return anyM{}, nil
	case *rbacv3.Principal_AndIds:
		var out andM
		for _, x := range id.AndIds.GetIds() {
			m, err := compilePrincipal(x)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Principal_OrIds:
		var out orM
		for _, x := range id.OrIds.GetIds() {
			m, err := compilePrincipal(x)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
		return out, nil
	case *rbacv3.Principal_NotId:
		m, err := compilePrincipal(id.NotId)
		if err != nil {
			return nil, err
		}
		return notM{m}, nil
	case *rbacv3.Principal_Authenticated_:
		pn := id.Authenticated.GetPrincipalName()
		if pn == nil {
			return authM{}, nil
		}
		sm, err := compileString(pn)
		if err != nil {
			return nil, err
		}
		return authM{sm}, nil
	case *rbacv3.Principal_SourceIp:
		c, err := compileCIDR(id.SourceIp.GetAddressPrefix(), id.SourceIp.GetPrefixLen().GetValue(), id.SourceIp.GetPrefixLen() != nil)
		if err != nil {
			return nil, err
		}
		return ipM{c, func(r *Request) netip.Addr { return r.SourceIP }}, nil
	case *rbacv3.Principal_DirectRemoteIp:
		c, err := compileCIDR(id.DirectRemoteIp.GetAddressPrefix(), id.DirectRemoteIp.GetPrefixLen().GetValue(), id.DirectRemoteIp.GetPrefixLen() != nil)
		if err != nil {
			return nil, err
		}
		return ipM{c, func(r *Request) netip.Addr { return r.SourceIP }}, nil
	case *rbacv3.Principal_RemoteIp:
		c, err := compileCIDR(id.RemoteIp.GetAddressPrefix(), id.RemoteIp.GetPrefixLen().GetValue(), id.RemoteIp.GetPrefixLen() != nil)
		if err != nil {
			return nil, err
		}
		return ipM{c, func(r *Request) netip.Addr {
			if r.RemoteIP.IsValid() {
				return r.RemoteIP
			}
			return r.SourceIP
		}}, nil
	case *rbacv3.Principal_Header:
		return compileHeader(id.Header)
	case *rbacv3.Principal_UrlPath:
		sm, err := compileString(id.UrlPath.GetPath())
		if err != nil {
			return nil, err
		}
		return pathM{sm}, nil
	case *rbacv3.Principal_Metadata:
		return compileMetadata(id.Metadata)
	}
	return nil, fmt.Errorf("principal identifier %T not supported", p.GetIdentifier())
}

// Leaf matchers.

type pathM struct{ s *strMatcher }

func (m pathM) match(r *Request) bool { return m.s.match(r.Path) }

type sniM struct{ s *strMatcher }

func (m sniM) match(r *Request) bool { return m.s.match(r.SNI) }

type authM struct{ s *strMatcher }

func (m authM) match(r *Request) bool {
	if r.Principal == "" {
		return false // plaintext: not authenticated
	}
	return m.s == nil || m.s.match(r.Principal)
}

type portM struct{ lo, hi uint32 }

func (m portM) match(r *Request) bool { return r.DestPort >= m.lo && r.DestPort <= m.hi }

type ipM struct {
	p   netip.Prefix
	get func(*Request) netip.Addr
}

func (m ipM) match(r *Request) bool {
	a := m.get(r)
	return a.IsValid() && m.p.Contains(a.Unmap())
}

func compileCIDR(addr string, plen uint32, hasLen bool) (netip.Prefix, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr address %q: %w", addr, err)
	}
	a = a.Unmap()
	if !hasLen {
		plen = uint32(a.BitLen())
	}
	p, err := a.Prefix(int(plen))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("cidr %s/%d: %w", addr, plen, err)
	}
	return p, nil
}

// strMatcher is a compiled envoy.type.matcher.v3.StringMatcher.
type strMatcher struct {
	kind       byte // e exact, p prefix, s suffix, c contains, r regex
	val        string
	ignoreCase bool
	re         *regexp.Regexp
}

func compileString(m *matcherv3.StringMatcher) (*strMatcher, error) {
	if m == nil {
		return nil, fmt.Errorf("missing string matcher")
	}
	s := &strMatcher{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.kind, s.val = 'e', p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.kind, s.val = 'p', p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.kind, s.val = 's', p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.kind, s.val = 'c', p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", p.SafeRegex.GetRegex(), err)
		}
		s.kind, s.re = 'r', re
	default:
		return nil, fmt.Errorf("string matcher %T not supported", m.GetMatchPattern())
	}
	if s.ignoreCase && s.kind == 'c' {
		s.val = strings.ToLower(s.val)
	}
	return s, nil
}

func (s *strMatcher) match(v string) bool {
	switch s.kind {
	case 'e':
		if s.ignoreCase {
			return strings.EqualFold(v, s.val)
		}
		return v == s.val
	case 'p':
		if s.ignoreCase {
			return len(v) >= len(s.val) && strings.EqualFold(v[:len(s.val)], s.val)
		}
		return strings.HasPrefix(v, s.val)
	case 's':
		if s.ignoreCase {
			return len(v) >= len(s.val) && strings.EqualFold(v[len(v)-len(s.val):], s.val)
		}
		return strings.HasSuffix(v, s.val)
	case 'c':
		if s.ignoreCase {
			return strings.Contains(strings.ToLower(v), s.val)
		}
		return strings.Contains(v, s.val)
	case 'r':
		return s.re.MatchString(v)
	}
	return false
}

// headerM is a compiled route.v3.HeaderMatcher.
type headerM struct {
	name    string // canonical, or a pseudo-header
	invert  bool
	missing bool // treat_missing_header_as_empty
	present *bool
	s       *strMatcher
	lo, hi  int64
	isRange bool
}

func compileHeader(h *routev3.HeaderMatcher) (matcher, error) {
	name := strings.ToLower(h.GetName())
	if name == "" {
		return nil, fmt.Errorf("header matcher without a name")
	}
	if name == "host" {
		name = ":authority"
	}
	if !strings.HasPrefix(name, ":") {
		name = http.CanonicalHeaderKey(name)
	}
	m := &headerM{name: name, invert: h.GetInvertMatch(), missing: h.GetTreatMissingHeaderAsEmpty()}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		m.s = &strMatcher{kind: 'e', val: s.ExactMatch}
	case *routev3.HeaderMatcher_PrefixMatch:
		m.s = &strMatcher{kind: 'p', val: s.PrefixMatch}
	case *routev3.HeaderMatcher_SuffixMatch:
		m.s = &strMatcher{kind: 's', val: s.SuffixMatch}
	case *routev3.HeaderMatcher_ContainsMatch:
		m.s = &strMatcher{kind: 'c', val: s.ContainsMatch}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		m.s, err = compileString(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}})
	case *routev3.HeaderMatcher_StringMatch:
		m.s, err = compileString(s.StringMatch)
	case *routev3.HeaderMatcher_PresentMatch:
		v := s.PresentMatch
		m.present = &v
	case *routev3.HeaderMatcher_RangeMatch:
		m.isRange, m.lo, m.hi = true, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case nil:
		v := true
		m.present = &v
	default:
		return nil, fmt.Errorf("header matcher %T not supported", s)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (m *headerM) value(r *Request) (string, bool) {
	switch m.name {
	case ":method":
		return r.Method, true
	case ":authority":
		return r.Host, true
	case ":path":
		if r.RawQuery != "" {
			return r.Path + "?" + r.RawQuery, true
		}
		return r.Path, true
	case ":scheme":
		return "http", true
	}
	vs, ok := r.Header[m.name]
	if !ok || len(vs) == 0 {
		return "", false
	}
	if len(vs) == 1 {
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

func (m *headerM) match(r *Request) bool {
	v, ok := m.value(r)
	if !ok && m.missing {
		v, ok = "", true
	}
	var res bool
	switch {
	case m.present != nil:
		res = ok == *m.present
		if m.invert {
			res = !res
		}
		return res
	case !ok:
		return false // a missing header never matches, inverted or not
	case m.isRange:
		n, err := strconv.ParseInt(v, 10, 64)
		res = err == nil && n >= m.lo && n < m.hi
	default:
		res = m.s.match(v)
	}
	if m.invert {
		return !res
	}
	return res
}

// Metadata: the filters Istio's RBAC reads, backed by Request fields.
const (
	AuthnFilter = "istio_authn"
	JWTFilter   = "envoy.filters.http.jwt_authn"
)

type metaM struct {
	key    string // request.auth.principal, ... or claim path "a.b"
	claim  bool
	value  valueM
	invert bool
}

type valueM struct {
	s       *strMatcher
	list    bool // list_match one_of
	present bool
}

func compileMetadata(mm *matcherv3.MetadataMatcher) (matcher, error) {
	var keys []string
	for _, seg := range mm.GetPath() {
		keys = append(keys, seg.GetKey())
	}
	m := &metaM{invert: mm.GetInvert()}
	switch mm.GetFilter() {
	case AuthnFilter:
		if len(keys) == 0 {
			return nil, fmt.Errorf("metadata %s: empty path", AuthnFilter)
		}
		switch keys[0] {
		case "request.auth.principal", "request.auth.audiences", "request.auth.presenter", "source.principal":
			if len(keys) != 1 {
				return nil, fmt.Errorf("metadata %s: path %v", AuthnFilter, keys)
			}
			m.key = keys[0]
		case "request.auth.claims":
			if len(keys) < 2 {
				return nil, fmt.Errorf("metadata %s: claims path without a claim", AuthnFilter)
			}
			m.claim, m.key = true, strings.Join(keys[1:], ".")
		default:
			return nil, fmt.Errorf("metadata %s: key %q not supported", AuthnFilter, keys[0])
		}
	case JWTFilter:
		// Istio's older form: filter jwt_authn, path [payload, claim...].
		if len(keys) < 2 {
			return nil, fmt.Errorf("metadata %s: path %v", JWTFilter, keys)
		}
		m.claim, m.key = true, strings.Join(keys[1:], ".")
	default:
		return nil, fmt.Errorf("metadata filter %q not supported", mm.GetFilter())
	}
	v := mm.GetValue()
	switch p := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_StringMatch:
		s, err := compileString(p.StringMatch)
		if err != nil {
			return nil, err
		}
		m.value.s = s
	case *matcherv3.ValueMatcher_ListMatch:
		sm := p.ListMatch.GetOneOf().GetStringMatch()
		if sm == nil {
			return nil, fmt.Errorf("metadata list_match: only one_of string_match is supported")
		}
		s, err := compileString(sm)
		if err != nil {
			return nil, err
		}
		m.value.s, m.value.list = s, true
	case *matcherv3.ValueMatcher_PresentMatch:
		m.value.present = p.PresentMatch
		if !p.PresentMatch {
			return nil, fmt.Errorf("metadata present_match false not supported")
		}
	default:
		return nil, fmt.Errorf("metadata value matcher %T not supported", v.GetMatchPattern())
	}
	return m, nil
}

func (m *metaM) match(r *Request) bool {
	res := m.eval(r)
	if m.invert {
		return !res
	}
	return res
}

func (m *metaM) eval(r *Request) bool {
	var single string
	var list []string
	isList := false
	switch {
	case m.claim:
		vs, ok := r.Claims[m.key]
		if !ok {
			return false
		}
		list, isList = vs, true
	case m.key == "request.auth.principal":
		if r.RequestPrincipal == "" {
			return false
		}
		single = r.RequestPrincipal
	case m.key == "request.auth.presenter":
		if r.Presenter == "" {
			return false
		}
		single = r.Presenter
	case m.key == "source.principal":
		if r.Principal == "" {
			return false
		}
		single = r.Principal
	case m.key == "request.auth.audiences":
		if len(r.Audiences) == 0 {
			return false
		}
		list, isList = r.Audiences, true
	}
	if m.value.present {
		return true
	}
	if !isList {
		return !m.value.list && m.value.s.match(single)
	}
	// A list value matches list_match when one element matches; a string
	// matcher against a single-element list matches that element (claims
	// that are plain strings are one-element lists here).
	if !m.value.list && len(list) != 1 {
		return false
	}
	for _, x := range list {
		if m.value.s.match(x) {
			return true
		}
	}
	return false
}
