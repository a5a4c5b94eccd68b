package validation

import (
	"net/url"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

func (v *validator) virtualService(vs *networking.VirtualService) {
	delegate := len(vs.GetHosts()) == 0
	mesh := len(vs.GetGateways()) == 0
	for i, g := range vs.GetGateways() {
		if g == "mesh" {
			mesh = true
		}
		v.checkGatewayRef(idx("spec.gateways", i), g)
	}
	seen := map[string]bool{}
	for i, h := range vs.GetHosts() {
		p := idx("spec.hosts", i)
		if seen[h] {
			v.errorf(p, "duplicate host %q", h)
		}
		seen[h] = true
		switch {
		case h == "*" && mesh:
			v.errorf(p, "wildcard host \"*\" is not allowed for virtual services bound to the mesh gateway")
		case isIP(h):
			if len(vs.GetHttp()) > 0 {
				v.warnf(p, "IP address %q as host: HTTP routes match the Host header, which rarely carries an IP; prefer a host name", h)
			}
		default:
			v.checkHost(p, h, true)
		}
	}
	for i, ns := range vs.GetExportTo() {
		v.checkExportTo(idx("spec.exportTo", i), ns)
	}
	if delegate && len(vs.GetGateways()) > 0 {
		v.errorf("spec.gateways", "a delegate virtual service (no hosts) must not set gateways")
	}
	if len(vs.GetHttp()) == 0 && len(vs.GetTcp()) == 0 && len(vs.GetTls()) == 0 {
		v.errorf("spec", "a virtual service needs at least one http, tcp or tls route")
	}
	names := map[string]bool{}
	for i, r := range vs.GetHttp() {
		p := idx("spec.http", i)
		if r.GetName() != "" {
			if names[r.GetName()] {
				v.warnf(p+".name", "duplicate route name %q", r.GetName())
			}
			names[r.GetName()] = true
		}
		v.httpRoute(p, r)
	}
	for i, r := range vs.GetTcp() {
		p := idx("spec.tcp", i)
		for j, m := range r.GetMatch() {
			mp := idx(p+".match", j)
			for k, s := range m.GetDestinationSubnets() {
				v.checkCIDR(idx(mp+".destinationSubnets", k), s)
			}
			if m.GetPort() != 0 {
				v.checkPort(mp+".port", m.GetPort())
			}
			v.checkLabels(mp+".sourceLabels", m.GetSourceLabels())
		}
		v.routeDestinations(p+".route", r.GetRoute())
	}
	for i, r := range vs.GetTls() {
		p := idx("spec.tls", i)
		if len(r.GetMatch()) == 0 {
			v.errorf(p+".match", "a tls route needs at least one match")
		}
		for j, m := range r.GetMatch() {
			mp := idx(p+".match", j)
			if len(m.GetSniHosts()) == 0 {
				v.errorf(mp+".sniHosts", "sniHosts is required")
			}
			for k, h := range m.GetSniHosts() {
				v.checkHost(idx(mp+".sniHosts", k), h, true)
			}
			for k, s := range m.GetDestinationSubnets() {
				v.checkCIDR(idx(mp+".destinationSubnets", k), s)
			}
		}
		v.routeDestinations(p+".route", r.GetRoute())
	}
}

func (v *validator) routeDestinations(path string, rds []*networking.RouteDestination) {
	if len(rds) == 0 {
		v.errorf(path, "route must have at least one destination")
		return
	}
	sum := int32(0)
	for i, rd := range rds {
		p := idx(path, i)
		v.destination(p+".destination", rd.GetDestination())
		if rd.GetWeight() < 0 {
			v.errorf(p+".weight", "weight must not be negative (got %d)", rd.GetWeight())
		}
		sum += rd.GetWeight()
	}
	v.checkWeightSum(path, len(rds), sum)
}

// checkWeightSum reports a bad total at the last destination's weight (the
// line a user edits last), as in "spec.http[0].route[1].weight".
func (v *validator) checkWeightSum(path string, n int, sum int32) {
	if n > 1 && sum != 100 && sum != 0 {
		v.errorf(idx(path, n-1)+".weight", "weights must sum to 100 (got %d)", sum)
	}
	if n == 1 && sum != 0 && sum != 100 {
		v.warnf(path, "a single destination gets all traffic; its weight %d is ignored", sum)
	}
}

func (v *validator) destination(path string, d *networking.Destination) {
	if d == nil {
		v.errorf(path, "destination is required")
		return
	}
	if d.GetHost() == "" {
		v.errorf(path+".host", "destination host is required")
	} else if d.GetHost() == "*" || strings.Contains(d.GetHost(), "*") {
		v.errorf(path+".host", "destination host %q must not be a wildcard", d.GetHost())
	} else if !isIP(d.GetHost()) {
		v.checkHost(path+".host", d.GetHost(), false)
	}
	if d.GetSubset() != "" && !isDNSLabel(d.GetSubset()) {
		v.errorf(path+".subset", "invalid subset name %q", d.GetSubset())
	}
	if d.GetPort() != nil {
		v.checkPort(path+".port.number", d.GetPort().GetNumber())
	}
}

func (v *validator) stringMatch(path string, m *networking.StringMatch) {
	if m == nil {
		return
	}
	switch t := m.GetMatchType().(type) {
	case *networking.StringMatch_Regex:
		v.checkRegex(path+".regex", t.Regex)
	case nil:
		v.errorf(path, "one of exact, prefix or regex is required")
	}
}

func (v *validator) httpRoute(p string, r *networking.HTTPRoute) {
	for j, m := range r.GetMatch() {
		mp := idx(p+".match", j)
		v.stringMatch(mp+".uri", m.GetUri())
		v.stringMatch(mp+".scheme", m.GetScheme())
		v.stringMatch(mp+".method", m.GetMethod())
		v.stringMatch(mp+".authority", m.GetAuthority())
		for k, sm := range m.GetHeaders() {
			if k == "" {
				v.errorf(mp+".headers", "header name must not be empty")
			}
			if k != strings.ToLower(k) {
				v.errorf(key(mp+".headers", k), "header name %q must be lower case", k)
			}
			if sm != nil && sm.GetMatchType() != nil {
				v.stringMatch(key(mp+".headers", k), sm)
			}
		}
		for k, sm := range m.GetWithoutHeaders() {
			if sm != nil && sm.GetMatchType() != nil {
				v.stringMatch(key(mp+".withoutHeaders", k), sm)
			}
		}
		for k, sm := range m.GetQueryParams() {
			if sm != nil && sm.GetMatchType() != nil {
				v.stringMatch(key(mp+".queryParams", k), sm)
			}
		}
		if m.GetPort() != 0 {
			v.checkPort(mp+".port", m.GetPort())
		}
		v.checkLabels(mp+".sourceLabels", m.GetSourceLabels())
		for k, g := range m.GetGateways() {
			v.checkGatewayRef(idx(mp+".gateways", k), g)
		}
	}
	hasRoute, hasRedirect, hasDirect := len(r.GetRoute()) > 0, r.GetRedirect() != nil, r.GetDirectResponse() != nil
	switch {
	case hasRoute && hasRedirect:
		v.errorf(p+".redirect", "a route may not have both route and redirect")
	case hasRoute && hasDirect:
		v.errorf(p+".directResponse", "a route may not have both route and directResponse")
	case hasRedirect && hasDirect:
		v.errorf(p+".directResponse", "a route may not have both redirect and directResponse")
	case !hasRoute && !hasRedirect && !hasDirect && r.GetDelegate() == nil:
		v.errorf(p+".route", "an http route needs a route, redirect, directResponse or delegate")
	}
	if hasRedirect || hasDirect {
		if r.GetRewrite() != nil {
			v.errorf(p+".rewrite", "rewrite cannot be used with redirect or directResponse")
		}
		if r.GetFault() != nil {
			v.errorf(p+".fault", "fault cannot be used with redirect or directResponse")
		}
	}
	if d := r.GetDirectResponse(); d != nil && (d.GetStatus() < 200 || d.GetStatus() > 599) {
		v.errorf(p+".directResponse.status", "status %d must be between 200 and 599", d.GetStatus())
	}
	if rd := r.GetRedirect(); rd != nil {
		if c := rd.GetRedirectCode(); c != 0 && (c < 300 || c > 399) {
			v.errorf(p+".redirect.redirectCode", "redirect code %d must be 3xx", c)
		}
		if rd.GetUri() == "" && rd.GetAuthority() == "" && rd.GetScheme() == "" && rd.GetPort() == 0 && rd.GetDerivePort() == 0 {
			v.errorf(p+".redirect", "redirect must set at least one of uri, authority, scheme or port")
		}
	}
	if rw := r.GetRewrite(); rw != nil && rw.GetUri() != "" && rw.GetUriRegexRewrite() != nil {
		v.errorf(p+".rewrite", "uri and uriRegexRewrite are mutually exclusive")
	}
	if rr := r.GetRewrite().GetUriRegexRewrite(); rr != nil {
		v.checkRegex(p+".rewrite.uriRegexRewrite.match", rr.GetMatch())
	}
	sum := int32(0)
	for j, rd := range r.GetRoute() {
		rp := idx(p+".route", j)
		v.destination(rp+".destination", rd.GetDestination())
		if rd.GetWeight() < 0 {
			v.errorf(rp+".weight", "weight must not be negative (got %d)", rd.GetWeight())
		}
		sum += rd.GetWeight()
	}
	if len(r.GetRoute()) > 0 {
		v.checkWeightSum(p+".route", len(r.GetRoute()), sum)
	}
	v.checkDuration(p+".timeout", r.GetTimeout())
	if rt := r.GetRetries(); rt != nil {
		if rt.GetAttempts() < 0 {
			v.errorf(p+".retries.attempts", "attempts must not be negative (got %d)", rt.GetAttempts())
		}
		v.checkDuration(p+".retries.perTryTimeout", rt.GetPerTryTimeout())
		for _, cond := range strings.Split(rt.GetRetryOn(), ",") {
			cond = strings.TrimSpace(cond)
			if cond == "" && rt.GetRetryOn() != "" {
				v.errorf(p+".retries.retryOn", "empty retry condition in %q", rt.GetRetryOn())
			}
		}
		if t, pt := r.GetTimeout(), rt.GetPerTryTimeout(); t != nil && pt != nil && pt.AsDuration() > t.AsDuration() {
			v.warnf(p+".retries.perTryTimeout", "perTryTimeout %s exceeds the route timeout %s", pt.AsDuration(), t.AsDuration())
		}
	}
	if f := r.GetFault(); f != nil {
		if f.GetDelay() == nil && f.GetAbort() == nil {
			v.errorf(p+".fault", "fault needs delay or abort")
		}
		if d := f.GetDelay(); d != nil {
			if d.GetPercentage() != nil {
				v.checkPercent(p+".fault.delay.percentage.value", d.GetPercentage().GetValue())
			}
			//nolint:staticcheck // the deprecated integer percent is still accepted by Istio.
			if d.GetPercent() < 0 || d.GetPercent() > 100 {
				v.errorf(p+".fault.delay.percent", "percent must be between 0 and 100, got %d", d.GetPercent())
			}
			if d.GetFixedDelay() == nil && d.GetExponentialDelay() == nil {
				v.errorf(p+".fault.delay.fixedDelay", "fixedDelay is required")
			}
			v.checkDuration(p+".fault.delay.fixedDelay", d.GetFixedDelay())
		}
		if a := f.GetAbort(); a != nil {
			if a.GetPercentage() != nil {
				v.checkPercent(p+".fault.abort.percentage.value", a.GetPercentage().GetValue())
			}
			switch t := a.GetErrorType().(type) {
			case *networking.HTTPFaultInjection_Abort_HttpStatus:
				if t.HttpStatus < 200 || t.HttpStatus > 599 {
					v.errorf(p+".fault.abort.httpStatus", "httpStatus %d must be between 200 and 599", t.HttpStatus)
				}
			case nil:
				v.errorf(p+".fault.abort", "abort needs httpStatus, grpcStatus or http2Error")
			}
		}
	}
	//nolint:staticcheck // mirror is deprecated in favour of mirrors but still served.
	if m := r.GetMirror(); m != nil {
		v.destination(p+".mirror", m)
	}
	if mp := r.GetMirrorPercentage(); mp != nil {
		v.checkPercent(p+".mirrorPercentage.value", mp.GetValue())
	}
	for j, m := range r.GetMirrors() {
		v.destination(idx(p+".mirrors", j)+".destination", m.GetDestination())
		if m.GetPercentage() != nil {
			v.checkPercent(idx(p+".mirrors", j)+".percentage.value", m.GetPercentage().GetValue())
		}
	}
	if c := r.GetCorsPolicy(); c != nil {
		cp := p + ".corsPolicy"
		for j, o := range c.GetAllowOrigins() {
			v.stringMatch(idx(cp+".allowOrigins", j), o)
		}
		for j, m := range c.GetAllowMethods() {
			if !httpMethods[m] {
				v.errorf(idx(cp+".allowMethods", j), "unknown HTTP method %q", m)
			}
		}
		for j, h := range c.GetAllowHeaders() {
			if h == "" || strings.ContainsAny(h, " :") {
				v.errorf(idx(cp+".allowHeaders", j), "invalid header name %q", h)
			}
		}
		for j, h := range c.GetExposeHeaders() {
			if h == "" || strings.ContainsAny(h, " :") {
				v.errorf(idx(cp+".exposeHeaders", j), "invalid header name %q", h)
			}
		}
		if c.GetMaxAge() != nil {
			if c.GetMaxAge().AsDuration() < 0 {
				v.errorf(cp+".maxAge", "maxAge must not be negative")
			}
		}
		//nolint:staticcheck // allowOrigin is deprecated but still served.
		if len(c.GetAllowOrigin()) > 0 {
			v.warnf(cp+".allowOrigin", "allowOrigin is deprecated; use allowOrigins")
		}
	}
	v.headerOps(p+".headers", r.GetHeaders())
	for j, rd := range r.GetRoute() {
		v.headerOps(idx(p+".route", j)+".headers", rd.GetHeaders())
	}
}

func (v *validator) headerOps(path string, h *networking.Headers) {
	check := func(p string, ops *networking.Headers_HeaderOperations) {
		if ops == nil {
			return
		}
		for k := range ops.GetSet() {
			v.checkHeaderName(key(p+".set", k), k)
		}
		for k := range ops.GetAdd() {
			v.checkHeaderName(key(p+".add", k), k)
		}
		for j, k := range ops.GetRemove() {
			v.checkHeaderName(idx(p+".remove", j), k)
		}
	}
	check(path+".request", h.GetRequest())
	check(path+".response", h.GetResponse())
}

func (v *validator) checkHeaderName(path, k string) {
	if k == "" || strings.ContainsAny(k, " \t\r\n") {
		v.errorf(path, "invalid header name %q", k)
		return
	}
	if strings.EqualFold(k, "host") || strings.HasPrefix(k, ":") {
		v.errorf(path, "header %q cannot be modified here", k)
	}
}

var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true, "*": true,
}

