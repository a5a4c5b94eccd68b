// Package authz translates Istio AuthorizationPolicy resources into Envoy
// RBAC HTTP filter configs for one proxy, following Istio's semantics: DENY
// policies are evaluated before ALLOW policies, an ALLOW policy without
// rules allows nothing, `rules: [{}]` allows everything, AUDIT policies only
// log. CUSTOM policies become, as in Istio, an RBAC filter in shadow mode
// whose rules mark the requests they match (dynamic metadata
// istio_ext_authz_shadow_effective_policy_id = istio-ext-authz-...) and an
// ext_authz filter that checks only marked requests with the mesh config's
// extension provider (see custom.go). TranslateTCP builds network RBAC
// filters for opaque TCP chains with Istio's TCP semantics (see tcp.go).
// Translate is a pure function.
package authz

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// FilterName is the HCM http filter name for RBAC configs.
const FilterName = "envoy.filters.http.rbac"

// Metadata filter and keys the RBAC configs read for request
// authentication (filled by the JWT filter, as in Istio).
const (
	AuthnFilter = "istio_authn"
)

// DefaultRootNamespace is the mesh root namespace when Translate gets "";
// "istio-system" is always a root namespace too (as in the translator).
const DefaultRootNamespace = "weft-system"

// Policies are the RBAC filter configs for one proxy. A nil config means no
// filter. Order in the filter chain (as Istio's): Audit, Custom (+ExtAuthz),
// Deny, Allow.
type Policies struct {
	Deny  *rbachttp.RBAC
	Allow *rbachttp.RBAC
	Audit *rbachttp.RBAC // action LOG
	// Custom holds the CUSTOM policies' rules: shadow rules (stat prefix
	// istio_ext_authz_) marking the requests ExtAuthz checks, or, when the
	// provider is unknown or invalid, enforced DENY rules (Istio: "will
	// generate deny configs for the specified rules").
	Custom *rbachttp.RBAC
	// ExtAuthz is the ext_authz filter for the CUSTOM provider; nil when
	// there is none or it is invalid.
	ExtAuthz *extauthzv3.ExtAuthz
	// Provider is the CUSTOM policies' extension provider name ("" without
	// CUSTOM policies).
	Provider string
	// extAuthzProvider is the resolved provider behind ExtAuthz.
	extAuthzProvider *meshconfig.ExtAuthzProvider
	// Warnings list unsupported policies or fields and what was done.
	Warnings []string
}

