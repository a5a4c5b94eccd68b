package translate

import (
	"cmp"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
)

// HTTP filter names used in listeners and typed_per_filter_config.
const (
	FaultFilter  = "envoy.filters.http.fault"
	CorsFilter   = "envoy.filters.http.cors"
	RouterFilter = "envoy.filters.http.router"
)

// DefaultRetryOn is Istio's retry_on when a route sets no retries.
const DefaultRetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

// MeshGateway is the reserved gateway name for sidecars.
const MeshGateway = "mesh"

// routeCtx says where routes are generated.
type routeCtx struct {
	port      uint32 // listener port the routes serve
	gateway   string // "ns/name" for gateways, "" for the mesh
	proxyless bool   // gRPC clients: no CORS filter
}

// vsBoundTo reports whether a VirtualService (or one of its match blocks)
// applies to the given gateway ("mesh" or "ns/name").
func gatewayListed(gws []string, vsNS, gateway string) bool {
	if len(gws) == 0 {
		return gateway == MeshGateway
	}
	for _, g := range gws {
		if g == MeshGateway {
			if gateway == MeshGateway {
				return true
			}
			continue
		}
		if !strings.Contains(g, "/") {
			g = vsNS + "/" + g
		}
		if g == gateway {
			return true
		}
	}
	return false
}

// virtualServiceFor returns the first VirtualService (oldest first) bound to
// gateway that names host.
func (b *builder) virtualServiceFor(host, gateway string) *config.Resource {
	exact, wild := b.vsExact[host], b.vsWild
	for len(exact) > 0 || len(wild) > 0 {
		// Merge the two ordered index lists to keep creation order.
		var i int
		if len(wild) == 0 || (len(exact) > 0 && exact[0] < wild[0]) {
			i, exact = exact[0], exact[1:]
		} else {
			i, wild = wild[0], wild[1:]
		}
		c := b.vss[i]
		if !gatewayListed(c.Spec.(*networking.VirtualService).GetGateways(), nsOf(c), gateway) {
			continue
		}
		for _, h := range b.vsHosts[i] {
			if hostMatch(h, host) {
				return c
			}
		}
	}
	return nil
}

// httpRoutes turns a VirtualService's http section into Envoy routes for
// one port. ok is false when no route applies.
func (b *builder) httpRoutes(c *config.Resource, rc routeCtx) []*routev3.Route {
	vs := c.Spec.(*networking.VirtualService)
	gw := rc.gateway
	if gw == "" {
		gw = MeshGateway
	}
	var out []*routev3.Route
	name := c.Meta.Name + "." + nsOf(c)
	for _, hr := range vs.GetHttp() {
		if hr.GetDelegate() == nil {
			out = b.appendHTTPRoute(out, c, c, hr, name, rc, gw)
			continue
		}
		// Delegation (one level, as in Istio): the delegate's routes
		// replace this one, each match merged with this route's matches,
		// unset fields inherited from it; the delegate's destinations
		// resolve in its own namespace.
		dc := b.delegate(hr.GetDelegate(), nsOf(c))
		if dc == nil {
			b.warnings = append(b.warnings, fmt.Sprintf("VirtualService %s: delegate %s/%s not found (or not exported): its routes are left out",
				name, cmp.Or(hr.GetDelegate().GetNamespace(), nsOf(c)), hr.GetDelegate().GetName()))
			continue
		}
		for _, dr := range dc.Spec.(*networking.VirtualService).GetHttp() {
			if dr.GetDelegate() != nil {
				continue // no nested delegation
			}
			if merged := mergeDelegateRoute(hr, dr); merged != nil {
				out = b.appendHTTPRoute(out, c, dc, merged, name, rc, gw)
			}
		}
	}
	return out
}

// appendHTTPRoute appends hr's Envoy routes, one per match that applies
// to this proxy and port. root is the VirtualService bound to the host
// (its namespace qualifies match gateways), c the one hr comes from (its
// namespace resolves destinations).
func (b *builder) appendHTTPRoute(out []*routev3.Route, root, c *config.Resource, hr *networking.HTTPRoute, name string, rc routeCtx, gw string) []*routev3.Route {
	matches := hr.GetMatch()
	if len(matches) == 0 {
		return append(out, b.httpRoute(c, hr, nil, name, rc))
	}
	for _, m := range matches {
		if m.GetPort() != 0 && m.GetPort() != rc.port {
			continue
		}
		if len(m.GetSourceLabels()) > 0 && !labelsMatch(m.GetSourceLabels(), b.p.Labels) {
			continue
		}
		if ns := m.GetSourceNamespace(); ns != "" && ns != b.p.Namespace {
			continue
		}
		if len(m.GetGateways()) > 0 && !gatewayListed(m.GetGateways(), nsOf(root), gw) {
			continue
		}
		out = append(out, b.httpRoute(c, hr, m, name, rc))
	}
	return out
}