func (v *validator) destinationRule(dr *networking.DestinationRule) {
	if dr.GetHost() == "" {
		v.errorf("spec.host", "host is required")
	} else if !isIP(dr.GetHost()) {
		v.checkHost("spec.host", dr.GetHost(), true)
	}
	v.trafficPolicy("spec.trafficPolicy", dr.GetTrafficPolicy())
	seen := map[string]bool{}
	for i, s := range dr.GetSubsets() {
		p := idx("spec.subsets", i)
		switch {
		case s.GetName() == "":
			v.errorf(p+".name", "subset name is required")
		case !isDNSLabel(s.GetName()):
			v.errorf(p+".name", "invalid subset name %q: must be a DNS label", s.GetName())
		case seen[s.GetName()]:
			v.errorf(p+".name", "duplicate subset name %q", s.GetName())
		}
		seen[s.GetName()] = true
		if len(s.GetLabels()) == 0 {
			v.warnf(p+".labels", "subset %q has no labels, so it selects every endpoint of the host", s.GetName())
		}
		v.checkLabels(p+".labels", s.GetLabels())
		v.trafficPolicy(p+".trafficPolicy", s.GetTrafficPolicy())
	}
	if ws := dr.GetWorkloadSelector(); ws != nil {
		v.checkLabels("spec.workloadSelector.matchLabels", ws.GetMatchLabels())
	}
	for i, ns := range dr.GetExportTo() {
		v.checkExportTo(idx("spec.exportTo", i), ns)
	}
}