// Configs returns the non-nil RBAC configs in filter-chain order.
func (p *Policies) Configs() []*rbachttp.RBAC {
	var out []*rbachttp.RBAC
	for _, c := range []*rbachttp.RBAC{p.Audit, p.Custom, p.Deny, p.Allow} {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// PolicyName is the Envoy policy name of rule idx of a policy, as Istio
// names them.
func PolicyName(namespace, name string, idx int) string {
	return fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", namespace, name, idx)
}

var policyNameRE = regexp.MustCompile(`^ns\[(.*)\]-policy\[(.*)\]-rule\[(\d+)\]$`)

// ParsePolicyName inverts PolicyName (also for CUSTOM rules, named
// "istio-ext-authz-" + PolicyName).
func ParsePolicyName(s string) (namespace, name string, idx int, ok bool) {
	m := policyNameRE.FindStringSubmatch(strings.TrimPrefix(s, ExtAuthzPrefix+"-"))
	if m == nil {
		return "", "", 0, false
	}
	idx, _ = strconv.Atoi(m[3])
	return m[1], m[2], idx, true
}

// Translate selects the AuthorizationPolicies that apply to proxy (those
// in the root namespace (rootNamespace, default weft-system, and
// istio-system) and in the proxy's namespace whose selector matches
// its labels) and builds RBAC configs. Policies with targetRefs apply to
// gateways/waypoints and are skipped. Other kinds in policies are ignored.
//
// CUSTOM policies need Options.Mesh for their provider; Translate has none,
// so their rules deny (see TranslateWith).
func Translate(policies []*config.Resource, proxy *model.Proxy, rootNamespace string) (*Policies, error) {
	return TranslateWith(policies, proxy, Options{RootNamespace: rootNamespace})
}

// Options are TranslateWith's inputs besides the policies and the proxy.
type Options struct {
	// RootNamespace is the mesh root namespace ("" = DefaultRootNamespace).
	RootNamespace string
	// Mesh holds the extensionProviders CUSTOM policies name; nil has none.
	Mesh *meshv1.MeshConfig
	// LookupService resolves an ext_authz provider's service (hostname and
	// the provider's namespace, possibly "") to the registry hostname; false
	// means no such service, which invalidates the provider (as in Istio).
	// nil accepts every hostname as written.
	LookupService func(host, namespace string) (string, bool)
}

// TranslateWith is Translate with mesh config for CUSTOM policies.
func TranslateWith(policies []*config.Resource, proxy *model.Proxy, o Options) (*Policies, error) {
	return translate(policies, proxy, o, false)
}

// translate builds the RBAC configs for HTTP (tcp false) or for opaque
// TCP filter chains (tcp true: HTTP-only fields make ALLOW rules match
// nothing and are ignored in DENY/AUDIT rules; CUSTOM is not applied).
func translate(policies []*config.Resource, proxy *model.Proxy, o Options, tcp bool) (*Policies, error) {
	if proxy == nil {
		return nil, fmt.Errorf("authz: nil proxy")
	}
	rootNamespace := o.RootNamespace
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	roots := []string{rootNamespace, "istio-system"}
	var sel []*config.Resource
	for _, r := range policies {
		if r == nil || r.Kind != config.KindAuthorizationPolicy {
			continue
		}
		if _, ok := r.Spec.(*securityv1beta1.AuthorizationPolicy); !ok {
			return nil, fmt.Errorf("authz: %s: spec is %T", r.Key(), r.Spec)
		}
		sel = append(sel, r)
	}
	sort.SliceStable(sel, func(i, j int) bool {
		a, b := sel[i].Meta, sel[j].Meta
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	out := &Policies{}
	var deny, allow, audit, custom map[string]*rbacv3.Policy
	var providers []string // of the CUSTOM policies, in order, distinct
	for _, r := range sel {
		ap := r.Spec.(*securityv1beta1.AuthorizationPolicy)
		ns := r.Meta.Namespace
		if ns == "" {
			ns = config.DefaultNamespace
		}
		if !contains(roots, ns) && ns != proxy.Namespace {
			continue
		}
		if ap.GetTargetRef() != nil || len(ap.GetTargetRefs()) > 0 {
			out.Warnings = append(out.Warnings, fmt.Sprintf("AuthorizationPolicy %s/%s: targetRefs apply to gateways and waypoints; skipped for sidecars", ns, r.Meta.Name))
			continue
		}
		if !selects(ap.GetSelector().GetMatchLabels(), proxy.Labels) {
			continue
		}
		var dst *map[string]*rbacv3.Policy
		switch ap.GetAction() {
		case securityv1beta1.AuthorizationPolicy_ALLOW:
			dst = &allow
		case securityv1beta1.AuthorizationPolicy_DENY:
			dst = &deny
		case securityv1beta1.AuthorizationPolicy_AUDIT:
			dst = &audit
		case securityv1beta1.AuthorizationPolicy_CUSTOM:
			dst = &custom
			if name := ap.GetProvider().GetName(); !contains(providers, name) {
				providers = append(providers, name)
			}
		default:
			out.Warnings = append(out.Warnings, fmt.Sprintf("AuthorizationPolicy %s/%s: action %s is not supported; policy skipped", ns, r.Meta.Name, ap.GetAction()))
			continue
		}
		if *dst == nil {
			*dst = map[string]*rbacv3.Policy{}
		}
		for i, rule := range ap.GetRules() {
			// CUSTOM rules decide what is checked: like DENY, an unsupported
			// field widens the rule (more requests go to the authorizer).
			t := &ruleTranslator{tcp: tcp, deny: ap.GetAction() != securityv1beta1.AuthorizationPolicy_ALLOW}
			p := t.rule(rule)
			where := fmt.Sprintf("AuthorizationPolicy %s/%s rules[%d]", ns, r.Meta.Name, i)
			for _, w := range t.warnings {
				out.Warnings = append(out.Warnings, where+": "+w)
			}
			if p == nil {
				out.Warnings = append(out.Warnings, where+": rule dropped (matches nothing)")
				continue
			}
			name := PolicyName(ns, r.Meta.Name, i)
			if ap.GetAction() == securityv1beta1.AuthorizationPolicy_CUSTOM {
				name = ExtAuthzPrefix + "-" + name
			}
			(*dst)[name] = p
		}
	}
	if custom != nil {
		out.customFilters(custom, providers, o, tcp)
	}
	if len(deny) > 0 {
		out.Deny = &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: deny}}
	}
	if allow != nil { // an ALLOW policy applies, even one without rules
		out.Allow = &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: allow}}
	}
	if len(audit) > 0 {
		out.Audit = &rbachttp.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: audit}}
	}
	return out, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// ruleTranslator builds one rule. Unsupported fields make an ALLOW/AUDIT
