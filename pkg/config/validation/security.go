package validation

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"
)

func (v *validator) peerAuthentication(pa *security.PeerAuthentication) {
	v.checkSelector("spec.selector", pa.GetSelector())
	if len(pa.GetPortLevelMtls()) > 0 && len(pa.GetSelector().GetMatchLabels()) == 0 {
		v.errorf("spec.portLevelMtls", "portLevelMtls requires a workload selector")
	}
	for port := range pa.GetPortLevelMtls() {
		v.checkPort(key("spec.portLevelMtls", strconv.FormatUint(uint64(port), 10)), port)
	}
}

func (v *validator) requestAuthentication(ra *security.RequestAuthentication) {
	v.checkSelector("spec.selector", ra.GetSelector())
	if ra.GetSelector() != nil && ra.GetTargetRef() != nil {
		v.errorf("spec.targetRef", "selector and targetRef are mutually exclusive")
	}
	issuers := map[string]bool{}
	for i, r := range ra.GetJwtRules() {
		p := idx("spec.jwtRules", i)
		if r.GetIssuer() == "" {
			v.errorf(p+".issuer", "issuer is required")
		} else if issuers[r.GetIssuer()] {
			v.warnf(p+".issuer", "issuer %q appears in more than one rule", r.GetIssuer())
		}
		issuers[r.GetIssuer()] = true
		if r.GetJwks() != "" && r.GetJwksUri() != "" {
			v.errorf(p+".jwks", "jwks and jwksUri are mutually exclusive")
		}
		if u := r.GetJwksUri(); u != "" {
			pu, err := url.Parse(u)
			switch {
			case err != nil:
				v.errorf(p+".jwksUri", "invalid URL %q: %v", u, err)
			case pu.Scheme != "http" && pu.Scheme != "https":
				v.errorf(p+".jwksUri", "jwksUri %q must be an http or https URL", u)
			case pu.Host == "":
				v.errorf(p+".jwksUri", "jwksUri %q has no host", u)
			case pu.Scheme == "http":
				v.warnf(p+".jwksUri", "jwksUri %q uses plain http; keys can be tampered with in transit", u)
			}
		}
		for j, a := range r.GetAudiences() {
			if a == "" {
				v.errorf(idx(p+".audiences", j), "audience must not be empty")
			}
		}
		for j, h := range r.GetFromHeaders() {
			if h.GetName() == "" {
				v.errorf(idx(p+".fromHeaders", j)+".name", "header name is required")
			}
		}
		v.checkNonEmptyStrings(p+".fromParams", r.GetFromParams())
		v.checkNonEmptyStrings(p+".fromCookies", r.GetFromCookies())
		for j, c := range r.GetOutputClaimToHeaders() {
			cp := idx(p+".outputClaimToHeaders", j)
			if c.GetHeader() == "" {
				v.errorf(cp+".header", "header is required")
			}
			if c.GetClaim() == "" {
				v.errorf(cp+".claim", "claim is required")
			}
		}
		if r.GetTimeout() != nil {
			v.checkDuration(p+".timeout", r.GetTimeout())
		}
	}
}

var conditionKeys = []string{
	"request.headers", "source.ip", "remote.ip", "source.namespace", "source.principal",
	"request.auth.principal", "request.auth.audiences", "request.auth.presenter", "request.auth.claims",
	"destination.ip", "destination.port", "connection.sni", "experimental.envoy.filters.",
	"source.serviceAccount",
}

var bracketKeyRE = regexp.MustCompile(`^(request\.headers|request\.auth\.claims|experimental\.envoy\.filters\.[a-z_.]+)(\[[^\[\]]+\])+$`)