func (v *validator) trafficPolicy(path string, tp *networking.TrafficPolicy) {
	if tp == nil {
		return
	}
	v.tunnel(path+".tunnel", tp.GetTunnel())
	if tp.GetTunnel() != nil && tp.GetProxyProtocol() != nil {
		v.errorf(path+".tunnel", "tunnel and proxyProtocol must not be set together")
	}
	v.trafficPolicyBody(path, tp.GetLoadBalancer(), tp.GetConnectionPool(), tp.GetOutlierDetection(), tp.GetTls())
	if rb := tp.GetRetryBudget(); rb != nil {
		if p := rb.GetPercent(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
			v.errorf(path+".retryBudget.percent", "percent must be between 0 and 100, got %g", p.GetValue())
		}
		if iv := rb.GetBudgetInterval(); iv != nil && (iv.CheckValid() != nil || iv.AsDuration() < 0) {
			v.errorf(path+".retryBudget.budgetInterval", "budgetInterval must be a valid, non-negative duration (0 counts only requests in flight)")
		}
	}
	for i, pl := range tp.GetPortLevelSettings() {
		p := idx(path+".portLevelSettings", i)
		if pl.GetPort() == nil {
			v.errorf(p+".port", "port is required")
		} else {
			v.checkPort(p+".port.number", pl.GetPort().GetNumber())
		}
		v.trafficPolicyBody(p, pl.GetLoadBalancer(), pl.GetConnectionPool(), pl.GetOutlierDetection(), pl.GetTls())
	}
}