// rule match nothing (dropped); in a DENY rule they are ignored, which
// makes the rule match more (fail closed), as Istio does.
type ruleTranslator struct {
	deny     bool
	tcp      bool // an opaque TCP chain: HTTP-only fields are unsupported
	warnings []string
	drop     bool
}

// httpOnly makes field unsupported on TCP chains (Istio: an ALLOW rule
// using it is dropped, a DENY/AUDIT rule ignores it).
func httpOnly[T any](t *ruleTranslator, field string, f func(string) *T) func(string) *T {
	if !t.tcp {
		return f
	}
	return func(string) *T {
		t.unsupported("%s is HTTP only", field)
		return nil
	}
}

func (t *ruleTranslator) unsupported(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if t.deny {
		t.warnings = append(t.warnings, msg+"; ignored (DENY rule matches more)")
		return
	}
	t.warnings = append(t.warnings, msg)
	t.drop = true
}

func (t *ruleTranslator) rule(r *securityv1beta1.Rule) *rbacv3.Policy {
	var froms []*rbacv3.Principal
	for _, f := range r.GetFrom() {
		froms = append(froms, t.source(f.GetSource()))
	}
	var tos []*rbacv3.Permission
	for _, to := range r.GetTo() {
		tos = append(tos, t.operation(to.GetOperation()))
	}
	var princ []*rbacv3.Principal
	var perm []*rbacv3.Permission
	if len(froms) > 0 {
		princ = append(princ, orIDs(froms))
	}
	if len(tos) > 0 {
		perm = append(perm, orRules(tos))
	}
	for _, c := range r.GetWhen() {
		pr, pm := t.condition(c)
		if pr != nil {
			princ = append(princ, pr)
		}
		if pm != nil {
			perm = append(perm, pm)
		}
	}
	if t.drop {
		return nil
	}
	return &rbacv3.Policy{Permissions: []*rbacv3.Permission{andRules(perm)}, Principals: []*rbacv3.Principal{andIDs(princ)}}
}

// Principals.