func (v *validator) authorizationPolicy(ap *security.AuthorizationPolicy) {
	v.checkSelector("spec.selector", ap.GetSelector())
	if ap.GetSelector() != nil && (ap.GetTargetRef() != nil || len(ap.GetTargetRefs()) > 0) {
		v.errorf("spec.targetRef", "selector and targetRef(s) are mutually exclusive")
	}
	switch ap.GetAction() {
	case security.AuthorizationPolicy_CUSTOM:
		if ap.GetProvider() == nil || ap.GetProvider().GetName() == "" {
			v.errorf("spec.action", "action CUSTOM needs a provider (spec.provider.name)")
		}
	default:
		if ap.GetProvider() != nil {
			v.errorf("spec.provider", "provider is only allowed with action CUSTOM (action is %s)", ap.GetAction())
		}
	}
	if ap.GetAction() == security.AuthorizationPolicy_DENY || ap.GetAction() == security.AuthorizationPolicy_AUDIT || ap.GetAction() == security.AuthorizationPolicy_CUSTOM {
		if len(ap.GetRules()) == 0 {
			v.warnf("spec.rules", "a %s policy without rules matches nothing", ap.GetAction())
		}
	}
	for i, r := range ap.GetRules() {
		p := idx("spec.rules", i)
		if r == nil {
			continue
		}
		if len(r.GetFrom()) == 0 && len(r.GetTo()) == 0 && len(r.GetWhen()) == 0 && ap.GetAction() != security.AuthorizationPolicy_ALLOW {
			v.warnf(p, "an empty rule matches every request")
		}
		for j, f := range r.GetFrom() {
			fp := idx(p+".from", j) + ".source"
			s := f.GetSource()
			if s == nil {
				v.errorf(fp, "source is required")
				continue
			}
			lists := map[string][]string{
				"principals": s.GetPrincipals(), "notPrincipals": s.GetNotPrincipals(),
				"requestPrincipals": s.GetRequestPrincipals(), "notRequestPrincipals": s.GetNotRequestPrincipals(),
				"namespaces": s.GetNamespaces(), "notNamespaces": s.GetNotNamespaces(),
				"ipBlocks": s.GetIpBlocks(), "notIpBlocks": s.GetNotIpBlocks(),
				"remoteIpBlocks": s.GetRemoteIpBlocks(), "notRemoteIpBlocks": s.GetNotRemoteIpBlocks(),
				"serviceAccounts": s.GetServiceAccounts(), "notServiceAccounts": s.GetNotServiceAccounts(),
			}
			empty := true
			for name, vals := range lists {
				if len(vals) > 0 {
					empty = false
				}
				v.checkNonEmptyStrings(fp+"."+name, vals)
			}
			if empty {
				v.errorf(fp, "source must set at least one field")
			}
			for _, name := range []string{"ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"} {
				for k, b := range lists[name] {
					if b != "" {
						v.checkCIDR(idx(fp+"."+name, k), b)
					}
				}
			}
			if len(s.GetServiceAccounts()) > 0 && (len(s.GetPrincipals()) > 0 || len(s.GetNotPrincipals()) > 0) {
				v.errorf(fp+".serviceAccounts", "serviceAccounts cannot be combined with principals or notPrincipals")
			}
			for name, vals := range lists {
				if name == "principals" || name == "notPrincipals" {
					for k, pr := range vals {
						if strings.HasPrefix(pr, "spiffe://") {
							v.errorf(idx(fp+"."+name, k), "principal %q must not include the spiffe:// prefix", pr)
						}
					}
				}
			}
		}
		for j, t := range r.GetTo() {
			tp := idx(p+".to", j) + ".operation"
			op := t.GetOperation()
			if op == nil {
				v.errorf(tp, "operation is required")
				continue
			}
			if len(op.GetHosts())+len(op.GetNotHosts())+len(op.GetPorts())+len(op.GetNotPorts())+len(op.GetMethods())+
				len(op.GetNotMethods())+len(op.GetPaths())+len(op.GetNotPaths()) == 0 {
				v.errorf(tp, "operation must set at least one field")
			}
			v.checkNonEmptyStrings(tp+".hosts", op.GetHosts())
			v.checkNonEmptyStrings(tp+".notHosts", op.GetNotHosts())
			for name, ports := range map[string][]string{"ports": op.GetPorts(), "notPorts": op.GetNotPorts()} {
				for k, port := range ports {
					if _, ok := parsePort(port); !ok {
						v.errorf(idx(tp+"."+name, k), "port %q must be a number between 1 and 65535", port)
					}
				}
			}
			for name, ms := range map[string][]string{"methods": op.GetMethods(), "notMethods": op.GetNotMethods()} {
				for k, m := range ms {
					switch {
					case m == "":
						v.errorf(idx(tp+"."+name, k), "value must not be empty")
					case strings.Contains(m, "/"):
						// gRPC methods ("/pkg.Service/Method") are allowed.
					case m != strings.ToUpper(m):
						v.errorf(idx(tp+"."+name, k), "HTTP method %q must be upper case (%q)", m, strings.ToUpper(m))
					case !httpMethods[m]:
						v.warnf(idx(tp+"."+name, k), "unknown HTTP method %q", m)
					}
				}
			}
			for name, ps := range map[string][]string{"paths": op.GetPaths(), "notPaths": op.GetNotPaths()} {
				for k, path := range ps {
					v.checkAuthzPath(idx(tp+"."+name, k), path)
				}
			}
		}
		for j, c := range r.GetWhen() {
			cp := idx(p+".when", j)
			v.checkCondition(cp, c)
		}
	}
}

