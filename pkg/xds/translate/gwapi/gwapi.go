// Package gwapi converts Kubernetes Gateway API resources (GatewayClass,
// Gateway, HTTPRoute) into Istio Gateways and VirtualServices, as Istio
// does before it generates xDS: pkg/xds/translate then treats the result
// like any Istio configuration.
//
//   - A Gateway of class istio or weft (or of a GatewayClass whose
//     controllerName is istio.io/gateway-controller or
//     weftmesh.io/gateway-controller) becomes one Istio Gateway per
//     HTTP/HTTPS listener, selecting the workloads labelled
//     gateway.networking.k8s.io/gateway-name=NAME in the Gateway's namespace
//     (Istio's label; `weft proxy --gateway --labels ...`) and, when
//     spec.addresses has a Hostname (Istio's manual deployment), the
//     endpoints of that Service (ServiceAnnotation). HTTPS listeners
//     terminate TLS with the first certificateRef as credentialName.
//   - TLS listeners in mode Passthrough become servers with tls
//     PASSTHROUGH and their TLSRoutes VirtualService `tls` routes by SNI
//     (sniHosts = the route's hostnames within the listener's); TCP
//     listeners and TLS listeners in mode Terminate (tls SIMPLE, first
//     certificateRef) carry TCPRoutes as VirtualService `tcp` routes with
//     weighted destinations.
//   - GRPCRoutes are HTTPRoutes whose method matches are paths
//     (gatewayapi.GRPCRouteSpec.HTTP) and are converted alike.
//   - HTTPRoutes attached to those listeners (parentRefs with sectionName
//     and port, allowedRoutes Same/All, hostname intersection) become one
//     VirtualService per listener and hostname, whose routes are every
//     attached rule ordered by the Gateway API's precedence.
//   - backendRefs (and mirrors) to Services in another namespace need a
//     ReferenceGrant there, as in Istio; without one they get no traffic
//     (a rule left with no backend answers 500).
//   - HTTPRoutes whose parentRef is a Service (GAMMA) become a
//     VirtualService for that service's host, bound to the mesh: exported
//     everywhere when the route is in the service's namespace (producer
//     route), else only to the route's namespace (consumer route).
//
// Convert is pure and deterministic.
package gwapi

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	gw "github.com/weftmesh/weft/pkg/config/gatewayapi"
)

// GatewayNameLabel is the label a Gateway API Gateway's proxies carry.
const GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

// SourceAnnotation marks generated resources with the Gateway API object
// they come from ("Gateway ns/name", "HTTPRoute ns/name, ...").
const SourceAnnotation = "weft.io/gateway-api-source"

// ServiceAnnotation, on a generated Istio Gateway, names the Service host
// of the Gateway's first Hostname address (Istio's manual deployment: the
// Gateway is served by that Service's endpoints).
const ServiceAnnotation = "weft.io/gateway-api-service"

// IsGenerated reports whether c was generated from Gateway API resources.
func IsGenerated(c *config.Resource) bool { return c.Meta.Annotations[SourceAnnotation] != "" }

// HasGatewayAPI reports whether configs hold any Gateway or route.
func HasGatewayAPI(configs []*config.Resource) bool {
	for _, c := range configs {
		switch c.Kind {
		case config.KindKubernetesGateway, config.KindHTTPRoute, config.KindGRPCRoute, config.KindTLSRoute, config.KindTCPRoute:
			return true
		}
	}
	return false
}

type gateway struct {
	res  *config.Resource
	spec gw.GatewaySpec
	// grants are every ReferenceGrant (a certificateRef to another
	// namespace needs one there).
	grants []gw.NamedGrant
}

// CredentialPrefix starts the credentialName of a certificateRef to a
// Secret in another namespace than the Gateway's (as Istio's
// kubernetes-gateway://NAMESPACE/NAME); translation resolves it in that
// namespace when a ReferenceGrant there allows the gateway's namespace.
const CredentialPrefix = "kubernetes-gateway://"