func (t *ruleTranslator) source(s *securityv1beta1.Source) *rbacv3.Principal {
	var ids []*rbacv3.Principal
	add := func(vals, notVals []string, f func(string) *rbacv3.Principal) {
		if p := t.principalField(vals, f); p != nil {
			ids = append(ids, p)
		}
		if p := t.principalField(notVals, f); p != nil {
			ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}})
		}
	}
	add(s.GetPrincipals(), s.GetNotPrincipals(), t.peerPrincipal)
	add(s.GetRequestPrincipals(), s.GetNotRequestPrincipals(), httpOnly(t, "requestPrincipals", requestPrincipal))
	add(s.GetNamespaces(), s.GetNotNamespaces(), namespace)
	add(s.GetServiceAccounts(), s.GetNotServiceAccounts(), t.serviceAccount)
	add(s.GetTrustDomains(), s.GetNotTrustDomains(), trustDomain)
	add(s.GetIpBlocks(), s.GetNotIpBlocks(), t.ipPrincipal(false))
	add(s.GetRemoteIpBlocks(), s.GetNotRemoteIpBlocks(), t.ipPrincipal(true))
	return andIDs(ids)
}

func (t *ruleTranslator) principalField(vals []string, f func(string) *rbacv3.Principal) *rbacv3.Principal {
	if len(vals) == 0 {
		return nil
	}
	var ids []*rbacv3.Principal
	for _, v := range vals {
		if p := f(v); p != nil {
			ids = append(ids, p)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return orIDs(ids)
}

func authenticated(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

func (t *ruleTranslator) peerPrincipal(v string) *rbacv3.Principal {
	return authenticated(stringMatch(v, "spiffe://"))
}

func (t *ruleTranslator) serviceAccount(v string) *rbacv3.Principal {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok || ns == "" || sa == "" {
		t.unsupported("serviceAccounts %q: want NAMESPACE/NAME", v)
		return nil
	}
	return authenticated(regexMatch(`spiffe://[^/]+/ns/` + regexp.QuoteMeta(ns) + `/sa/` + regexp.QuoteMeta(sa)))
}

func namespace(v string) *rbacv3.Principal {
	if v == "*" {
		return authenticated(regexMatch(`.*/ns/[^/]+/.*`))
	}
	return authenticated(regexMatch(`.*/ns/` + globRegex(v, `[^/]*`) + `/.*`))
}

func trustDomain(v string) *rbacv3.Principal {
	return authenticated(regexMatch(`spiffe://` + globRegex(v, `[^/]*`) + `/.*`))
}

func requestPrincipal(v string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: authnMeta(stringMatch(v, ""), false, "request.auth.principal")}}
}

func (t *ruleTranslator) ipPrincipal(remote bool) func(string) *rbacv3.Principal {
	return func(v string) *rbacv3.Principal {
		c, err := cidr(v)
		if err != nil {
			t.unsupported("%v", err)
			return nil
		}
		if remote {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: c}}
		}
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: c}}
	}
}

func cidr(v string) (*corev3.CidrRange, error) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return nil, fmt.Errorf("ip block %q: not an IP or CIDR", v)
	}
	return &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))}, nil
}

func authnMeta(m *matcherv3.StringMatcher, list bool, keys ...string) *matcherv3.MetadataMatcher {
	var path []*matcherv3.MetadataMatcher_PathSegment
	for _, k := range keys {
		path = append(path, &matcherv3.MetadataMatcher_PathSegment{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	v := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}}
	if list {
		v = &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{
			MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: v}}}}
	}
	return &matcherv3.MetadataMatcher{Filter: AuthnFilter, Path: path, Value: v}
}

// Permissions.

func (t *ruleTranslator) operation(o *securityv1beta1.Operation) *rbacv3.Permission {
	var rules []*rbacv3.Permission
	add := func(vals, notVals []string, f func(string) *rbacv3.Permission) {
		if p := t.permissionField(vals, f); p != nil {
			rules = append(rules, p)
		}
		if p := t.permissionField(notVals, f); p != nil {
			rules = append(rules, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}})
		}
	}
	add(o.GetHosts(), o.GetNotHosts(), httpOnly(t, "hosts", hostPermission))
	add(o.GetPorts(), o.GetNotPorts(), t.portPermission)
	add(o.GetMethods(), o.GetNotMethods(), httpOnly(t, "methods", methodPermission))
	add(o.GetPaths(), o.GetNotPaths(), httpOnly(t, "paths", t.pathPermission))
	return andRules(rules)
}