// delegate finds the VirtualService a route delegates to (namespace
// defaults to the root's) among those visible to the proxy; a delegate
// has no hosts.
func (b *builder) delegate(d *networking.Delegate, rootNS string) *config.Resource {
	ns := cmp.Or(d.GetNamespace(), rootNS)
	for _, c := range b.vss {
		if c.Meta.Name == d.GetName() && nsOf(c) == ns && len(c.Spec.(*networking.VirtualService).GetHosts()) == 0 {
			return c
		}
	}
	return nil
}

// mergeDelegateRoute is a delegate's route under its root route: matches
// merged (nil when they conflict: the delegate may only narrow the root's
// matches), and the root's rewrite, timeout, retries, fault, mirror(s),
// CORS policy and header operations where the delegate sets none.
func mergeDelegateRoute(root, del *networking.HTTPRoute) *networking.HTTPRoute {
	out := proto.Clone(del).(*networking.HTTPRoute)
	ms, ok := mergeMatches(root.GetMatch(), del.GetMatch())
	if !ok {
		return nil
	}
	out.Match = ms
	switch {
	case out.Name == "":
		out.Name = root.GetName()
	case root.GetName() != "":
		out.Name = root.GetName() + "-" + out.Name
	}
	if out.Rewrite == nil {
		out.Rewrite = root.GetRewrite()
	}
	if out.Timeout == nil {
		out.Timeout = root.GetTimeout()
	}
	if out.Retries == nil {
		out.Retries = root.GetRetries()
	}
	if out.Fault == nil {
		out.Fault = root.GetFault()
	}
	if out.Mirror == nil && len(out.Mirrors) == 0 {
		out.Mirror, out.Mirrors, out.MirrorPercentage = root.GetMirror(), root.GetMirrors(), root.GetMirrorPercentage()
	}
	if out.CorsPolicy == nil {
		out.CorsPolicy = root.GetCorsPolicy()
	}
	if out.Headers == nil {
		out.Headers = root.GetHeaders()
	}
	return out
}

// mergeMatches combines root and delegate match lists: every pair that
// does not conflict, or the other list when one is empty. ok is false when
// every pair conflicts.
func mergeMatches(root, del []*networking.HTTPMatchRequest) ([]*networking.HTTPMatchRequest, bool) {
	if len(root) == 0 {
		return del, true
	}
	if len(del) == 0 {
		return root, true
	}
	var out []*networking.HTTPMatchRequest
	for _, r := range root {
		for _, d := range del {
			if m, ok := mergeMatch(r, d); ok {
				out = append(out, m)
			}
		}
	}
	return out, len(out) > 0
}