// localityLbSetting checks Istio's rules: distribute excludes failover and
// failoverPriority, distribute weights sum to 100, failover is between two
// different regions, failoverPriority labels are named once each.
func (v *validator) localityLbSetting(p string, s *networking.LocalityLoadBalancerSetting) {
	if len(s.GetDistribute()) > 0 && (len(s.GetFailover()) > 0 || len(s.GetFailoverPriority()) > 0) {
		v.errorf(p, "distribute cannot be set together with failover or failoverPriority")
	}
	for i, d := range s.GetDistribute() {
		dp := idx(p+".distribute", i)
		if d.GetFrom() == "" {
			v.errorf(dp+".from", "from is required")
		}
		var sum uint32
		for _, w := range d.GetTo() {
			sum += w
		}
		if sum != 100 {
			v.errorf(dp+".to", "the weights must add up to 100, got %d", sum)
		}
	}
	for i, f := range s.GetFailover() {
		fp := idx(p+".failover", i)
		switch {
		case f.GetFrom() == "" || f.GetTo() == "":
			v.errorf(fp, "from and to are both required")
		case strings.Contains(f.GetFrom(), "/") || strings.Contains(f.GetTo(), "/"):
			v.errorf(fp, "failover is between regions: %q → %q names a zone", f.GetFrom(), f.GetTo())
		case f.GetFrom() == f.GetTo():
			v.errorf(fp, "from and to are the same region %q", f.GetFrom())
		}
	}
	seen := map[string]bool{}
	for i, l := range s.GetFailoverPriority() {
		k, _, _ := strings.Cut(l, "=")
		switch {
		case k == "":
			v.errorf(idx(p+".failoverPriority", i), "a label key is required (KEY or KEY=VALUE)")
		case seen[k]:
			v.errorf(idx(p+".failoverPriority", i), "label %q is listed twice", k)
		}
		seen[k] = true
	}
}

// warmup checks loadBalancer.warmup (Envoy's slow_start_config): a
// duration is required, minimumPercent is a percentage, aggression is
// positive, and the older warmupDurationSecs is not set as well.
func (v *validator) warmup(p string, lb *networking.LoadBalancerSettings, w *networking.WarmupConfiguration) {
	if lb.GetWarmupDurationSecs() != nil {
		v.errorf(p+".warmup", "warmup and warmupDurationSecs are mutually exclusive (warmupDurationSecs is the older form of warmup.duration)")
	}
	if w.GetDuration() == nil {
		v.errorf(p+".warmup.duration", "duration is required")
	} else if w.GetDuration().AsDuration() <= 0 {
		v.errorf(p+".warmup.duration", "duration must be positive, got %s", w.GetDuration().AsDuration())
	}
	if m := w.GetMinimumPercent(); m != nil && (m.GetValue() < 0 || m.GetValue() > 100) {
		v.errorf(p+".warmup.minimumPercent", "minimumPercent must be between 0 and 100, got %g", m.GetValue())
	}
	if a := w.GetAggression(); a != nil && a.GetValue() <= 0 {
		v.errorf(p+".warmup.aggression", "aggression must be greater than 0, got %g", a.GetValue())
	}
	if lb.GetConsistentHash() != nil || lb.GetSimple() == networking.LoadBalancerSettings_RANDOM || lb.GetSimple() == networking.LoadBalancerSettings_PASSTHROUGH {
		v.warnf(p+".warmup", "warmup has no effect with this load balancer: Envoy's slow start applies to ROUND_ROBIN and LEAST_REQUEST only")
	}
}