func (t *ruleTranslator) permissionField(vals []string, f func(string) *rbacv3.Permission) *rbacv3.Permission {
	if len(vals) == 0 {
		return nil
	}
	var rules []*rbacv3.Permission
	for _, v := range vals {
		if p := f(v); p != nil {
			rules = append(rules, p)
		}
	}
	if len(rules) == 0 {
		return nil
	}
	return orRules(rules)
}

func headerPermission(name string, m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}}}
}

// hostPermission matches :authority case-insensitively, with or without
// a port.
func hostPermission(h string) *rbacv3.Permission {
	if h == "*" {
		return anyPermission()
	}
	return headerPermission(":authority", regexMatch(`(?i)`+globRegex(h, `.*`)+`(:[0-9]+)?`))
}

func methodPermission(m string) *rbacv3.Permission {
	return headerPermission(":method", stringMatch(m, ""))
}

func (t *ruleTranslator) portPermission(v string) *rbacv3.Permission {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		t.unsupported("port %q: not a port number", v)
		return nil
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n)}}
}

func (t *ruleTranslator) pathPermission(v string) *rbacv3.Permission {
	var m *matcherv3.StringMatcher
	if strings.Contains(v, "{") {
		re, err := pathTemplate(v)
		if err != nil {
			t.unsupported("%v", err)
			return nil
		}
		m = regexMatch(re)
	} else {
		m = stringMatch(v, "")
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

// pathTemplate converts Istio's path templates: {*} is one path segment,
// {**} (last) is any remainder including further segments.
func pathTemplate(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("path template %q must start with /", p)
	}
	var b strings.Builder
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		b.WriteString("/")
		switch {
		case s == "{*}":
			b.WriteString(`[^/]+`)
		case s == "{**}":
			if i != len(segs)-1 {
				return "", fmt.Errorf("path template %q: {**} must be the last segment", p)
			}
			b.WriteString(`.*`)
		case strings.ContainsAny(s, "{}*"):
			return "", fmt.Errorf("path template %q: segment %q must be exactly {*} or {**}", p, s)
		default:
			b.WriteString(regexp.QuoteMeta(s))
		}
	}
	return b.String(), nil
}

// Conditions.