// checkAuthzPath checks exact, prefix ("/a/*"), suffix ("*.js"), presence
// ("*") and template ("/a/{*}/b/{**}") paths.
func (v *validator) checkAuthzPath(path, p string) {
	if p == "" {
		v.errorf(path, "path must not be empty")
		return
	}
	if !strings.ContainsAny(p, "{}") {
		if strings.Count(p, "*") > 1 || (strings.Contains(p, "*") && p != "*" && !strings.HasPrefix(p, "*") && !strings.HasSuffix(p, "*")) {
			v.errorf(path, "invalid path %q: '*' is only allowed as a prefix, a suffix or alone (use {*} or {**} templates for segments)", p)
		}
		return
	}
	if !strings.HasPrefix(p, "/") {
		v.errorf(path, "path template %q must start with '/'", p)
		return
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if !strings.ContainsAny(seg, "{}*") {
			continue
		}
		switch seg {
		case "{*}":
		case "{**}":
			if i != len(segs)-1 {
				v.errorf(path, "invalid path template %q: {**} must be the last segment", p)
				return
			}
		default:
			v.errorf(path, "invalid path template %q: segment %q must be exactly {*} or {**}", p, seg)
			return
		}
	}
}

func (v *validator) checkCondition(p string, c *security.Condition) {
	k := c.GetKey()
	if k == "" {
		v.errorf(p+".key", "key is required")
		return
	}
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		v.errorf(p+".values", "values or notValues is required")
	}
	v.checkNonEmptyStrings(p+".values", c.GetValues())
	v.checkNonEmptyStrings(p+".notValues", c.GetNotValues())
	base := k
	if i := strings.Index(k, "["); i >= 0 {
		base = k[:i]
		if !bracketKeyRE.MatchString(k) {
			v.errorf(p+".key", "invalid key %q: use request.headers[NAME] or request.auth.claims[NAME]", k)
			return
		}
	} else if base == "request.headers" || base == "request.auth.claims" {
		v.errorf(p+".key", "key %q needs a name in brackets, e.g. %s[x-user]", k, k)
		return
	}
	known := false
	for _, ck := range conditionKeys {
		if base == ck || (strings.HasSuffix(ck, ".") && strings.HasPrefix(base, ck)) {
			known = true
		}
	}
	if !known {
		v.errorf(p+".key", "unknown condition key %q (known: %s)", k, strings.Join(conditionKeys, ", "))
		return
	}
	switch base {
	case "source.ip", "remote.ip", "destination.ip":
		for i, val := range c.GetValues() {
			if val != "" {
				v.checkCIDR(idx(p+".values", i), val)
			}
		}
		for i, val := range c.GetNotValues() {
			if val != "" {
				v.checkCIDR(idx(p+".notValues", i), val)
			}
		}
	case "destination.port":
		for i, val := range append(append([]string(nil), c.GetValues()...), c.GetNotValues()...) {
			field := ".values"
			j := i
			if i >= len(c.GetValues()) {
				field, j = ".notValues", i-len(c.GetValues())
			}
			if _, ok := parsePort(val); !ok && val != "" {
				v.errorf(idx(p+field, j), "port %q must be a number between 1 and 65535", val)
			}
		}
	}
}