// credentialName returns the credentialName of listener l's first
// certificateRef ("" for none, or for a Passthrough listener): the
// Secret's name in the Gateway's namespace, CredentialPrefix+NS/NAME in
// another namespace NS that grants it; ok is false when no ReferenceGrant
// there lets the Gateway refer to it (Istio: ResolvedRefs
// RefNotPermitted, the listener is not served).
func (g *gateway) credentialName(l gw.Listener) (name string, ok bool) {
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 || l.TLSMode() == gw.TLSModePassthrough {
		return "", true
	}
	ref := l.TLS.CertificateRefs[0]
	refNS := gw.Deref(ref.Namespace, ns(g.res))
	if refNS == ns(g.res) {
		return ref.Name, true
	}
	if !gw.SecretGranted(g.grants, ns(g.res), ref.Name, refNS) {
		return "", false
	}
	return CredentialPrefix + refNS + "/" + ref.Name, true
}

type route struct {
	res  *config.Resource
	spec gw.HTTPRouteSpec // a GRPCRoute's, TLSRoute's or TCPRoute's as its HTTP method gives it
	kind string           // HTTPRoute, GRPCRoute, TLSRoute or TCPRoute
	// grants are every ReferenceGrant (cross-namespace backendRefs need
	// one in the backend's namespace).
	grants []gw.NamedGrant
}

// granted reports whether the route may refer to Service name in ns.
func (r *route) granted(name, ns string) bool {
	return gw.Granted(r.grants, gw.Group, r.kind, cmp.Or(r.res.Meta.Namespace, config.DefaultNamespace), "", "Service", name, ns)
}

// entry is one HTTPRoute match (of one rule) headed for one host.
type entry struct {
	rt    *route
	rule  int
	match int
	m     gw.HTTPRouteMatch // the match (default: PathPrefix /)
	port  uint32            // GAMMA parentRef port, 0 for any
}