func (v *validator) trafficPolicyBody(path string, lb *networking.LoadBalancerSettings, cp *networking.ConnectionPoolSettings,
	od *networking.OutlierDetection, tls *networking.ClientTLSSettings) {
	if ch := lb.GetConsistentHash(); ch != nil {
		p := path + ".loadBalancer.consistentHash"
		if ch.GetHashKey() == nil {
			v.errorf(p, "consistentHash needs one key: httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
		}
		if c := ch.GetHttpCookie(); c != nil {
			if c.GetName() == "" {
				v.errorf(p+".httpCookie.name", "cookie name is required")
			}
			if c.GetTtl() != nil && c.GetTtl().AsDuration() < 0 {
				v.errorf(p+".httpCookie.ttl", "ttl must not be negative")
			}
		}
	}
	if ls := lb.GetLocalityLbSetting(); ls != nil {
		v.localityLbSetting(path+".loadBalancer.localityLbSetting", ls)
	}
	if w := lb.GetWarmup(); w != nil {
		v.warmup(path+".loadBalancer", lb, w)
	}
	v.checkDuration(path+".loadBalancer.warmupDurationSecs", lb.GetWarmupDurationSecs())
	if cp != nil {
		p := path + ".connectionPool"
		if t := cp.GetTcp(); t != nil {
			if t.GetMaxConnections() < 0 {
				v.errorf(p+".tcp.maxConnections", "must not be negative")
			}
			v.checkDuration(p+".tcp.connectTimeout", t.GetConnectTimeout())
		}
		if h := cp.GetHttp(); h != nil {
			for name, n := range map[string]int32{
				"http1MaxPendingRequests": h.GetHttp1MaxPendingRequests(), "http2MaxRequests": h.GetHttp2MaxRequests(),
				"maxRequestsPerConnection": h.GetMaxRequestsPerConnection(), "maxRetries": h.GetMaxRetries(),
				"maxConcurrentStreams": h.GetMaxConcurrentStreams(),
			} {
				if n < 0 {
					v.errorf(p+".http."+name, "must not be negative (got %d)", n)
				}
			}
			v.checkDuration(p+".http.idleTimeout", h.GetIdleTimeout())
		}
	}
	if od != nil {
		p := path + ".outlierDetection"
		//nolint:staticcheck // consecutiveErrors is deprecated but still served.
		if od.GetConsecutiveErrors() < 0 {
			v.errorf(p+".consecutiveErrors", "must not be negative")
		}
		v.checkDuration(p+".interval", od.GetInterval())
		v.checkDuration(p+".baseEjectionTime", od.GetBaseEjectionTime())
		if m := od.GetMaxEjectionPercent(); m < 0 || m > 100 {
			v.errorf(p+".maxEjectionPercent", "maxEjectionPercent must be between 0 and 100, got %d", m)
		}
		if m := od.GetMinHealthPercent(); m < 0 || m > 100 {
			v.errorf(p+".minHealthPercent", "minHealthPercent must be between 0 and 100, got %d", m)
		}
		if f := od.GetFailurePercentageThreshold(); f != nil && f.GetValue() > 100 {
			v.errorf(p+".failurePercentageThreshold", "failurePercentageThreshold must be between 0 and 100, got %d", f.GetValue())
		}
		for i, c := range od.GetOutlierDetectionHttpErrorCodes() {
			if c < 100 || c > 599 {
				v.errorf(idx(p+".outlierDetectionHttpErrorCodes", i), "HTTP status codes are between 100 and 599, got %d", c)
			}
		}
	}
	if tls != nil {
		p := path + ".tls"
		switch tls.GetMode() {
		case networking.ClientTLSSettings_MUTUAL:
			if tls.GetCredentialName() == "" && (tls.GetClientCertificate() == "" || tls.GetPrivateKey() == "") {
				v.errorf(p, "MUTUAL mode needs clientCertificate and privateKey (or credentialName)")
			}
		case networking.ClientTLSSettings_DISABLE, networking.ClientTLSSettings_ISTIO_MUTUAL:
			if tls.GetClientCertificate() != "" || tls.GetPrivateKey() != "" || tls.GetCaCertificates() != "" || tls.GetCredentialName() != "" {
				v.errorf(p, "%s mode must not set clientCertificate, privateKey, caCertificates or credentialName", tls.GetMode())
			}
		}
		if tls.GetCredentialName() != "" && (tls.GetClientCertificate() != "" || tls.GetPrivateKey() != "") {
			v.errorf(p+".credentialName", "credentialName and clientCertificate/privateKey are mutually exclusive")
		}
	}
}

func (v *validator) serverTLS(p string, srv *networking.Server) {
	tls := srv.GetTls()
	proto := strings.ToUpper(srv.GetPort().GetProtocol())
	if tls == nil {
		if proto == "HTTPS" {
			v.errorf(p+".tls", "an HTTPS server needs tls settings")
		}
		return
	}
	if tls.GetHttpsRedirect() && proto != "HTTP" {
		v.errorf(p+".tls.httpsRedirect", "httpsRedirect is only valid on HTTP servers (protocol is %s)", proto)
	}
	if proto == "HTTP" && !tls.GetHttpsRedirect() {
		v.errorf(p+".tls", "tls on an HTTP server only supports httpsRedirect; use protocol HTTPS to terminate TLS")
	}
	if tls.GetHttpsRedirect() {
		return
	}
	hasFiles := tls.GetServerCertificate() != "" || tls.GetPrivateKey() != ""
	switch tls.GetMode() {
	case networking.ServerTLSSettings_SIMPLE:
		if tls.GetCredentialName() == "" && len(tls.GetCredentialNames()) == 0 && len(tls.GetTlsCertificates()) == 0 &&
			(tls.GetServerCertificate() == "" || tls.GetPrivateKey() == "") {
			v.errorf(p+".tls", "SIMPLE mode needs credentialName, or serverCertificate and privateKey")
		}
	case networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		if tls.GetCredentialName() == "" && len(tls.GetCredentialNames()) == 0 && len(tls.GetTlsCertificates()) == 0 {
			if tls.GetServerCertificate() == "" || tls.GetPrivateKey() == "" {
				v.errorf(p+".tls", "%s mode needs credentialName, or serverCertificate and privateKey", tls.GetMode())
			}
			if tls.GetCaCertificates() == "" {
				v.errorf(p+".tls.caCertificates", "%s mode needs caCertificates (or credentialName)", tls.GetMode())
			}
		}
	case networking.ServerTLSSettings_PASSTHROUGH, networking.ServerTLSSettings_AUTO_PASSTHROUGH, networking.ServerTLSSettings_ISTIO_MUTUAL:
		if hasFiles || tls.GetCredentialName() != "" {
			v.errorf(p+".tls", "%s mode must not set credentialName, serverCertificate or privateKey", tls.GetMode())
		}
	}
	if tls.GetCredentialName() != "" && hasFiles {
		v.errorf(p+".tls.credentialName", "credentialName and serverCertificate/privateKey are mutually exclusive")
	}
}

func (v *validator) gateway(gw *networking.Gateway) {
	if len(gw.GetServers()) == 0 {
		v.errorf("spec.servers", "a gateway needs at least one server")
	}
	v.checkLabels("spec.selector", gw.GetSelector())
	names := map[string]bool{}
	for i, srv := range gw.GetServers() {
		p := idx("spec.servers", i)
		if srv.GetPort() == nil {
			v.errorf(p+".port", "port is required")
		} else {
			v.checkPort(p+".port.number", srv.GetPort().GetNumber())
			v.checkProtocol(p+".port.protocol", srv.GetPort().GetProtocol())
			if srv.GetPort().GetProtocol() == "" {
				v.errorf(p+".port.protocol", "protocol is required")
			}
			v.checkPortName(p+".port.name", srv.GetPort().GetName(), false)
		}
		if srv.GetName() != "" {
			if names[srv.GetName()] {
				v.errorf(p+".name", "duplicate server name %q", srv.GetName())
			}
			names[srv.GetName()] = true
		}
		if len(srv.GetHosts()) == 0 {
			v.errorf(p+".hosts", "at least one host is required")
		}
		for j, h := range srv.GetHosts() {
			hp := idx(p+".hosts", j)
			if strings.Contains(h, "/") {
				v.checkNamespacedHost(hp, h)
			} else {
				v.checkHost(hp, h, true)
			}
		}
		v.serverTLS(p, srv)
	}
}

func (v *validator) serviceEntry(se *networking.ServiceEntry) {
	if len(se.GetHosts()) == 0 {
		v.errorf("spec.hosts", "at least one host is required")
	}
	for i, h := range se.GetHosts() {
		p := idx("spec.hosts", i)
		if h == "*" {
			v.errorf(p, "wildcard host \"*\" is not allowed in a service entry")
			continue
		}
		if isIP(h) {
			v.errorf(p, "hosts must be names, not IP addresses; put %q in addresses", h)
			continue
		}
		v.checkHost(p, h, false)
		if strings.HasPrefix(h, "*") {
			switch se.GetResolution() {
			case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
				if len(se.GetEndpoints()) == 0 {
					v.errorf(p, "wildcard host %q cannot be resolved with %s resolution without endpoints", h, se.GetResolution())
				}
			}
		}
	}
	for i, a := range se.GetAddresses() {
		v.checkCIDR(idx("spec.addresses", i), a)
	}
	nums, names := map[uint32]bool{}, map[string]bool{}
	for i, pt := range se.GetPorts() {
		p := idx("spec.ports", i)
		v.checkPort(p+".number", pt.GetNumber())
		if nums[pt.GetNumber()] {
			v.errorf(p+".number", "duplicate port number %d", pt.GetNumber())
		}
		nums[pt.GetNumber()] = true
		v.checkPortName(p+".name", pt.GetName(), true)
		if pt.GetName() != "" && names[pt.GetName()] {
			v.errorf(p+".name", "duplicate port name %q", pt.GetName())
		}
		names[pt.GetName()] = true
		v.checkProtocol(p+".protocol", pt.GetProtocol())
		if pt.GetTargetPort() != 0 {
			v.checkPort(p+".targetPort", pt.GetTargetPort())
		}
	}
	if len(se.GetEndpoints()) > 0 && se.GetWorkloadSelector() != nil {
		v.errorf("spec.workloadSelector", "endpoints and workloadSelector are mutually exclusive")
	}
	if ws := se.GetWorkloadSelector(); ws != nil {
		v.checkLabels("spec.workloadSelector.labels", ws.GetLabels())
	}
	switch se.GetResolution() {
	case networking.ServiceEntry_STATIC:
		if len(se.GetEndpoints()) == 0 && se.GetWorkloadSelector() == nil && len(se.GetAddresses()) == 0 {
			v.errorf("spec.resolution", "STATIC resolution needs endpoints, a workloadSelector or addresses")
		}
	case networking.ServiceEntry_NONE:
		if len(se.GetEndpoints()) > 0 {
			v.warnf("spec.endpoints", "endpoints are ignored with resolution NONE")
		}
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.GetEndpoints()) > 1 {
			v.errorf("spec.endpoints", "DNS_ROUND_ROBIN resolution allows at most one endpoint")
		}
	}
	for i, ep := range se.GetEndpoints() {
		p := idx("spec.endpoints", i)
		v.workloadEntry(p, ep, true)
		if se.GetResolution() == networking.ServiceEntry_STATIC && ep.GetAddress() != "" && !isIP(ep.GetAddress()) && !strings.HasPrefix(ep.GetAddress(), "unix://") {
			v.errorf(p+".address", "STATIC resolution needs IP addresses, got %q", ep.GetAddress())
		}
		for name := range ep.GetPorts() {
			if !names[name] {
				v.warnf(key(p+".ports", name), "endpoint port %q names no port of the service entry", name)
			}
		}
	}
	if se.GetResolution() == networking.ServiceEntry_NONE && len(se.GetAddresses()) == 0 && se.GetLocation() == networking.ServiceEntry_MESH_EXTERNAL {
		for i, pt := range se.GetPorts() {
			if strings.EqualFold(pt.GetProtocol(), "TCP") {
				v.warnf(idx("spec.ports", i)+".protocol", "a TCP port without addresses and resolution NONE captures all traffic to port %d", pt.GetNumber())
			}
		}
	}
	for i, h := range se.GetExportTo() {
		v.checkExportTo(idx("spec.exportTo", i), h)
	}
}