func (t *ruleTranslator) condition(c *securityv1beta1.Condition) (*rbacv3.Principal, *rbacv3.Permission) {
	key := c.GetKey()
	var pf func(string) *rbacv3.Principal
	var mf func(string) *rbacv3.Permission
	switch {
	case strings.HasPrefix(key, "request.headers["):
		name, rest, ok := bracket(strings.TrimPrefix(key, "request.headers"))
		if !ok || rest != "" || name == "" {
			t.unsupported("condition key %q: want request.headers[NAME]", key)
			return nil, nil
		}
		mf = func(v string) *rbacv3.Permission { return headerPermission(strings.ToLower(name), stringMatch(v, "")) }
	case key == "source.ip":
		pf = t.ipPrincipal(false)
	case key == "remote.ip":
		pf = t.ipPrincipal(true)
	case key == "source.namespace":
		pf = namespace
	case key == "source.principal":
		pf = t.peerPrincipal
	case key == "request.auth.principal":
		pf = requestPrincipal
	case key == "request.auth.audiences":
		pf = func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: authnMeta(stringMatch(v, ""), true, "request.auth.audiences")}}
		}
	case key == "request.auth.presenter":
		pf = func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: authnMeta(stringMatch(v, ""), false, "request.auth.presenter")}}
		}
	case strings.HasPrefix(key, "request.auth.claims["):
		var claims []string
		rest := strings.TrimPrefix(key, "request.auth.claims")
		for rest != "" {
			name, r, ok := bracket(rest)
			if !ok || name == "" {
				t.unsupported("condition key %q: want request.auth.claims[NAME][NESTED]...", key)
				return nil, nil
			}
			claims, rest = append(claims, name), r
		}
		keys := append([]string{"request.auth.claims"}, claims...)
		pf = func(v string) *rbacv3.Principal {
			return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: authnMeta(stringMatch(v, ""), true, keys...)}}
		}
	case key == "destination.ip":
		mf = func(v string) *rbacv3.Permission {
			c, err := cidr(v)
			if err != nil {
				t.unsupported("%v", err)
				return nil
			}
			return &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: c}}
		}
	case key == "destination.port":
		mf = t.portPermission
	case key == "connection.sni":
		mf = func(v string) *rbacv3.Permission {
			return &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: stringMatch(v, "")}}
		}
	default:
		t.unsupported("condition key %q is not supported", key)
		return nil, nil
	}
	if strings.HasPrefix(key, "request.") {
		if pf != nil {
			pf = httpOnly(t, "condition "+key, pf)
		} else {
			mf = httpOnly(t, "condition "+key, mf)
		}
	}
	if pf != nil {
		var ids []*rbacv3.Principal
		if p := t.principalField(c.GetValues(), pf); p != nil {
			ids = append(ids, p)
		}
		if p := t.principalField(c.GetNotValues(), pf); p != nil {
			ids = append(ids, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}})
		}
		if len(ids) == 0 {
			return nil, nil
		}
		return andIDs(ids), nil
	}
	var rules []*rbacv3.Permission
	if p := t.permissionField(c.GetValues(), mf); p != nil {
		rules = append(rules, p)
	}
	if p := t.permissionField(c.GetNotValues(), mf); p != nil {
		rules = append(rules, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}})
	}
	if len(rules) == 0 {
		return nil, nil
	}
	return nil, andRules(rules)
}

// bracket splits "[name]rest".
func bracket(s string) (name, rest string, ok bool) {
	if !strings.HasPrefix(s, "[") {
		return "", s, false
	}
	i := strings.IndexByte(s, ']')
	if i < 0 {
		return "", s, false
	}
	return s[1:i], s[i+1:], true
}

// Matcher helpers.

// stringMatch maps Istio's value syntax: "*" any non-empty, "x*" prefix,
// "*x" suffix, otherwise exact; prefix is prepended (e.g. "spiffe://").
func stringMatch(v, prefix string) *matcherv3.StringMatcher {
	switch {
	case v == "*":
		return regexMatch(regexp.QuoteMeta(prefix) + `.+`)
	case strings.HasSuffix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix + strings.TrimSuffix(v, "*")}}
	case strings.HasPrefix(v, "*"):
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(v, "*")}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: prefix + v}}
}

func regexMatch(re string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// globRegex quotes v, turning a leading or trailing "*" into wild.
func globRegex(v, wild string) string {
	switch {
	case v == "*":
		return wild
	case strings.HasPrefix(v, "*"):
		return wild + regexp.QuoteMeta(v[1:])
	case strings.HasSuffix(v, "*"):
		return regexp.QuoteMeta(v[:len(v)-1]) + wild
	}
	return regexp.QuoteMeta(v)
}

func anyPermission() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

func andRules(rs []*rbacv3.Permission) *rbacv3.Permission {
	switch len(rs) {
	case 0:
		return anyPermission()
	case 1:
		return rs[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: rs}}}
}

func orRules(rs []*rbacv3.Permission) *rbacv3.Permission {
	if len(rs) == 1 {
		return rs[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rs}}}
}

func andIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	switch len(ids) {
	case 0:
		return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
	case 1:
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ids}}}
}

func orIDs(ids []*rbacv3.Principal) *rbacv3.Principal {
	if len(ids) == 1 {
		return ids[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: ids}}}
}