// Convert returns the Istio Gateways and VirtualServices equivalent to the
// Gateway API resources in configs (other kinds are ignored). domainSuffix
// qualifies Service names ("cluster.local" when empty).
func Convert(configs []*config.Resource, domainSuffix string) []*config.Resource {
	if domainSuffix == "" {
		domainSuffix = "cluster.local"
	}
	classes := map[string]gw.GatewayClassSpec{}
	var gws []*gateway
	var rts, l4 []*route
	var grants []gw.NamedGrant
	for _, c := range configs {
		switch c.Kind {
		case config.KindReferenceGrant:
			g := gw.NamedGrant{Namespace: ns(c)}
			if gw.Spec(c.Spec, &g.Spec) == nil {
				grants = append(grants, g)
			}
		case config.KindGatewayClass:
			var s gw.GatewayClassSpec
			if gw.Spec(c.Spec, &s) == nil {
				classes[c.Meta.Name] = s
			}
		case config.KindKubernetesGateway:
			g := &gateway{res: c}
			if gw.Spec(c.Spec, &g.spec) == nil {
				gws = append(gws, g)
			}
		case config.KindHTTPRoute:
			r := &route{res: c, kind: config.KindHTTPRoute}
			if gw.Spec(c.Spec, &r.spec) == nil {
				rts = append(rts, r)
			}
		case config.KindGRPCRoute:
			var g gw.GRPCRouteSpec
			if gw.Spec(c.Spec, &g) == nil {
				rts = append(rts, &route{res: c, kind: config.KindGRPCRoute, spec: g.HTTP()})
			}
		case config.KindTLSRoute:
			var t gw.TLSRouteSpec
			if gw.Spec(c.Spec, &t) == nil {
				l4 = append(l4, &route{res: c, kind: config.KindTLSRoute, spec: t.HTTP()})
			}
		case config.KindTCPRoute:
			var t gw.TCPRouteSpec
			if gw.Spec(c.Spec, &t) == nil {
				l4 = append(l4, &route{res: c, kind: config.KindTCPRoute, spec: t.HTTP()})
			}
		}
	}
	byAge := func(a, b *config.Resource) int {
		if c := a.Meta.CreationTimestamp.Compare(b.Meta.CreationTimestamp); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(ns(a), ns(b)), cmp.Compare(a.Meta.Name, b.Meta.Name))
	}
	slices.SortFunc(gws, func(a, b *gateway) int { return byAge(a.res, b.res) })
	slices.SortFunc(rts, func(a, b *route) int { return byAge(a.res, b.res) })
	slices.SortFunc(l4, func(a, b *route) int { return byAge(a.res, b.res) })
	for _, r := range slices.Concat(rts, l4) {
		r.grants = grants
	}

	var out []*config.Resource
	for _, g := range gws {
		if !gw.OurClass(g.spec.GatewayClassName, classes) {
			continue
		}
		g.grants = grants
		for _, l := range g.spec.Listeners {
			if _, ok := g.credentialName(l); !ok {
				continue // a certificateRef to another namespace without a ReferenceGrant: not served
			}
			if l.Protocol == "TLS" || l.Protocol == "TCP" {
				out = append(out, l4Listener(g, l, l4, domainSuffix)...)
				continue
			}
			if l.Protocol != "HTTP" && l.Protocol != "HTTPS" {
				continue
			}
			igw := istioGateway(g, l)
			out = append(out, igw)
			byHost := map[string][]entry{}
			var hosts []string
			for _, r := range rts {
				for _, h := range attach(g, l, r) {
					if _, ok := byHost[h]; !ok {
						hosts = append(hosts, h)
					}
					byHost[h] = append(byHost[h], entries(r, 0)...)
				}
			}
			for i, h := range hosts {
				vs := virtualService(byHost[h], domainSuffix)
				vs.Hosts = []string{h}
				vs.Gateways = []string{ns(igw) + "/" + igw.Meta.Name}
				out = append(out, generated(config.KindVirtualService, "networking.istio.io/v1", ns(g.res), fmt.Sprintf("%s-%d", igw.Meta.Name, i), sources(byHost[h]), oldest(byHost[h]), vs))
			}
		}
	}

	// GAMMA: routes whose parent is a Service.
	type meshKey struct{ routeNS, host string }
	mesh := map[meshKey][]entry{}
	var keys []meshKey
	for _, r := range rts {
		for _, pr := range r.spec.ParentRefs {
			if !pr.IsService() || pr.Name == "" {
				continue
			}
			svcNS := gw.Deref(pr.Namespace, ns(r.res))
			k := meshKey{ns(r.res), pr.Name + "." + svcNS + ".svc." + domainSuffix}
			if _, ok := mesh[k]; !ok {
				keys = append(keys, k)
			}
			mesh[k] = append(mesh[k], entries(r, uint32(gw.Deref(pr.Port, 0)))...)
		}
	}
	// A consumer route (in the client's namespace) wins over the
	// producer's for clients in its namespace, as GAMMA specifies: its
	// VirtualService sorts first (translation takes the oldest one).
	producerAge := map[string]time.Time{}
	for _, k := range keys {
		if k.routeNS == strings.Split(k.host, ".")[1] {
			producerAge[k.host] = oldest(mesh[k])
		}
	}
	for _, k := range keys {
		vs := virtualService(mesh[k], domainSuffix)
		created := oldest(mesh[k])
		if p, ok := producerAge[k.host]; ok && k.routeNS != strings.Split(k.host, ".")[1] && !created.Before(p) {
			created = p.Add(-time.Nanosecond)
		}
		vs.Hosts = []string{k.host}
		svcNS := strings.Split(k.host, ".")[1]
		if k.routeNS == svcNS {
			vs.ExportTo = []string{"*"}
		} else {
			vs.ExportTo = []string{"."}
		}
		name := "gwapi-mesh-" + strings.Split(k.host, ".")[0] + "-" + svcNS
		out = append(out, generated(config.KindVirtualService, "networking.istio.io/v1", k.routeNS, name, sources(mesh[k]), created, vs))
	}
	return out
}

func ns(c *config.Resource) string { return cmp.Or(c.Meta.Namespace, config.DefaultNamespace) }

func generated(kind, apiVersion, namespace, name, source string, created time.Time, spec *networking.VirtualService) *config.Resource {
	return &config.Resource{APIVersion: apiVersion, Kind: kind, Spec: spec, Meta: config.Meta{
		Name: name, Namespace: namespace, CreationTimestamp: created,
		Annotations: map[string]string{SourceAnnotation: source},
	}}
}