// mergeMatch narrows root by del: del's conditions, plus root's where del
// has none. A delegate URI must lie within the root's (same exact path,
// or a path/prefix under the root's prefix); other conditions set on both
// must be equal.
func mergeMatch(root, del *networking.HTTPMatchRequest) (*networking.HTTPMatchRequest, bool) {
	m := proto.Clone(del).(*networking.HTTPMatchRequest)
	switch {
	case m.Uri == nil:
		m.Uri = root.GetUri()
	case root.GetUri() != nil && !uriWithin(m.Uri, root.GetUri()):
		return nil, false
	}
	for _, f := range []struct {
		dst **networking.StringMatch
		src *networking.StringMatch
	}{{&m.Scheme, root.GetScheme()}, {&m.Method, root.GetMethod()}, {&m.Authority, root.GetAuthority()}} {
		switch {
		case *f.dst == nil:
			*f.dst = f.src
		case f.src != nil && !proto.Equal(*f.dst, f.src):
			return nil, false
		}
	}
	for _, f := range []struct {
		dst *map[string]*networking.StringMatch
		src map[string]*networking.StringMatch
	}{{&m.Headers, root.GetHeaders()}, {&m.WithoutHeaders, root.GetWithoutHeaders()}, {&m.QueryParams, root.GetQueryParams()}} {
		for k, v := range f.src {
			if cur, ok := (*f.dst)[k]; ok {
				if !proto.Equal(cur, v) {
					return nil, false
				}
				continue
			}
			if *f.dst == nil {
				*f.dst = map[string]*networking.StringMatch{}
			}
			(*f.dst)[k] = v
		}
	}
	for k, v := range root.GetSourceLabels() {
		if cur, ok := m.SourceLabels[k]; ok && cur != v {
			return nil, false
		}
		if m.SourceLabels == nil {
			m.SourceLabels = map[string]string{}
		}
		m.SourceLabels[k] = v
	}
	switch {
	case m.Port == 0:
		m.Port = root.GetPort()
	case root.GetPort() != 0 && root.GetPort() != m.Port:
		return nil, false
	}
	switch {
	case m.SourceNamespace == "":
		m.SourceNamespace = root.GetSourceNamespace()
	case root.GetSourceNamespace() != "" && root.GetSourceNamespace() != m.SourceNamespace:
		return nil, false
	}
	if len(m.Gateways) == 0 {
		m.Gateways = root.GetGateways()
	}
	m.IgnoreUriCase = m.IgnoreUriCase || root.GetIgnoreUriCase()
	if m.StatPrefix == "" {
		m.StatPrefix = root.GetStatPrefix()
	}
	return m, true
}

// uriWithin reports whether every path del matches is one root matches, for
// exact and prefix matches (a regex must equal the root's).
func uriWithin(del, root *networking.StringMatch) bool {
	switch r := root.GetMatchType().(type) {
	case *networking.StringMatch_Prefix:
		switch d := del.GetMatchType().(type) {
		case *networking.StringMatch_Prefix:
			return strings.HasPrefix(d.Prefix, r.Prefix)
		case *networking.StringMatch_Exact:
			return strings.HasPrefix(d.Exact, r.Prefix)
		}
	case *networking.StringMatch_Exact:
		if d, ok := del.GetMatchType().(*networking.StringMatch_Exact); ok {
			return d.Exact == r.Exact
		}
	}
	return proto.Equal(del, root)
}

func (b *builder) httpRoute(c *config.Resource, hr *networking.HTTPRoute, m *networking.HTTPMatchRequest, name string, rc routeCtx) *routev3.Route {
	ns := nsOf(c)
	// statPrefix: per-route statistics (vhost.VHOST.route.PREFIX.*).
	r := &routev3.Route{Name: name, Match: routeMatch(m), StatPrefix: m.GetStatPrefix()}
	if n := hr.GetName(); n != "" {
		// The VirtualService route name is the tracing operation.
		r.Decorator = &routev3.Decorator{Operation: n}
	}
	switch {
	case hr.GetRedirect() != nil:
		r.Action = &routev3.Route_Redirect{Redirect: redirect(hr.GetRedirect())}
	case hr.GetDirectResponse() != nil:
		dr := hr.GetDirectResponse()
		act := &routev3.DirectResponseAction{Status: dr.GetStatus()}
		if body := dr.GetBody(); body != nil {
			if s, ok := body.GetSpecifier().(*networking.HTTPBody_String_); ok {
				act.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s.String_}}
			} else {
				act.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: body.GetBytes()}}
			}
		}
		r.Action = &routev3.Route_DirectResponse{DirectResponse: act}
	default:
		r.Action = &routev3.Route_Route{Route: b.routeAction(hr, ns, rc)}
	}
	hops := []*networking.Headers{hr.GetHeaders()}
	if len(hr.GetRoute()) == 1 {
		// A single destination's header operations apply to the route.
		hops = append(hops, hr.GetRoute()[0].GetHeaders())
	}
	for _, h := range hops {
		if h == nil {
			continue
		}
		r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, headerOps(h.GetRequest())...)
		r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, sortedCopy(h.GetRequest().GetRemove())...)
		r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, headerOps(h.GetResponse())...)
		r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, sortedCopy(h.GetResponse().GetRemove())...)
	}
	tpfc := map[string]*anypb.Any{}
	if f := hr.GetFault(); f != nil {
		tpfc[FaultFilter] = mustAny(fault(f))
	}
	if cp := hr.GetCorsPolicy(); cp != nil && !rc.proxyless {
		tpfc[CorsFilter] = mustAny(cors(cp))
	}
	if len(tpfc) > 0 {
		r.TypedPerFilterConfig = tpfc
	}
	return r
}