func (v *validator) checkExportTo(path, ns string) {
	if ns != "*" && ns != "." && ns != "~" && !isDNSLabel(ns) {
		v.errorf(path, "exportTo %q must be \".\", \"*\", \"~\" or a namespace name", ns)
	}
}

func (v *validator) workloadEntry(path string, we *networking.WorkloadEntry, inSE bool) {
	addr := we.GetAddress()
	switch {
	case addr == "" && we.GetNetwork() == "" && !inSE:
		v.errorf(path+".address", "address is required (or network, for workloads behind a gateway)")
	case addr == "" && we.GetNetwork() == "" && inSE:
		v.errorf(path+".address", "endpoint address is required")
	case strings.HasPrefix(addr, "unix://"):
		if len(we.GetPorts()) > 0 {
			v.errorf(path+".ports", "a unix domain socket endpoint cannot have ports")
		}
	case addr != "" && !isIP(addr):
		v.checkHost(path+".address", addr, false)
	}
	for name, port := range we.GetPorts() {
		v.checkPort(key(path+".ports", name), port)
	}
	v.checkLabels(path+".labels", we.GetLabels())
	if w := we.GetWeight(); w > 1<<31-1 {
		v.errorf(path+".weight", "weight too large")
	}
}

func (v *validator) workloadGroup(wg *networking.WorkloadGroup) {
	if wg.GetTemplate() == nil {
		v.errorf("spec.template", "template is required")
		return
	}
	v.checkLabels("spec.metadata.labels", wg.GetMetadata().GetLabels())
	if wg.GetTemplate().GetAddress() != "" {
		v.errorf("spec.template.address", "address must be empty in a WorkloadGroup template; it comes from each workload")
	}
	for name, port := range wg.GetTemplate().GetPorts() {
		v.checkPort(key("spec.template.ports", name), port)
	}
}