// istioGateway is the Istio Gateway of one listener.
func istioGateway(g *gateway, l gw.Listener) *config.Resource {
	host := gw.Deref(l.Hostname, "*")
	srv := &networking.Server{
		Name:  l.Name,
		Port:  &networking.Port{Number: uint32(l.Port), Protocol: l.Protocol, Name: l.Name},
		Hosts: []string{"*/" + host},
	}
	switch cred, _ := g.credentialName(l); {
	case l.Protocol == "TLS" && l.TLSMode() == gw.TLSModePassthrough:
		srv.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_PASSTHROUGH}
	case (l.Protocol == "HTTPS" || l.Protocol == "TLS") && cred != "":
		srv.Tls = &networking.ServerTLSSettings{Mode: networking.ServerTLSSettings_SIMPLE, CredentialName: cred}
	}
	spec := &networking.Gateway{Selector: map[string]string{GatewayNameLabel: g.res.Meta.Name}, Servers: []*networking.Server{srv}}
	ann := map[string]string{SourceAnnotation: "Gateway " + ns(g.res) + "/" + g.res.Meta.Name}
	for _, a := range g.spec.Addresses {
		if gw.Deref(a.Type, "IPAddress") == "Hostname" {
			ann[ServiceAnnotation] = a.Value
			break
		}
	}
	return &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindGateway, Spec: spec, Meta: config.Meta{
		Name: g.res.Meta.Name + "-gwapi-" + l.Name, Namespace: ns(g.res), CreationTimestamp: g.res.Meta.CreationTimestamp,
		Annotations: ann,
	}}
}