func routeMatch(m *networking.HTTPMatchRequest) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
	if m == nil {
		return rm
	}
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networking.StringMatch_Regex:
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: u.Regex}}
	}
	if m.GetIgnoreUriCase() {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	for _, k := range sortedKeys(m.GetHeaders()) {
		rm.Headers = append(rm.Headers, headerMatcher(k, m.GetHeaders()[k], false))
	}
	for _, k := range sortedKeys(m.GetWithoutHeaders()) {
		rm.Headers = append(rm.Headers, headerMatcher(k, m.GetWithoutHeaders()[k], true))
	}
	if m.GetMethod() != nil {
		rm.Headers = append(rm.Headers, headerMatcher(":method", m.GetMethod(), false))
	}
	if m.GetAuthority() != nil {
		rm.Headers = append(rm.Headers, headerMatcher(":authority", m.GetAuthority(), false))
	}
	if m.GetScheme() != nil {
		rm.Headers = append(rm.Headers, headerMatcher(":scheme", m.GetScheme(), false))
	}
	for _, k := range sortedKeys(m.GetQueryParams()) {
		q := &routev3.QueryParameterMatcher{Name: k}
		if sm := stringMatcher(m.GetQueryParams()[k]); sm != nil {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
		} else {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		rm.QueryParameters = append(rm.QueryParameters, q)
	}
	return rm
}

// stringMatcher converts an Istio StringMatch; nil means "present".
func stringMatcher(s *networking.StringMatch) *matcherv3.StringMatcher {
	switch v := s.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v.Exact}}
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v.Regex}}}
	}
	return nil
}

func headerMatcher(name string, s *networking.StringMatch, invert bool) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
	if sm := stringMatcher(s); sm != nil {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	} else {
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	}
	return h
}

func redirect(r *networking.HTTPRedirect) *routev3.RedirectAction {
	a := &routev3.RedirectAction{HostRedirect: r.GetAuthority(), PortRedirect: r.GetPort()}
	if r.GetUri() != "" {
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.GetUri()}
	}
	if r.GetScheme() != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.GetScheme()}
	}
	switch r.GetRedirectCode() {
	case 302:
		a.ResponseCode = routev3.RedirectAction_FOUND
	case 303:
		a.ResponseCode = routev3.RedirectAction_SEE_OTHER
	case 307:
		a.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		a.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
	default:
		a.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
	}
	return a
}

// destCluster names the cluster for a Destination seen from a resource in
// namespace ns on listener port.
func (b *builder) destCluster(d *networking.Destination, ns string, port uint32) (string, string, uint32) {
	host := b.resolve(d.GetHost(), ns)
	p := d.GetPort().GetNumber()
	if p == 0 {
		if svc := b.service(host); svc != nil && len(svc.Ports) == 1 {
			p = svc.Ports[0].Number
		} else {
			p = port
		}
	}
	return ClusterName(p, d.GetSubset(), host), host, p
}

func (b *builder) routeAction(hr *networking.HTTPRoute, ns string, rc routeCtx) *routev3.RouteAction {
	a := &routev3.RouteAction{Timeout: durationpb.New(0)}
	var dests []*networking.HTTPRouteDestination
	for _, d := range hr.GetRoute() {
		if d.GetWeight() > 0 || len(hr.GetRoute()) == 1 {
			dests = append(dests, d)
		}
	}
	var hashHost string
	var hashPort uint32
	switch len(dests) {
	case 0:
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: BlackHoleCluster}
	case 1:
		name, host, p := b.destCluster(dests[0].GetDestination(), ns, rc.port)
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: name}
		hashHost, hashPort = host, p
	default:
		wc := &routev3.WeightedCluster{}
		for i, d := range dests {
			name, host, p := b.destCluster(d.GetDestination(), ns, rc.port)
			if i == 0 {
				hashHost, hashPort = host, p
			}
			cw := &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(uint32(d.GetWeight()))}
			if h := d.GetHeaders(); h != nil {
				cw.RequestHeadersToAdd = headerOps(h.GetRequest())
				cw.RequestHeadersToRemove = sortedCopy(h.GetRequest().GetRemove())
				cw.ResponseHeadersToAdd = headerOps(h.GetResponse())
				cw.ResponseHeadersToRemove = sortedCopy(h.GetResponse().GetRemove())
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if rw := hr.GetRewrite(); rw != nil {
		if rw.GetUri() != "" {
			a.PrefixRewrite = rw.GetUri()
		}
		if rw.GetAuthority() != "" {
			a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.GetAuthority()}
		}
		if rr := rw.GetUriRegexRewrite(); rr != nil {
			a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: rr.GetMatch()}, Substitution: rr.GetRewrite()}
		}
	}
	if t := hr.GetTimeout(); t != nil {
		a.Timeout = durationpb.New(t.AsDuration())
	}
	a.RetryPolicy = retryPolicy(hr.GetRetries())
	for _, m := range mirrors(hr) {
		name, _, _ := b.destCluster(m.dest, ns, rc.port)
		mp := &routev3.RouteAction_RequestMirrorPolicy{Cluster: name}
		if m.pct != nil {
			mp.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fraction(m.pct.GetValue())}
		}
		a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, mp)
	}
	if hashHost != "" {
		if dr, _ := b.destinationRule(hashHost); dr != nil {
			policy := mergePolicy(dr.GetTrafficPolicy(), nil, hashPort)
			if len(dests) == 1 {
				for _, ss := range dr.GetSubsets() {
					if ss.GetName() == dests[0].GetDestination().GetSubset() {
						policy = mergePolicy(dr.GetTrafficPolicy(), ss.GetTrafficPolicy(), hashPort)
					}
				}
			}
			a.HashPolicy = hashPolicy(policy.GetLoadBalancer().GetConsistentHash())
		}
	}
	return a
}