// tunnel checks DestinationRule trafficPolicy.tunnel as Istio does:
// protocol CONNECT (the default) or POST, targetHost a DNS name or an IP
// address, targetPort 1-65535.
func (v *validator) tunnel(path string, t *networking.TrafficPolicy_TunnelSettings) {
	if t == nil {
		return
	}
	if p := t.GetProtocol(); p != "" && p != "CONNECT" && p != "POST" {
		v.errorf(path+".protocol", "tunnel protocol must be CONNECT or POST, got %q", p)
	}
	switch h := t.GetTargetHost(); {
	case h == "":
		v.errorf(path+".targetHost", "targetHost is required")
	case isIP(h):
	case !isDNSName(h):
		v.errorf(path+".targetHost", "targetHost %q must be a DNS name or an IP address", h)
	}
	if n := t.GetTargetPort(); n < 1 || n > 65535 {
		v.errorf(path+".targetPort", "targetPort %d out of range (1-65535)", n)
	}
}

// sidecarBind checks an egress listener's bind and captureMode as Istio
// does (an IP address, or unix://PATH with port number 0 and captureMode
// DEFAULT or NONE), plus what weft needs to open such a listener: a port
// (weft binds one listener per egress port; a catch-all listener with bind
// or captureMode NONE is refused) and a declared protocol.
func (v *validator) sidecarBind(p string, eg *networking.IstioEgressListener) {
	bind, mode := eg.GetBind(), eg.GetCaptureMode()
	if eg.GetPort() == nil {
		if bind != "" {
			v.errorf(p+".bind", "bind needs a port: weft binds one listener per egress port (give port.number, or 0 with a unix:// bind)")
		}
		if mode == networking.CaptureMode_NONE {
			v.errorf(p+".captureMode", "captureMode NONE needs a port: weft binds one listener per egress port")
		}
		return
	}
	unix := strings.HasPrefix(bind, "unix://")
	switch {
	case eg.GetPort().GetNumber() == 0 && !unix:
		v.errorf(p+".port.number", "port number 0 needs a unix:// bind address")
	case unix && eg.GetPort().GetNumber() != 0:
		v.errorf(p+".port.number", "a unix domain socket listener (bind %q) must have port number 0", bind)
	}
	switch {
	case unix:
		if path := strings.TrimPrefix(bind, "unix://"); path == "" || (!strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@")) {
			v.errorf(p+".bind", "unix domain socket %q must be an absolute path or @abstract name", bind)
		}
		if mode != networking.CaptureMode_DEFAULT && mode != networking.CaptureMode_NONE {
			v.errorf(p+".captureMode", "captureMode must be DEFAULT or NONE for a unix domain socket listener, got %s", mode)
		}
	case bind != "" && !isIP(bind):
		v.errorf(p+".bind", "bind %q must be an IP address or unix:// path", bind)
	}
	if (bind != "" || mode == networking.CaptureMode_NONE) && eg.GetPort().GetProtocol() == "" {
		v.errorf(p+".port.protocol", "a bound egress listener (bind or captureMode NONE) needs a protocol")
	}
}