// attach returns the hostnames under which route r serves on listener l of
// gateway g (none: not attached).
func attach(g *gateway, l gw.Listener, r *route) []string {
	attached := false
	for _, pr := range r.spec.ParentRefs {
		attached = attached || gw.ParentSelects(pr, ns(r.res), ns(g.res), g.res.Meta.Name, l)
	}
	if !attached || !gw.ListenerAccepts(l, r.kind) || !gw.AllowsRoute(l, ns(g.res), ns(r.res), r.kind) {
		return nil
	}
	hosts := gw.Intersect(l.Hostname, r.spec.Hostnames)
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// entries lists every match of every rule of r (the default match is
// PathPrefix /).
func entries(r *route, port uint32) []entry {
	var out []entry
	for i, rule := range r.spec.Rules {
		if len(rule.Matches) == 0 {
			out = append(out, entry{rt: r, rule: i, match: 0, port: port})
			continue
		}
		for j, m := range rule.Matches {
			out = append(out, entry{rt: r, rule: i, match: j, m: m, port: port})
		}
	}
	return out
}

func sources(es []entry) string {
	var names []string
	for _, e := range es {
		n := e.rt.kind + " " + ns(e.rt.res) + "/" + e.rt.res.Meta.Name
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

func oldest(es []entry) time.Time {
	var t time.Time
	for i, e := range es {
		if c := e.rt.res.Meta.CreationTimestamp; i == 0 || c.Before(t) {
			t = c
		}
	}
	return t
}

// pathOf returns a match's path type and value with the defaults.
func pathOf(m gw.HTTPRouteMatch) (string, string) {
	if m.Path == nil {
		return "PathPrefix", "/"
	}
	return gw.Deref(m.Path.Type, "PathPrefix"), gw.Deref(m.Path.Value, "/")
}

// precedence orders entries as the Gateway API specifies: Exact paths,
// then (weft's choice, as Istio) regular expressions, then prefixes, each
// longer first; then method matches, more header matches, more query
// matches; then the oldest route, then namespace/name, then rule and
// match order.
func precedence(a, b entry) int {
	rank := func(t string) int {
		switch t {
		case "Exact":
			return 0
		case "RegularExpression":
			return 1
		}
		return 2
	}
	at, av := pathOf(a.m)
	bt, bv := pathOf(b.m)
	if at == "PathPrefix" {
		av = strings.TrimSuffix(av, "/")
	}
	if bt == "PathPrefix" {
		bv = strings.TrimSuffix(bv, "/")
	}
	return cmp.Or(
		cmp.Compare(rank(at), rank(bt)),
		-cmp.Compare(len(av), len(bv)),
		-cmp.Compare(boolInt(a.m.Method != nil), boolInt(b.m.Method != nil)),
		-cmp.Compare(len(a.m.Headers), len(b.m.Headers)),
		-cmp.Compare(len(a.m.QueryParams), len(b.m.QueryParams)),
		a.rt.res.Meta.CreationTimestamp.Compare(b.rt.res.Meta.CreationTimestamp),
		cmp.Compare(ns(a.rt.res), ns(b.rt.res)),
		cmp.Compare(a.rt.res.Meta.Name, b.rt.res.Meta.Name),
		cmp.Compare(a.rule, b.rule),
		cmp.Compare(a.match, b.match),
	)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// virtualService turns entries into VirtualService http routes, ordered by
// precedence.
func virtualService(es []entry, suffix string) *networking.VirtualService {
	es = slices.Clone(es)
	slices.SortStableFunc(es, precedence)
	vs := &networking.VirtualService{}
	for _, e := range es {
		vs.Http = append(vs.Http, httpRoutes(e, suffix)...)
	}
	return vs
}

// httpRoutes converts one entry. A PathPrefix match /foo becomes the exact
// path /foo plus the prefix /foo/ (the Gateway API matches whole path
// elements: /foo/bar but not /foobar); with ReplacePrefixMatch the two get
// their own routes so each rewrites its part.
func httpRoutes(e entry, suffix string) []*networking.HTTPRoute {
	rule := e.rt.spec.Rules[e.rule]
	typ, val := pathOf(e.m)
	var uris []*networking.StringMatch
	switch typ {
	case "Exact":
		uris = []*networking.StringMatch{{MatchType: &networking.StringMatch_Exact{Exact: val}}}
	case "RegularExpression":
		uris = []*networking.StringMatch{{MatchType: &networking.StringMatch_Regex{Regex: val}}}
	default:
		if p := strings.TrimSuffix(val, "/"); p == "" {
			uris = []*networking.StringMatch{{MatchType: &networking.StringMatch_Prefix{Prefix: "/"}}}
		} else {
			uris = []*networking.StringMatch{
				{MatchType: &networking.StringMatch_Exact{Exact: p}},
				{MatchType: &networking.StringMatch_Prefix{Prefix: p + "/"}},
			}
		}
	}
	matchFor := func(uri *networking.StringMatch) *networking.HTTPMatchRequest {
		m := &networking.HTTPMatchRequest{Uri: uri, Port: e.port}
		for _, h := range e.m.Headers {
			if m.Headers == nil {
				m.Headers = map[string]*networking.StringMatch{}
			}
			m.Headers[strings.ToLower(h.Name)] = stringMatch(gw.Deref(h.Type, "Exact"), h.Value)
		}
		for _, q := range e.m.QueryParams {
			if m.QueryParams == nil {
				m.QueryParams = map[string]*networking.StringMatch{}
			}
			m.QueryParams[q.Name] = stringMatch(gw.Deref(q.Type, "Exact"), q.Value)
		}
		if e.m.Method != nil {
			m.Method = &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: *e.m.Method}}
		}
		return m
	}
	name := fmt.Sprintf("%s.%s.%d", ns(e.rt.res), e.rt.res.Meta.Name, e.rule)
	if e.rt.kind == config.KindGRPCRoute {
		name = fmt.Sprintf("%s.grpcroute.%s.%d", ns(e.rt.res), e.rt.res.Meta.Name, e.rule)
	}
	base := baseRoute(e, rule, suffix)
	base.Name = name
	prefixRewrite := ""
	for _, f := range rule.Filters {
		if f.Type == gw.FilterURLRewrite && f.URLRewrite != nil && f.URLRewrite.Path != nil && f.URLRewrite.Path.Type == gw.PrefixMatchHTTPPathModifier {
			prefixRewrite = gw.Deref(f.URLRewrite.Path.ReplacePrefixMatch, "/")
		}
	}
	if prefixRewrite == "" || typ != "PathPrefix" {
		for _, u := range uris {
			base.Match = append(base.Match, matchFor(u))
		}
		return []*networking.HTTPRoute{base}
	}
	var out []*networking.HTTPRoute
	for _, u := range uris {
		r := cloneRoute(base)
		r.Match = []*networking.HTTPMatchRequest{matchFor(u)}
		if r.Rewrite == nil {
			r.Rewrite = &networking.HTTPRewrite{}
		}
		r.Rewrite.Uri = prefixRewrite
		if u.GetPrefix() != "" && u.GetPrefix() != "/" || u.GetPrefix() == "/" && prefixRewrite != "/" {
			// "/foo/" + rest → prefixRewrite + "/" + rest.
			r.Rewrite.Uri = strings.TrimSuffix(prefixRewrite, "/") + "/"
		}
		out = append(out, r)
	}
	return out
}

func cloneRoute(r *networking.HTTPRoute) *networking.HTTPRoute {
	c := proto.Clone(r).(*networking.HTTPRoute)
	c.Match = nil
	return c
}

func stringMatch(typ, v string) *networking.StringMatch {
	if typ == "RegularExpression" {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: v}}
	}
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}
}

