package validation

import (
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/gatewayapi"
)

// gatewayAPI validates the Gateway API kinds: the rules of the upstream
// CRDs' schema and CEL that weft depends on, plus errors for what weft does
// not translate (so nothing is silently ignored) and warnings where weft
// deliberately narrows the API.
func (v *validator) gatewayAPI() {
	var err error
	switch v.r.Kind {
	case config.KindGatewayClass:
		err = checkSpec(v, v.gatewayClass)
	case config.KindKubernetesGateway:
		err = checkSpec(v, v.kubernetesGateway)
	case config.KindHTTPRoute:
		err = checkSpec(v, v.gwHTTPRoute)
	case config.KindGRPCRoute:
		err = checkSpec(v, v.gwGRPCRoute)
	case config.KindTLSRoute:
		err = checkSpec(v, v.gwTLSRoute)
	case config.KindTCPRoute:
		err = checkSpec(v, v.gwTCPRoute)
	case config.KindReferenceGrant:
		err = checkSpec(v, v.referenceGrant)
	}
	if err != nil {
		v.errorf("spec", "%v", err)
	}
}

// checkSpec decodes the resource's spec as T and runs check on it.
func checkSpec[T any](v *validator, check func(*T)) error {
	var s T
	if err := gatewayapi.Spec(v.r.Spec, &s); err != nil {
		return err
	}
	check(&s)
	return nil
}

var controllerNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$`)

func (v *validator) gatewayClass(s *gatewayapi.GatewayClassSpec) {
	switch {
	case s.ControllerName == "":
		v.errorf("spec.controllerName", "controllerName is required (weft answers to %s and %s)", gatewayapi.ControllerIstio, gatewayapi.ControllerWeft)
	case !controllerNameRE.MatchString(s.ControllerName):
		v.errorf("spec.controllerName", "invalid controllerName %q: want a domain-prefixed path such as %s", s.ControllerName, gatewayapi.ControllerIstio)
	}
}

// unsupported reports something weft does not translate: an error on
// Gateways of class istio or weft; a warning on other classes, which may
// belong to another controller (or to a GatewayClass naming weft's
// controller, which validation cannot see).
func (v *validator) unsupported(ours bool, path, format string, args ...any) {
	if ours {
		v.errorf(path, format, args...)
	} else {
		v.warnf(path, format, args...)
	}
}

func (v *validator) kubernetesGateway(s *gatewayapi.GatewaySpec) {
	ours := s.GatewayClassName == "istio" || s.GatewayClassName == "weft"
	if s.GatewayClassName == "" {
		v.errorf("spec.gatewayClassName", "gatewayClassName is required (weft serves classes istio and weft)")
	} else if !config.IsDNS1123Subdomain(s.GatewayClassName) {
		v.errorf("spec.gatewayClassName", "invalid gatewayClassName %q: must be a DNS-1123 subdomain", s.GatewayClassName)
	}
	for i, a := range s.Addresses {
		p := idx("spec.addresses", i)
		switch t := gatewayapi.Deref(a.Type, "IPAddress"); t {
		case "IPAddress":
			if !isIP(a.Value) {
				v.errorf(p+".value", "invalid IPAddress %q", a.Value)
			}
		case "Hostname":
			v.checkHost(p+".value", a.Value, false)
		case "NamedAddress":
		default:
			v.errorf(p+".type", "unknown address type %q (IPAddress, Hostname, NamedAddress)", t)
		}
	}
	if len(s.Listeners) == 0 {
		v.errorf("spec.listeners", "a Gateway needs at least one listener")
	}
	names := map[string]bool{}
	type portKey struct {
		port     int32
		hostname string
	}
	protoOf := map[int32]string{}
	seen := map[portKey]bool{}
	for i, l := range s.Listeners {
		p := idx("spec.listeners", i)
		switch {
		case l.Name == "":
			v.errorf(p+".name", "listener name is required")
		case !config.IsDNS1123Subdomain(l.Name):
			v.errorf(p+".name", "invalid listener name %q: must be a DNS-1123 subdomain", l.Name)
		case names[l.Name]:
			v.errorf(p+".name", "listener name %q is used twice", l.Name)
		}
		names[l.Name] = true
		if l.Port < 1 || l.Port > 65535 {
			v.errorf(p+".port", "port %d out of range (1-65535)", l.Port)
		}
		host := gatewayapi.Deref(l.Hostname, "")
		if l.Hostname != nil {
			v.checkGatewayAPIHostname(p+".hostname", host)
		}
		switch l.Protocol {
		case "HTTP", "HTTPS", "TLS", "TCP":
		case "":
			v.errorf(p+".protocol", "protocol is required (weft translates HTTP, HTTPS, TLS and TCP)")
		case "UDP":
			v.unsupported(ours, p+".protocol", "protocol UDP is not supported by weft (UDPRoute is not translated)")
		default:
			v.unsupported(ours, p+".protocol", "protocol %q is not translated by weft (HTTP, HTTPS, TLS and TCP are)", l.Protocol)
		}
		if (l.Protocol == "TCP" || l.Protocol == "UDP") && l.Hostname != nil {
			v.errorf(p+".hostname", "hostname must not be set on a %s listener (only HTTP, HTTPS and TLS listeners match names)", l.Protocol)
		}
		if prev, ok := protoOf[l.Port]; ok && prev != l.Protocol && l.Protocol != "" {
			v.errorf(p+".protocol", "port %d is already an %s listener; listeners sharing a port must share its protocol", l.Port, prev)
		} else if !ok {
			protoOf[l.Port] = l.Protocol
		}
		if k := (portKey{l.Port, host}); seen[k] {
			v.errorf(p+".hostname", "another listener already serves port %d with hostname %q", l.Port, host)
		} else {
			seen[k] = true
		}
		v.listenerTLS(p, l, ours)
		if ar := l.AllowedRoutes; ar != nil {
			if ns := ar.Namespaces; ns != nil {
				switch from := gatewayapi.Deref(ns.From, "Same"); from {
				case "Same", "All":
				case "Selector":
					v.unsupported(ours, p+".allowedRoutes.namespaces.from", "from: Selector is not supported by weft (namespace labels are not read); use Same or All")
				default:
					v.errorf(p+".allowedRoutes.namespaces.from", "unknown value %q (Same, All, Selector)", from)
				}
			}
			for j, k := range ar.Kinds {
				kinds := gatewayapi.RouteKinds(l)
				switch {
				case gatewayapi.Deref(k.Group, gatewayapi.Group) != gatewayapi.Group || !slices.Contains(allRouteKinds, k.Kind):
					v.unsupported(ours, idx(p+".allowedRoutes.kinds", j), "route kind %s is not supported by weft (%s are)", k.Kind, strings.Join(allRouteKinds, ", "))
				case len(kinds) > 0 && !slices.Contains(kinds, k.Kind):
					v.errorf(idx(p+".allowedRoutes.kinds", j)+".kind", "a %s listener%s does not carry %s (it carries %s)", l.Protocol, modeNote(l), k.Kind, strings.Join(kinds, ", "))
				}
			}
		}
	}
}

// allRouteKinds are the route kinds weft translates.
var allRouteKinds = []string{"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"}

// modeNote names a TLS listener's mode in messages.
func modeNote(l gatewayapi.Listener) string {
	if l.Protocol == "TLS" {
		return " in mode " + l.TLSMode()
	}
	return ""
}

func (v *validator) listenerTLS(p string, l gatewayapi.Listener, ours bool) {
	switch l.Protocol {
	case "HTTP", "TCP", "UDP":
		if l.TLS != nil {
			v.errorf(p+".tls", "tls is only allowed on HTTPS and TLS listeners")
		}
		return
	case "HTTPS", "TLS":
	default:
		return
	}
	if l.TLS == nil {
		if l.Protocol == "TLS" {
			v.errorf(p+".tls", "a TLS listener needs tls: mode Passthrough, or mode Terminate with certificateRefs")
		} else {
			v.errorf(p+".tls", "an HTTPS listener needs tls with certificateRefs")
		}
		return
	}
	m := gatewayapi.Deref(l.TLS.Mode, gatewayapi.TLSModeTerminate)
	switch {
	case m != gatewayapi.TLSModeTerminate && m != gatewayapi.TLSModePassthrough:
		v.errorf(p+".tls.mode", "unknown tls mode %q (Terminate, Passthrough)", m)
		return
	case m == gatewayapi.TLSModePassthrough && l.Protocol == "HTTPS":
		v.errorf(p+".tls.mode", "tls mode Passthrough is not allowed on an HTTPS listener (use protocol TLS with TLSRoutes)")
		return
	case m == gatewayapi.TLSModePassthrough:
		if len(l.TLS.CertificateRefs) > 0 {
			v.warnf(p+".tls.certificateRefs", "certificateRefs are not used in mode Passthrough (the backends terminate TLS)")
		}
		return
	}
	if len(l.TLS.CertificateRefs) == 0 {
		v.errorf(p+".tls.certificateRefs", "an %s listener in mode Terminate needs at least one certificateRef", l.Protocol)
	}
	for j, c := range l.TLS.CertificateRefs {
		cp := idx(p+".tls.certificateRefs", j)
		if gatewayapi.Deref(c.Group, "") != "" || gatewayapi.Deref(c.Kind, "Secret") != "Secret" {
			v.unsupported(ours, cp, "certificateRef %s/%s is not supported (weft reads core Secrets only)", gatewayapi.Deref(c.Group, ""), gatewayapi.Deref(c.Kind, "Secret"))
		}
		if c.Name == "" {
			v.errorf(cp+".name", "name is required")
		}
		if ns := gatewayapi.Deref(c.Namespace, ""); ns != "" && !config.IsDNS1123Label(ns) {
			v.errorf(cp+".namespace", "invalid namespace %q", ns)
		}
	}
	if len(l.TLS.CertificateRefs) > 1 {
		v.warnf(p+".tls.certificateRefs", "weft serves the first certificateRef only")
	}
}

// checkGatewayAPIHostname checks a listener or route hostname: a DNS name,
// optionally with a leading "*." label, never an IP address.
func (v *validator) checkGatewayAPIHostname(path, h string) {
	if isIP(h) {
		v.errorf(path, "hostname %q must be a DNS name, not an IP address", h)
		return
	}
	if h == "*" || (strings.Contains(h, "*") && !strings.HasPrefix(h, "*.")) {
		v.errorf(path, "invalid hostname %q: a wildcard must be the whole leftmost label (\"*.example.com\")", h)
		return
	}
	v.checkHost(path, h, false)
}

var gwHTTPMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace, http.MethodPatch}

var headerNameRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$")

func (v *validator) gwHTTPRoute(s *gatewayapi.HTTPRouteSpec) {
	v.routeParents(s.ParentRefs, s.Hostnames, true)
	for i, rule := range s.Rules {
		v.httpRouteRule(idx("spec.rules", i), rule)
	}
}

var (
	grpcServiceRE = regexp.MustCompile(`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`)
	grpcMethodRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
)

func (v *validator) gwGRPCRoute(s *gatewayapi.GRPCRouteSpec) {
	v.routeParents(s.ParentRefs, s.Hostnames, true)
	for i, rule := range s.Rules {
		p := idx("spec.rules", i)
		for j, m := range rule.Matches {
			mp := idx(p+".matches", j)
			if mm := m.Method; mm != nil {
				svc, meth := gatewayapi.Deref(mm.Service, ""), gatewayapi.Deref(mm.Method, "")
				switch t := gatewayapi.Deref(mm.Type, "Exact"); t {
				case "Exact":
					if svc == "" && meth == "" {
						v.errorf(mp+".method", "an Exact method match needs service or method")
					}
					if svc != "" && !grpcServiceRE.MatchString(svc) {
						v.errorf(mp+".method.service", "invalid gRPC service name %q", svc)
					}
					if meth != "" && !grpcMethodRE.MatchString(meth) {
						v.errorf(mp+".method.method", "invalid gRPC method name %q", meth)
					}
				case "RegularExpression":
					if svc != "" {
						v.checkRegex(mp+".method.service", svc)
					}
					if meth != "" {
						v.checkRegex(mp+".method.method", meth)
					}
				default:
					v.errorf(mp+".method.type", "unknown method match type %q (Exact, RegularExpression)", t)
				}
			}
			v.checkHeaderMatches(mp, m.Headers)
		}
		v.grpcFilterTypes(p+".filters", rule.Filters)
		v.httpFilters(p+".filters", rule.Filters, true, false)
		for j, b := range rule.BackendRefs {
			bp := idx(p+".backendRefs", j)
			v.backendRef(bp, b.BackendObjectReference)
			if w := gatewayapi.Deref(b.Weight, 1); w < 0 || w > 1000000 {
				v.errorf(bp+".weight", "weight %d out of range (0-1000000)", w)
			}
			v.grpcFilterTypes(bp+".filters", b.Filters)
			v.httpFilters(bp+".filters", b.Filters, true, true)
		}
	}
}

// grpcFilterTypes refuses the HTTPRoute-only filter types in a GRPCRoute.
func (v *validator) grpcFilterTypes(p string, fs []gatewayapi.HTTPRouteFilter) {
	for i, f := range fs {
		if f.Type == gatewayapi.FilterRequestRedirect || f.Type == gatewayapi.FilterURLRewrite {
			v.errorf(idx(p, i)+".type", "%s is not a GRPCRoute filter (RequestHeaderModifier, ResponseHeaderModifier, RequestMirror)", f.Type)
		}
	}
}

// gwTLSRoute checks a TLSRoute: parents, hostnames (SNI names; required
// by TLSRoute v1), rules with weighted Service backends.
func (v *validator) gwTLSRoute(s *gatewayapi.TLSRouteSpec) {
	v.routeParents(s.ParentRefs, s.Hostnames, false)
	if len(s.Hostnames) == 0 && strings.HasSuffix(v.r.APIVersion, "/v1") {
		v.errorf("spec.hostnames", "a TLSRoute (v1) needs at least one hostname (the SNI names it routes)")
	}
	v.l4Rules(s.Rules)
}

// gwTCPRoute checks a TCPRoute: parents, rules with weighted Service
// backends.
func (v *validator) gwTCPRoute(s *gatewayapi.TCPRouteSpec) {
	v.routeParents(s.ParentRefs, nil, false)
	v.l4Rules(s.Rules)
}

func (v *validator) l4Rules(rules []gatewayapi.L4RouteRule) {
	if len(rules) == 0 {
		v.errorf("spec.rules", "a route needs at least one rule")
	}
	for i, rule := range rules {
		p := idx("spec.rules", i)
		if len(rule.BackendRefs) == 0 {
			v.errorf(p+".backendRefs", "a rule needs at least one backendRef")
		}
		for j, b := range rule.BackendRefs {
			bp := idx(p+".backendRefs", j)
			v.backendRef(bp, b.BackendObjectReference)
			if w := gatewayapi.Deref(b.Weight, 1); w < 0 || w > 1000000 {
				v.errorf(bp+".weight", "weight %d out of range (0-1000000)", w)
			}
		}
	}
	if len(rules) > 1 {
		v.warnf("spec.rules", "only the first rule with a usable backend receives connections (TLSRoute and TCPRoute rules have no matches)")
	}
}

// routeParents checks a route's parentRefs and hostnames; Service
// parents (GAMMA) are allowed for HTTP routes only.
func (v *validator) routeParents(parentRefs []gatewayapi.ParentReference, hostnames []string, http bool) {
	s := struct {
		ParentRefs []gatewayapi.ParentReference
		Hostnames  []string
	}{parentRefs, hostnames}
	if len(s.ParentRefs) == 0 {
		v.warnf("spec.parentRefs", "the route has no parentRefs, so it attaches to nothing")
	}
	for i, pr := range s.ParentRefs {
		p := idx("spec.parentRefs", i)
		if pr.Name == "" {
			v.errorf(p+".name", "name is required")
		}
		switch {
		case pr.IsGateway():
		case pr.IsService() && !http:
			v.errorf(p, "a %s cannot have a Service parent: weft routes TLS and TCP in the mesh with Istio VirtualServices, not GAMMA", v.r.Kind)
		case pr.IsService():
			if pr.SectionName != nil {
				v.errorf(p+".sectionName", "sectionName is not supported for a Service parent (use port)")
			}
		default:
			v.errorf(p, "parent %s/%s is not supported: weft attaches HTTPRoutes to Gateways (group %s) and, for mesh routing, Services (group \"\")",
				pr.GroupOr(gatewayapi.Group), pr.KindOr("Gateway"), gatewayapi.Group)
		}
		if pr.Port != nil && (*pr.Port < 1 || *pr.Port > 65535) {
			v.errorf(p+".port", "port %d out of range (1-65535)", *pr.Port)
		}
	}
	for i, h := range s.Hostnames {
		v.checkGatewayAPIHostname(idx("spec.hostnames", i), h)
	}
}

func (v *validator) httpRouteRule(p string, rule gatewayapi.HTTPRouteRule) {
	allPrefix := true
	for j, m := range rule.Matches {
		mp := idx(p+".matches", j)
		if m.Path != nil {
			val := gatewayapi.Deref(m.Path.Value, "/")
			switch t := gatewayapi.Deref(m.Path.Type, "PathPrefix"); t {
			case "Exact", "PathPrefix":
				if !strings.HasPrefix(val, "/") {
					v.errorf(mp+".path.value", "path %q must start with /", val)
				}
				if strings.Contains(val, "//") || strings.Contains(val, "/./") || strings.Contains(val, "/../") || strings.HasSuffix(val, "/..") || strings.HasSuffix(val, "/.") {
					v.errorf(mp+".path.value", "path %q must not contain //, /./ or /../", val)
				}
				if t != "PathPrefix" {
					allPrefix = false
				}
			case "RegularExpression":
				v.checkRegex(mp+".path.value", val)
				allPrefix = false
			default:
				v.errorf(mp+".path.type", "unknown path match type %q (Exact, PathPrefix, RegularExpression)", t)
			}
		}
		v.checkHeaderMatches(mp, m.Headers)
		seenQ := map[string]bool{}
		for k, q := range m.QueryParams {
			qp := idx(mp+".queryParams", k)
			v.checkNameValueMatch(qp, gatewayapi.Deref(q.Type, "Exact"), q.Name, q.Value, false)
			if seenQ[q.Name] {
				v.errorf(qp+".name", "query parameter %q is matched twice in one match", q.Name)
			}
			seenQ[q.Name] = true
		}
		if m.Method != nil {
			ok := false
			for _, x := range gwHTTPMethods {
				ok = ok || x == *m.Method
			}
			if !ok {
				v.errorf(mp+".method", "unknown method %q (%s)", *m.Method, strings.Join(gwHTTPMethods, ", "))
			}
		}
	}
	if len(rule.Matches) == 0 {
		allPrefix = true // the default match is PathPrefix /
	}
	redirect, rewrite := v.httpFilters(p+".filters", rule.Filters, allPrefix, false)
	if redirect && rewrite {
		v.errorf(p+".filters", "a rule may not have both RequestRedirect and URLRewrite")
	}
	if redirect && len(rule.BackendRefs) > 0 {
		v.errorf(p+".backendRefs", "a rule with a RequestRedirect filter must not have backendRefs")
	}
	for j, b := range rule.BackendRefs {
		bp := idx(p+".backendRefs", j)
		v.backendRef(bp, b.BackendObjectReference)
		if w := gatewayapi.Deref(b.Weight, 1); w < 0 || w > 1000000 {
			v.errorf(bp+".weight", "weight %d out of range (0-1000000)", w)
		}
		v.httpFilters(bp+".filters", b.Filters, allPrefix, true)
	}
	if t := rule.Timeouts; t != nil {
		var req, be int64 = -1, -1
		if t.Request != nil {
			if d, err := gatewayapi.ParseDuration(*t.Request); err != nil {
				v.errorf(p+".timeouts.request", "%v", err)
			} else {
				req = int64(d)
			}
		}
		if t.BackendRequest != nil {
			if d, err := gatewayapi.ParseDuration(*t.BackendRequest); err != nil {
				v.errorf(p+".timeouts.backendRequest", "%v", err)
			} else {
				be = int64(d)
			}
		}
		if req > 0 && be > req {
			v.errorf(p+".timeouts.backendRequest", "backendRequest (%s) must not be longer than request (%s)", *t.BackendRequest, *t.Request)
		}
	}
}

// checkHeaderMatches checks the header matches of one HTTPRoute or
// GRPCRoute match at path mp: each name/value/type, and no header
// (case-insensitive) matched twice.
func (v *validator) checkHeaderMatches(mp string, headers []gatewayapi.HTTPHeaderMatch) {
	seen := map[string]bool{}
	for k, h := range headers {
		hp := idx(mp+".headers", k)
		v.checkNameValueMatch(hp, gatewayapi.Deref(h.Type, "Exact"), h.Name, h.Value, true)
		if n := strings.ToLower(h.Name); seen[n] {
			v.errorf(hp+".name", "header %q is matched twice in one match", h.Name)
		} else {
			seen[n] = true
		}
	}
}

func (v *validator) checkNameValueMatch(p, typ, name, value string, header bool) {
	if name == "" {
		v.errorf(p+".name", "name is required")
	} else if header && !headerNameRE.MatchString(name) {
		v.errorf(p+".name", "invalid header name %q", name)
	}
	switch typ {
	case "Exact":
	case "RegularExpression":
		v.checkRegex(p+".value", value)
	default:
		v.errorf(p+".type", "unknown match type %q (Exact, RegularExpression)", typ)
	}
}

func (v *validator) backendRef(p string, b gatewayapi.BackendObjectReference) {
	if b.Name == "" {
		v.errorf(p+".name", "name is required")
	}
	if !b.IsService() {
		v.errorf(p, "backend %s/%s is not supported (weft routes to core Services)", gatewayapi.Deref(b.Group, ""), gatewayapi.Deref(b.Kind, "Service"))
		return
	}
	if b.Port == nil {
		v.errorf(p+".port", "port is required for a Service backend")
	} else if *b.Port < 1 || *b.Port > 65535 {
		v.errorf(p+".port", "port %d out of range (1-65535)", *b.Port)
	}
}

func (v *validator) referenceGrant(s *gatewayapi.ReferenceGrantSpec) {
	if len(s.From) == 0 {
		v.errorf("spec.from", "from needs at least one entry")
	}
	if len(s.To) == 0 {
		v.errorf("spec.to", "to needs at least one entry")
	}
	for i, f := range s.From {
		p := idx("spec.from", i)
		if f.Kind == "" {
			v.errorf(p+".kind", "kind is required")
		}
		if !config.IsDNS1123Label(f.Namespace) {
			v.errorf(p+".namespace", "invalid namespace %q", f.Namespace)
		}
	}
	for i, t := range s.To {
		if t.Kind == "" {
			v.errorf(idx("spec.to", i)+".kind", "kind is required")
		}
	}
}

// httpFilters checks a rule's (or a backend's) filters and reports
// whether they include a redirect and a rewrite.
func (v *validator) httpFilters(p string, fs []gatewayapi.HTTPRouteFilter, allPrefix, backend bool) (redirect, rewrite bool) {
	count := map[string]int{}
	for i, f := range fs {
		fp := idx(p, i)
		set := map[string]bool{
			gatewayapi.FilterRequestHeaderModifier:  f.RequestHeaderModifier != nil,
			gatewayapi.FilterResponseHeaderModifier: f.ResponseHeaderModifier != nil,
			gatewayapi.FilterRequestMirror:          f.RequestMirror != nil,
			gatewayapi.FilterRequestRedirect:        f.RequestRedirect != nil,
			gatewayapi.FilterURLRewrite:             f.URLRewrite != nil,
			gatewayapi.FilterExtensionRef:           f.ExtensionRef != nil,
		}
		for typ, ok := range set {
			if ok && typ != f.Type {
				v.errorf(fp+"."+fieldOf(typ), "%s is set but the filter's type is %q", fieldOf(typ), f.Type)
			}
		}
		if _, known := set[f.Type]; !known {
			v.errorf(fp+".type", "unknown filter type %q (weft supports RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror)", f.Type)
			continue
		}
		if !set[f.Type] {
			v.errorf(fp+"."+fieldOf(f.Type), "a %s filter needs its %s field", f.Type, fieldOf(f.Type))
			continue
		}
		count[f.Type]++
		if backend && f.Type != gatewayapi.FilterRequestHeaderModifier && f.Type != gatewayapi.FilterResponseHeaderModifier {
			v.errorf(fp+".type", "%s filters on a backendRef are not supported by weft (only header modifiers)", f.Type)
			continue
		}
		switch f.Type {
		case gatewayapi.FilterRequestHeaderModifier, gatewayapi.FilterResponseHeaderModifier:
			if count[f.Type] > 1 {
				v.errorf(fp, "only one %s filter is allowed per rule", f.Type)
			}
			hf := f.RequestHeaderModifier
			if hf == nil {
				hf = f.ResponseHeaderModifier
			}
			v.headerFilter(fp+"."+fieldOf(f.Type), hf)
		case gatewayapi.FilterRequestRedirect:
			redirect = true
			v.redirectFilter(fp+".requestRedirect", f.RequestRedirect, allPrefix)
		case gatewayapi.FilterURLRewrite:
			rewrite = true
			if count[f.Type] > 1 {
				v.errorf(fp, "only one URLRewrite filter is allowed per rule")
			}
			if f.URLRewrite.Hostname != nil {
				v.checkGatewayAPIHostname(fp+".urlRewrite.hostname", *f.URLRewrite.Hostname)
			}
			v.pathModifier(fp+".urlRewrite.path", f.URLRewrite.Path, allPrefix)
		case gatewayapi.FilterRequestMirror:
			m := f.RequestMirror
			v.backendRef(fp+".requestMirror.backendRef", m.BackendRef)
			if m.Percent != nil && m.Fraction != nil {
				v.errorf(fp+".requestMirror", "only one of percent and fraction may be set")
			}
			if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
				v.errorf(fp+".requestMirror.percent", "percent %d out of range (0-100)", *m.Percent)
			}
			if fr := m.Fraction; fr != nil {
				den := gatewayapi.Deref(fr.Denominator, 100)
				if den < 1 || fr.Numerator < 0 || fr.Numerator > den {
					v.errorf(fp+".requestMirror.fraction", "fraction %d/%d: want 0 <= numerator <= denominator, denominator >= 1", fr.Numerator, den)
				}
			}
		case gatewayapi.FilterExtensionRef:
			v.errorf(fp+".type", "ExtensionRef filters are not supported by weft (%s/%s %s)", f.ExtensionRef.Group, f.ExtensionRef.Kind, f.ExtensionRef.Name)
		}
	}
	return redirect, rewrite
}

func fieldOf(filterType string) string {
	switch filterType {
	case gatewayapi.FilterURLRewrite:
		return "urlRewrite"
	case gatewayapi.FilterExtensionRef:
		return "extensionRef"
	}
	return strings.ToLower(filterType[:1]) + filterType[1:]
}

func (v *validator) headerFilter(p string, hf *gatewayapi.HTTPHeaderFilter) {
	seen := map[string]bool{}
	check := func(fp, name string) {
		switch {
		case name == "":
			v.errorf(fp, "header name is required")
		case !headerNameRE.MatchString(name):
			v.errorf(fp, "invalid header name %q", name)
		case seen[strings.ToLower(name)]:
			v.errorf(fp, "header %q appears twice in one filter", name)
		}
		seen[strings.ToLower(name)] = true
	}
	for i, h := range hf.Set {
		check(idx(p+".set", i)+".name", h.Name)
	}
	for i, h := range hf.Add {
		check(idx(p+".add", i)+".name", h.Name)
	}
	for i, h := range hf.Remove {
		check(idx(p+".remove", i), h)
	}
}

func (v *validator) redirectFilter(p string, r *gatewayapi.HTTPRequestRedirectFilter, allPrefix bool) {
	if r.Scheme != nil && *r.Scheme != "http" && *r.Scheme != "https" {
		v.errorf(p+".scheme", "scheme %q must be http or https", *r.Scheme)
	}
	if r.Hostname != nil {
		v.checkGatewayAPIHostname(p+".hostname", *r.Hostname)
	}
	if r.Port != nil && (*r.Port < 1 || *r.Port > 65535) {
		v.errorf(p+".port", "port %d out of range (1-65535)", *r.Port)
	}
	if c := gatewayapi.Deref(r.StatusCode, 302); c != 301 && c != 302 && c != 303 && c != 307 && c != 308 {
		v.errorf(p+".statusCode", "statusCode %d is not a redirect (301, 302, 303, 307, 308)", c)
	}
	if r.Path != nil && r.Path.Type == gatewayapi.PrefixMatchHTTPPathModifier {
		v.errorf(p+".path.type", "ReplacePrefixMatch in a RequestRedirect is not supported by weft (use ReplaceFullPath, or a URLRewrite)")
		return
	}
	v.pathModifier(p+".path", r.Path, allPrefix)
}

func (v *validator) pathModifier(p string, m *gatewayapi.HTTPPathModifier, allPrefix bool) {
	if m == nil {
		return
	}
	switch m.Type {
	case gatewayapi.FullPathHTTPPathModifier:
		if m.ReplaceFullPath == nil {
			v.errorf(p+".replaceFullPath", "ReplaceFullPath needs replaceFullPath")
		} else if !strings.HasPrefix(*m.ReplaceFullPath, "/") {
			v.errorf(p+".replaceFullPath", "path %q must start with /", *m.ReplaceFullPath)
		}
		if m.ReplacePrefixMatch != nil {
			v.errorf(p+".replacePrefixMatch", "replacePrefixMatch is set but the type is ReplaceFullPath")
		}
	case gatewayapi.PrefixMatchHTTPPathModifier:
		if m.ReplacePrefixMatch == nil {
			v.errorf(p+".replacePrefixMatch", "ReplacePrefixMatch needs replacePrefixMatch")
		} else if !strings.HasPrefix(*m.ReplacePrefixMatch, "/") {
			v.errorf(p+".replacePrefixMatch", "path %q must start with /", *m.ReplacePrefixMatch)
		}
		if m.ReplaceFullPath != nil {
			v.errorf(p+".replaceFullPath", "replaceFullPath is set but the type is ReplacePrefixMatch")
		}
		if !allPrefix {
			v.errorf(p+".type", "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
		}
	default:
		v.errorf(p+".type", "unknown path modifier type %q (ReplaceFullPath, ReplacePrefixMatch)", m.Type)
	}
}