type mirror struct {
	dest *networking.Destination
	pct  *networking.Percent
}

func mirrors(hr *networking.HTTPRoute) []mirror {
	var out []mirror
	if hr.GetMirror() != nil {
		pct := hr.GetMirrorPercentage()
		if pct == nil && hr.GetMirrorPercent() != nil {
			pct = &networking.Percent{Value: float64(hr.GetMirrorPercent().GetValue())}
		}
		out = append(out, mirror{hr.GetMirror(), pct})
	}
	for _, m := range hr.GetMirrors() {
		out = append(out, mirror{m.GetDestination(), m.GetPercentage()})
	}
	return out
}

func hashPolicy(ch *networking.LoadBalancerSettings_ConsistentHashLB) []*routev3.RouteAction_HashPolicy {
	if ch == nil {
		return nil
	}
	var hp *routev3.RouteAction_HashPolicy
	switch k := ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: k.HttpHeaderName}}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		ck := &routev3.RouteAction_HashPolicy_Cookie{Name: k.HttpCookie.GetName(), Path: k.HttpCookie.GetPath()}
		if t := k.HttpCookie.GetTtl(); t != nil {
			ck.Ttl = durationpb.New(t.AsDuration())
		}
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: ck}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: k.HttpQueryParameterName}}}
	default:
		return nil
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}

// previousPriorities is Envoy's retry priority plugin that Istio's
// retryRemoteLocalities selects.
const previousPriorities = "envoy.retry_priorities.previous_priorities"

// retryPolicy applies Istio's retry defaults: unset retries mean 2
// attempts on DefaultRetryOn with previous_hosts; attempts 0 disables.
func retryPolicy(r *networking.HTTPRetry) *routev3.RetryPolicy {
	if r != nil && r.GetAttempts() == 0 {
		return nil
	}
	rp := &routev3.RetryPolicy{
		RetryOn:                       DefaultRetryOn,
		NumRetries:                    wrapperspb.UInt32(2),
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})}}},
		HostSelectionRetryMaxAttempts: 5,
		RetriableStatusCodes:          []uint32{503},
	}
	if r == nil {
		return rp
	}
	rp.NumRetries = wrapperspb.UInt32(uint32(r.GetAttempts()))
	if r.GetRetryRemoteLocalities().GetValue() {
		// As Istio: retries move on to other priorities (localities);
		// the first two attempts use the normal priority load, the third
		// excludes the priorities already tried.
		rp.RetryPriority = &routev3.RetryPolicy_RetryPriority{Name: previousPriorities,
			ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})}}
	}
	if t := r.GetPerTryTimeout(); t != nil {
		rp.PerTryTimeout = durationpb.New(t.AsDuration())
	}
	if on := r.GetRetryOn(); on != "" {
		var kinds []string
		var codes []uint32
		for _, k := range strings.Split(on, ",") {
			k = strings.TrimSpace(k)
			if n, err := strconv.ParseUint(k, 10, 32); err == nil {
				codes = append(codes, uint32(n))
				continue
			}
			if k != "" {
				kinds = append(kinds, k)
			}
		}
		if len(codes) > 0 && !contains(kinds, "retriable-status-codes") {
			kinds = append(kinds, "retriable-status-codes")
		}
		rp.RetryOn = strings.Join(kinds, ",")
		rp.RetriableStatusCodes = codes
	}
	return rp
}