func destination(ref gw.BackendObjectReference, routeNS, suffix string) *networking.Destination {
	d := &networking.Destination{Host: ref.Name + "." + gw.Deref(ref.Namespace, routeNS) + ".svc." + suffix}
	if ref.Port != nil {
		d.Port = &networking.PortSelector{Number: uint32(*ref.Port)}
	}
	return d
}

func headers(hf *gw.HTTPHeaderFilter) *networking.Headers_HeaderOperations {
	op := &networking.Headers_HeaderOperations{Remove: hf.Remove}
	for _, h := range hf.Set {
		if op.Set == nil {
			op.Set = map[string]string{}
		}
		op.Set[h.Name] = h.Value
	}
	for _, h := range hf.Add {
		if op.Add == nil {
			op.Add = map[string]string{}
		}
		op.Add[h.Name] = h.Value
	}
	return op
}

// baseRoute is a rule's route without matches: backends, filters,
// timeouts.
func baseRoute(e entry, rule gw.HTTPRouteRule, suffix string) *networking.HTTPRoute {
	rns := ns(e.rt.res)
	r := &networking.HTTPRoute{}
	redirect := false
	for _, f := range rule.Filters {
		switch f.Type {
		case gw.FilterRequestHeaderModifier:
			if f.RequestHeaderModifier != nil {
				if r.Headers == nil {
					r.Headers = &networking.Headers{}
				}
				r.Headers.Request = headers(f.RequestHeaderModifier)
			}
		case gw.FilterResponseHeaderModifier:
			if f.ResponseHeaderModifier != nil {
				if r.Headers == nil {
					r.Headers = &networking.Headers{}
				}
				r.Headers.Response = headers(f.ResponseHeaderModifier)
			}
		case gw.FilterRequestRedirect:
			if rr := f.RequestRedirect; rr != nil {
				redirect = true
				r.Redirect = &networking.HTTPRedirect{
					Scheme:       gw.Deref(rr.Scheme, ""),
					Authority:    gw.Deref(rr.Hostname, ""),
					RedirectCode: uint32(gw.Deref(rr.StatusCode, 302)),
				}
				if rr.Port != nil {
					r.Redirect.RedirectPort = &networking.HTTPRedirect_Port{Port: uint32(*rr.Port)}
				}
				if rr.Path != nil && rr.Path.Type == gw.FullPathHTTPPathModifier {
					r.Redirect.Uri = gw.Deref(rr.Path.ReplaceFullPath, "/")
				}
			}
		case gw.FilterURLRewrite:
			if rw := f.URLRewrite; rw != nil {
				r.Rewrite = &networking.HTTPRewrite{Authority: gw.Deref(rw.Hostname, "")}
				if rw.Path != nil && rw.Path.Type == gw.FullPathHTTPPathModifier {
					r.Rewrite.UriRegexRewrite = &networking.RegexRewrite{Match: "^/.*$", Rewrite: gw.Deref(rw.Path.ReplaceFullPath, "/")}
				}
			}
		case gw.FilterRequestMirror:
			if m := f.RequestMirror; m != nil && e.rt.granted(m.BackendRef.Name, gw.Deref(m.BackendRef.Namespace, rns)) {
				mp := &networking.HTTPMirrorPolicy{Destination: destination(m.BackendRef, rns, suffix)}
				switch {
				case m.Percent != nil:
					mp.Percentage = &networking.Percent{Value: float64(*m.Percent)}
				case m.Fraction != nil:
					mp.Percentage = &networking.Percent{Value: 100 * float64(m.Fraction.Numerator) / float64(gw.Deref(m.Fraction.Denominator, 100))}
				}
				r.Mirrors = append(r.Mirrors, mp)
			}
		}
	}
	if redirect {
		return r
	}
	for _, b := range rule.BackendRefs {
		w := gw.Deref(b.Weight, 1)
		if w == 0 || !b.IsService() || !e.rt.granted(b.Name, gw.Deref(b.Namespace, rns)) {
			continue // no traffic, or an invalid reference (500 when none is left)
		}
		d := &networking.HTTPRouteDestination{Destination: destination(b.BackendObjectReference, rns, suffix), Weight: w}
		for _, f := range b.Filters {
			switch {
			case f.Type == gw.FilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
				if d.Headers == nil {
					d.Headers = &networking.Headers{}
				}
				d.Headers.Request = headers(f.RequestHeaderModifier)
			case f.Type == gw.FilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
				if d.Headers == nil {
					d.Headers = &networking.Headers{}
				}
				d.Headers.Response = headers(f.ResponseHeaderModifier)
			}
		}
		r.Route = append(r.Route, d)
	}
	switch {
	case len(r.Route) == 0 && len(rule.BackendRefs) == 0:
		// No backends: the Gateway API answers 404.
		r.DirectResponse = &networking.HTTPDirectResponse{Status: 404}
	case len(r.Route) == 0:
		// Backends, but none usable (weight 0, unsupported, or in another
		// namespace without a ReferenceGrant): 500.
		r.DirectResponse = &networking.HTTPDirectResponse{Status: 500}
	case len(r.Route) == 1:
		r.Route[0].Weight = 0
	}
	if t := rule.Timeouts; t != nil {
		if t.Request != nil {
			if d, err := gw.ParseDuration(*t.Request); err == nil {
				r.Timeout = durationpb.New(d)
			}
		}
		if t.BackendRequest != nil {
			if d, err := gw.ParseDuration(*t.BackendRequest); err == nil {
				// Each attempt's timeout; Istio's default retry count.
				r.Retries = &networking.HTTPRetry{Attempts: 2, PerTryTimeout: durationpb.New(d)}
			}
		}
	}
	return r
}