func (v *validator) sidecar(sc *networking.Sidecar) {
	if sc.GetWorkloadSelector() != nil {
		v.checkLabels("spec.workloadSelector.labels", sc.GetWorkloadSelector().GetLabels())
	}
	if len(sc.GetEgress()) == 0 && len(sc.GetIngress()) == 0 && sc.GetOutboundTrafficPolicy() == nil {
		v.warnf("spec", "a sidecar with no egress, ingress or outboundTrafficPolicy has no effect")
	}
	ports, uds := map[uint32]bool{}, map[string]bool{}
	for i, eg := range sc.GetEgress() {
		p := idx("spec.egress", i)
		if len(eg.GetHosts()) == 0 {
			v.errorf(p+".hosts", "egress listener needs at least one host")
		}
		for j, h := range eg.GetHosts() {
			v.checkNamespacedHost(idx(p+".hosts", j), h)
		}
		v.sidecarBind(p, eg)
		if eg.GetPort() == nil {
			if i != len(sc.GetEgress())-1 && len(sc.GetEgress()) > 1 {
				v.errorf(p+".port", "an egress listener without a port (catch-all) must be the last one")
			}
			continue
		}
		v.checkProtocol(p+".port.protocol", eg.GetPort().GetProtocol())
		if eg.GetPort().GetNumber() == 0 {
			if uds[eg.GetBind()] {
				v.errorf(p+".bind", "duplicate unix domain socket %q", eg.GetBind())
			}
			uds[eg.GetBind()] = true
			continue
		}
		v.checkPort(p+".port.number", eg.GetPort().GetNumber())
		if ports[eg.GetPort().GetNumber()] {
			v.errorf(p+".port.number", "duplicate egress port %d", eg.GetPort().GetNumber())
		}
		ports[eg.GetPort().GetNumber()] = true
	}
	for i, in := range sc.GetIngress() {
		p := idx("spec.ingress", i)
		if in.GetPort() == nil {
			v.errorf(p+".port", "port is required")
		} else {
			v.checkPort(p+".port.number", in.GetPort().GetNumber())
			v.checkProtocol(p+".port.protocol", in.GetPort().GetProtocol())
		}
		if b := in.GetBind(); b != "" && !isIP(b) {
			v.errorf(p+".bind", "ingress bind %q must be an IP address", b)
		}
		if dst := in.GetDefaultEndpoint(); dst != "" {
			if u, err := url.Parse(dst); err == nil && u.Scheme == "unix" {
				continue
			}
			host, port, ok := strings.Cut(dst, ":")
			if _, pok := parsePort(port); !ok || !pok || (host != "127.0.0.1" && host != "0.0.0.0" && host != "[::1]" && host != "[::]") {
				v.errorf(p+".defaultEndpoint", "defaultEndpoint %q must be 127.0.0.1:PORT, 0.0.0.0:PORT or unix://path", dst)
			}
		}
	}
}

func (v *validator) envoyFilter(ef *networking.EnvoyFilter) {
	if ef.GetWorkloadSelector() != nil {
		v.checkLabels("spec.workloadSelector.labels", ef.GetWorkloadSelector().GetLabels())
	}
	if len(ef.GetConfigPatches()) == 0 {
		v.errorf("spec.configPatches", "at least one config patch is required")
	}
	for i, cp := range ef.GetConfigPatches() {
		p := idx("spec.configPatches", i)
		if cp.GetApplyTo() == networking.EnvoyFilter_INVALID {
			v.errorf(p+".applyTo", "applyTo is required")
		}
		if cp.GetPatch() == nil {
			v.errorf(p+".patch", "patch is required")
			continue
		}
		op := cp.GetPatch().GetOperation()
		switch op {
		case networking.EnvoyFilter_Patch_INVALID:
			v.errorf(p+".patch.operation", "operation is required")
		case networking.EnvoyFilter_Patch_ADD, networking.EnvoyFilter_Patch_INSERT_BEFORE, networking.EnvoyFilter_Patch_INSERT_AFTER,
			networking.EnvoyFilter_Patch_INSERT_FIRST, networking.EnvoyFilter_Patch_MERGE, networking.EnvoyFilter_Patch_REPLACE,
			networking.EnvoyFilter_Patch_MERGE_AND_REPLACE_LIST:
			if cp.GetPatch().GetValue() == nil {
				v.errorf(p+".patch.value", "%s needs a value", op)
			}
		}
		if op == networking.EnvoyFilter_Patch_REMOVE && cp.GetPatch().GetValue() != nil {
			v.warnf(p+".patch.value", "the value of a REMOVE patch is ignored")
		}
		if cp.GetApplyTo() == networking.EnvoyFilter_HTTP_FILTER || cp.GetApplyTo() == networking.EnvoyFilter_NETWORK_FILTER {
			// ADD appends after the terminal filter (router, tcp_proxy), which
			// Envoy refuses; an HTTP filter ADD with a filterClass is placed
			// among Istio's filters instead.
			withClass := cp.GetApplyTo() == networking.EnvoyFilter_HTTP_FILTER && cp.GetPatch().GetFilterClass() != networking.EnvoyFilter_Patch_UNSPECIFIED
			if op == networking.EnvoyFilter_Patch_ADD && !withClass {
				v.errorf(p+".patch.operation", "ADD is not supported for %s; use INSERT_BEFORE, INSERT_AFTER or INSERT_FIRST (or, for HTTP_FILTER, ADD with a filterClass)", cp.GetApplyTo())
			}
		}
		if fc := cp.GetMatch().GetListener().GetFilterChain(); fc != nil {
			if n := fc.GetFilter().GetName(); n == "envoy.http_connection_manager" {
				v.warnf(p+".match.listener.filterChain.filter.name", "%q is a deprecated filter name; use \"envoy.filters.network.http_connection_manager\"", n)
			}
		}
	}
}