func fraction(pct float64) *typev3.FractionalPercent {
	if pct > 100 {
		pct = 100
	}
	return &typev3.FractionalPercent{Numerator: uint32(pct*10000 + 0.5), Denominator: typev3.FractionalPercent_MILLION}
}

func fault(f *networking.HTTPFaultInjection) *faultv3.HTTPFault {
	out := &faultv3.HTTPFault{}
	if d := f.GetDelay(); d != nil {
		fd := &faultcommonv3.FaultDelay{Percentage: fraction(100)}
		if d.GetFixedDelay() != nil {
			fd.FaultDelaySecifier = &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d.GetFixedDelay().AsDuration())}
		}
		switch {
		case d.GetPercentage() != nil:
			fd.Percentage = fraction(d.GetPercentage().GetValue())
		case d.GetPercent() > 0:
			fd.Percentage = fraction(float64(d.GetPercent()))
		}
		out.Delay = fd
	}
	if a := f.GetAbort(); a != nil {
		fa := &faultv3.FaultAbort{Percentage: fraction(100)}
		switch e := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			fa.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(e.HttpStatus)}
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			fa.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: grpcCode(e.GrpcStatus)}
		}
		if a.GetPercentage() != nil {
			fa.Percentage = fraction(a.GetPercentage().GetValue())
		}
		out.Abort = fa
	}
	return out
}

var grpcCodes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func grpcCode(s string) uint32 {
	for i, c := range grpcCodes {
		if strings.EqualFold(c, s) {
			return uint32(i)
		}
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n)
	}
	return 2 // UNKNOWN
}

func cors(c *networking.CorsPolicy) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		AllowMethods:  strings.Join(c.GetAllowMethods(), ","),
		AllowHeaders:  strings.Join(c.GetAllowHeaders(), ","),
		ExposeHeaders: strings.Join(c.GetExposeHeaders(), ","),
	}
	for _, o := range c.GetAllowOrigins() {
		if sm := stringMatcher(o); sm != nil {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
		}
	}
	for _, o := range c.GetAllowOrigin() { // deprecated exact list
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
	}
	if d := c.GetMaxAge(); d != nil {
		out.MaxAge = strconv.FormatInt(int64(d.AsDuration().Seconds()), 10)
	}
	if c.GetAllowCredentials() != nil {
		out.AllowCredentials = wrapperspb.Bool(c.GetAllowCredentials().GetValue())
	}
	return out
}

func headerOps(h *networking.Headers_HeaderOperations) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, k := range sortedKeys(h.GetSet()) {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: h.GetSet()[k]}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, k := range sortedKeys(h.GetAdd()) {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: h.GetAdd()[k]}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

// defaultRoute sends everything to cluster (used when no VirtualService
// applies), with Istio's default retries and no timeout.
func defaultRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  "default",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          durationpb.New(0),
			RetryPolicy:      retryPolicy(nil),
		}},
	}
}

// domains lists the names a service is reachable by on port.
func (b *builder) domains(svc *registry.Service, port uint32, seen map[string]bool) []string {
	ps := ":" + strconv.Itoa(int(port))
	names := append([]string{svc.Hostname}, b.shortNames(svc)...)
	names = append(names, svc.Addresses...)
	var out []string
	for _, n := range names {
		for _, d := range []string{n, n + ps} {
			if !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// shortNames returns NAME.NS, NAME.NS.svc and (for a proxy in the same
// namespace) NAME for a NAME.NS.svc.SUFFIX host; nothing for other hosts.
func (b *builder) shortNames(svc *registry.Service) []string {
	suffix := ".svc." + b.suffix
	if !strings.HasSuffix(svc.Hostname, suffix) {
		return nil
	}
	short := strings.TrimSuffix(svc.Hostname, "."+b.suffix) // name.ns.svc
	parts := strings.Split(short, ".")
	if len(parts) != 3 {
		return nil
	}
	names := []string{parts[0] + "." + parts[1], short}
	if svc.Namespace == b.p.Namespace {
		names = append(names, parts[0])
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sortedCopy(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