// l4Listener converts a TLS or TCP listener: its Istio Gateway (TLS
// Passthrough: tls PASSTHROUGH; TLS Terminate: tls SIMPLE with the first
// certificateRef; TCP: no tls) and one VirtualService per attached route,
// as Istio does: a TLSRoute's rules become `tls` routes matching its
// hostnames (narrowed to the listener's) as sniHosts, a TCPRoute's rules
// `tcp` routes; each with the rule's weighted backendRefs.
func l4Listener(g *gateway, l gw.Listener, rts []*route, suffix string) []*config.Resource {
	igw := istioGateway(g, l)
	out := []*config.Resource{igw}
	i := 0
	for _, r := range rts {
		hosts := attach(g, l, r)
		if len(hosts) == 0 {
			continue
		}
		vs := &networking.VirtualService{Gateways: []string{ns(igw) + "/" + igw.Meta.Name}}
		switch r.kind {
		case config.KindTLSRoute:
			vs.Hosts = hosts
			for _, rule := range r.spec.Rules {
				if dests := l4Destinations(r, rule, suffix); len(dests) > 0 {
					vs.Tls = append(vs.Tls, &networking.TLSRoute{Match: []*networking.TLSMatchAttributes{{SniHosts: hosts}}, Route: dests})
				}
			}
		case config.KindTCPRoute:
			vs.Hosts = []string{"*"}
			for _, rule := range r.spec.Rules {
				if dests := l4Destinations(r, rule, suffix); len(dests) > 0 {
					vs.Tcp = append(vs.Tcp, &networking.TCPRoute{Route: dests})
				}
			}
		}
		if len(vs.Tls) == 0 && len(vs.Tcp) == 0 {
			continue // no usable backend: connections are refused
		}
		name := fmt.Sprintf("%s-%s-%d", igw.Meta.Name, strings.ToLower(strings.TrimSuffix(r.kind, "Route")), i)
		i++
		out = append(out, generated(config.KindVirtualService, "networking.istio.io/v1", ns(g.res), name,
			r.kind+" "+ns(r.res)+"/"+r.res.Meta.Name, r.res.Meta.CreationTimestamp, vs))
	}
	return out
}

// l4Destinations returns a TLSRoute or TCPRoute rule's weighted
// destinations: weight 0, non-Service backends and other namespaces
// without a ReferenceGrant are left out; a lone destination has no weight.
func l4Destinations(r *route, rule gw.HTTPRouteRule, suffix string) []*networking.RouteDestination {
	rns := ns(r.res)
	var out []*networking.RouteDestination
	for _, b := range rule.BackendRefs {
		w := gw.Deref(b.Weight, 1)
		if w == 0 || !b.IsService() || !r.granted(b.Name, gw.Deref(b.Namespace, rns)) {
			continue
		}
		out = append(out, &networking.RouteDestination{Destination: destination(b.BackendObjectReference, rns, suffix), Weight: w})
	}
	if len(out) == 1 {
		out[0].Weight = 0
	}
	return out
}
