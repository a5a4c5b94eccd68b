package gatewayapi

import (
	"encoding/json"
	"fmt"
	"regexp"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The structs below mirror the schema in descriptor.go with Gateway API
// field names. Pointers mark fields whose absence matters (defaults differ
// from the zero value).

// GatewayClassSpec is a GatewayClass spec.
type GatewayClassSpec struct {
	ControllerName string `json:"controllerName"`
	Description    string `json:"description,omitempty"`
}

// GatewaySpec is a Gateway spec.
type GatewaySpec struct {
	GatewayClassName string           `json:"gatewayClassName"`
	Listeners        []Listener       `json:"listeners,omitempty"`
	Addresses        []GatewayAddress `json:"addresses,omitempty"`
	Infrastructure   *Infrastructure  `json:"infrastructure,omitempty"`
}

// GatewayAddress is one requested address of a Gateway.
type GatewayAddress struct {
	Type  *string `json:"type,omitempty"`
	Value string  `json:"value"`
}

// Infrastructure is what the Gateway asks of its deployment.
type Infrastructure struct {
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Listener is one Gateway listener.
type Listener struct {
	Name          string         `json:"name"`
	Hostname      *string        `json:"hostname,omitempty"`
	Port          int32          `json:"port"`
	Protocol      string         `json:"protocol"`
	TLS           *TLSConfig     `json:"tls,omitempty"`
	AllowedRoutes *AllowedRoutes `json:"allowedRoutes,omitempty"`
}

// TLSConfig is a listener's TLS settings.
type TLSConfig struct {
	Mode            *string                 `json:"mode,omitempty"`
	CertificateRefs []SecretObjectReference `json:"certificateRefs,omitempty"`
	Options         map[string]string       `json:"options,omitempty"`
}

// SecretObjectReference names a Secret (by default) holding a certificate.
type SecretObjectReference struct {
	Group     *string `json:"group,omitempty"`
	Kind      *string `json:"kind,omitempty"`
	Name      string  `json:"name"`
	Namespace *string `json:"namespace,omitempty"`
}

// AllowedRoutes limits which routes may attach to a listener.
type AllowedRoutes struct {
	Namespaces *RouteNamespaces `json:"namespaces,omitempty"`
	Kinds      []RouteGroupKind `json:"kinds,omitempty"`
}

// RouteNamespaces says from which namespaces routes may attach.
type RouteNamespaces struct {
	From     *string        `json:"from,omitempty"`
	Selector *LabelSelector `json:"selector,omitempty"`
}

// LabelSelector is a Kubernetes label selector.
type LabelSelector struct {
	MatchLabels      map[string]string          `json:"matchLabels,omitempty"`
	MatchExpressions []LabelSelectorRequirement `json:"matchExpressions,omitempty"`
}

// LabelSelectorRequirement is one selector expression.
type LabelSelectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// RouteGroupKind is a route kind a listener accepts.
type RouteGroupKind struct {
	Group *string `json:"group,omitempty"`
	Kind  string  `json:"kind"`
}

// HTTPRouteSpec is an HTTPRoute spec.
type HTTPRouteSpec struct {
	ParentRefs []ParentReference `json:"parentRefs,omitempty"`
	Hostnames  []string          `json:"hostnames,omitempty"`
	Rules      []HTTPRouteRule   `json:"rules,omitempty"`
}

// ParentReference attaches a route to a Gateway (listener) or, for GAMMA
// mesh routing, to a Service.
type ParentReference struct {
	Group       *string `json:"group,omitempty"`
	Kind        *string `json:"kind,omitempty"`
	Namespace   *string `json:"namespace,omitempty"`
	Name        string  `json:"name"`
	SectionName *string `json:"sectionName,omitempty"`
	Port        *int32  `json:"port,omitempty"`
}

// GroupOr returns the reference's group, or def when unset.
func (p ParentReference) GroupOr(def string) string { return deref(p.Group, def) }

// KindOr returns the reference's kind, or def when unset.
func (p ParentReference) KindOr(def string) string { return deref(p.Kind, def) }

// IsService reports whether the parent is a Service (GAMMA mesh routing).
func (p ParentReference) IsService() bool {
	return p.GroupOr(Group) == "" && p.KindOr("Gateway") == "Service"
}

// IsGateway reports whether the parent is a Gateway.
func (p ParentReference) IsGateway() bool {
	return p.GroupOr(Group) == Group && p.KindOr("Gateway") == "Gateway"
}

// HTTPRouteRule is one rule: matches (ORed), filters and backends.
type HTTPRouteRule struct {
	Name        *string            `json:"name,omitempty"`
	Matches     []HTTPRouteMatch   `json:"matches,omitempty"`
	Filters     []HTTPRouteFilter  `json:"filters,omitempty"`
	BackendRefs []HTTPBackendRef   `json:"backendRefs,omitempty"`
	Timeouts    *HTTPRouteTimeouts `json:"timeouts,omitempty"`
}

// HTTPRouteMatch is one match; its conditions are ANDed.
type HTTPRouteMatch struct {
	Path        *HTTPPathMatch        `json:"path,omitempty"`
	Headers     []HTTPHeaderMatch     `json:"headers,omitempty"`
	QueryParams []HTTPQueryParamMatch `json:"queryParams,omitempty"`
	Method      *string               `json:"method,omitempty"`
}

// HTTPPathMatch matches the request path.
type HTTPPathMatch struct {
	Type  *string `json:"type,omitempty"`
	Value *string `json:"value,omitempty"`
}

// HTTPHeaderMatch matches one request header.
type HTTPHeaderMatch struct {
	Type  *string `json:"type,omitempty"`
	Name  string  `json:"name"`
	Value string  `json:"value"`
}

// HTTPQueryParamMatch matches one query parameter.
type HTTPQueryParamMatch struct {
	Type  *string `json:"type,omitempty"`
	Name  string  `json:"name"`
	Value string  `json:"value"`
}

// Filter types.
const (
	FilterRequestHeaderModifier  = "RequestHeaderModifier"
	FilterResponseHeaderModifier = "ResponseHeaderModifier"
	FilterRequestMirror          = "RequestMirror"
	FilterRequestRedirect        = "RequestRedirect"
	FilterURLRewrite             = "URLRewrite"
	FilterExtensionRef           = "ExtensionRef"
)

// HTTPRouteFilter is one filter of a rule or backend.
type HTTPRouteFilter struct {
	Type                   string                     `json:"type"`
	RequestHeaderModifier  *HTTPHeaderFilter          `json:"requestHeaderModifier,omitempty"`
	ResponseHeaderModifier *HTTPHeaderFilter          `json:"responseHeaderModifier,omitempty"`
	RequestMirror          *HTTPRequestMirrorFilter   `json:"requestMirror,omitempty"`
	RequestRedirect        *HTTPRequestRedirectFilter `json:"requestRedirect,omitempty"`
	URLRewrite             *HTTPURLRewriteFilter      `json:"urlRewrite,omitempty"`
	ExtensionRef           *LocalObjectReference      `json:"extensionRef,omitempty"`
}

// HTTPHeaderFilter sets, adds and removes headers.
type HTTPHeaderFilter struct {
	Set    []HTTPHeader `json:"set,omitempty"`
	Add    []HTTPHeader `json:"add,omitempty"`
	Remove []string     `json:"remove,omitempty"`
}

// HTTPHeader is a header name and value.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPRequestMirrorFilter mirrors requests to a backend.
type HTTPRequestMirrorFilter struct {
	BackendRef BackendObjectReference `json:"backendRef"`
	Percent    *int32                 `json:"percent,omitempty"`
	Fraction   *Fraction              `json:"fraction,omitempty"`
}

// Fraction is numerator/denominator (denominator default 100).
type Fraction struct {
	Numerator   int32  `json:"numerator"`
	Denominator *int32 `json:"denominator,omitempty"`
}

// BackendObjectReference names a backend (a Service by default).
type BackendObjectReference struct {
	Group     *string `json:"group,omitempty"`
	Kind      *string `json:"kind,omitempty"`
	Name      string  `json:"name"`
	Namespace *string `json:"namespace,omitempty"`
	Port      *int32  `json:"port,omitempty"`
}

// IsService reports whether the reference names a core Service.
func (r BackendObjectReference) IsService() bool {
	return deref(r.Group, "") == "" && deref(r.Kind, "Service") == "Service"
}

// HTTPRequestRedirectFilter answers with a redirect.
type HTTPRequestRedirectFilter struct {
	Scheme     *string           `json:"scheme,omitempty"`
	Hostname   *string           `json:"hostname,omitempty"`
	Path       *HTTPPathModifier `json:"path,omitempty"`
	Port       *int32            `json:"port,omitempty"`
	StatusCode *int32            `json:"statusCode,omitempty"`
}

// HTTPURLRewriteFilter rewrites the host and path sent upstream.
type HTTPURLRewriteFilter struct {
	Hostname *string           `json:"hostname,omitempty"`
	Path     *HTTPPathModifier `json:"path,omitempty"`
}

// Path modifier types.
const (
	FullPathHTTPPathModifier    = "ReplaceFullPath"
	PrefixMatchHTTPPathModifier = "ReplacePrefixMatch"
)

// HTTPPathModifier replaces the full path or the matched prefix.
type HTTPPathModifier struct {
	Type               string  `json:"type"`
	ReplaceFullPath    *string `json:"replaceFullPath,omitempty"`
	ReplacePrefixMatch *string `json:"replacePrefixMatch,omitempty"`
}

// LocalObjectReference names an object in the route's namespace.
type LocalObjectReference struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// HTTPBackendRef is a weighted backend with its own filters.
type HTTPBackendRef struct {
	BackendObjectReference
	Weight  *int32            `json:"weight,omitempty"`
	Filters []HTTPRouteFilter `json:"filters,omitempty"`
}

// HTTPRouteTimeouts are the rule's timeouts (Gateway API durations).
type HTTPRouteTimeouts struct {
	Request        *string `json:"request,omitempty"`
	BackendRequest *string `json:"backendRequest,omitempty"`
}

// GRPCRouteSpec is a GRPCRoute spec. Its filters and backendRefs share
// the HTTPRoute types (validation refuses the filter types GRPCRoute does
// not have).
type GRPCRouteSpec struct {
	ParentRefs []ParentReference `json:"parentRefs,omitempty"`
	Hostnames  []string          `json:"hostnames,omitempty"`
	Rules      []GRPCRouteRule   `json:"rules,omitempty"`
}

// GRPCRouteRule is one rule of a GRPCRoute.
type GRPCRouteRule struct {
	Name        *string           `json:"name,omitempty"`
	Matches     []GRPCRouteMatch  `json:"matches,omitempty"`
	Filters     []HTTPRouteFilter `json:"filters,omitempty"`
	BackendRefs []HTTPBackendRef  `json:"backendRefs,omitempty"`
}

// GRPCRouteMatch matches a gRPC method and headers.
type GRPCRouteMatch struct {
	Method  *GRPCMethodMatch  `json:"method,omitempty"`
	Headers []HTTPHeaderMatch `json:"headers,omitempty"`
}

// GRPCMethodMatch matches the service and method (type Exact or
// RegularExpression).
type GRPCMethodMatch struct {
	Type    *string `json:"type,omitempty"`
	Service *string `json:"service,omitempty"`
	Method  *string `json:"method,omitempty"`
}

// HTTP returns the GRPCRoute as the HTTPRoute it is on the wire: a gRPC
// call is a POST to /SERVICE/METHOD, so a method match becomes a path
// match (Exact service and method: the exact path; service only: the
// path prefix /SERVICE/; method only or RegularExpression: a regular
// expression over the path).
func (s GRPCRouteSpec) HTTP() HTTPRouteSpec {
	out := HTTPRouteSpec{ParentRefs: s.ParentRefs, Hostnames: s.Hostnames}
	for _, r := range s.Rules {
		hr := HTTPRouteRule{Name: r.Name, Filters: r.Filters, BackendRefs: r.BackendRefs}
		for _, m := range r.Matches {
			hm := HTTPRouteMatch{Headers: m.Headers}
			if mm := m.Method; mm != nil {
				svc, meth := deref(mm.Service, ""), deref(mm.Method, "")
				typ, val := "", ""
				switch {
				case deref(mm.Type, "Exact") == "RegularExpression":
					typ, val = "RegularExpression", "/"+orAny(svc, "[^/]+")+"/"+orAny(meth, "[^/]+")
				case svc != "" && meth != "":
					typ, val = "Exact", "/"+svc+"/"+meth
				case svc != "":
					typ, val = "PathPrefix", "/"+svc+"/"
				case meth != "":
					typ, val = "RegularExpression", "/[^/]+/"+regexp.QuoteMeta(meth)
				}
				if typ != "" {
					hm.Path = &HTTPPathMatch{Type: &typ, Value: &val}
				}
			}
			hr.Matches = append(hr.Matches, hm)
		}
		out.Rules = append(out.Rules, hr)
	}
	return out
}

func orAny(s, any string) string {
	if s == "" {
		return any
	}
	return s
}

// TLSRouteSpec is a TLSRoute spec (v1, v1alpha3, v1alpha2): routes TLS
// connections by SNI (hostnames) without terminating them.
type TLSRouteSpec struct {
	ParentRefs []ParentReference `json:"parentRefs,omitempty"`
	Hostnames  []string          `json:"hostnames,omitempty"`
	Rules      []L4RouteRule     `json:"rules,omitempty"`
}

// TCPRouteSpec is a TCPRoute spec (v1alpha2): routes TCP connections (or
// the plaintext of a TLS listener in mode Terminate).
type TCPRouteSpec struct {
	ParentRefs []ParentReference `json:"parentRefs,omitempty"`
	Rules      []L4RouteRule     `json:"rules,omitempty"`
}

// L4RouteRule is one TLSRoute or TCPRoute rule: weighted backends.
type L4RouteRule struct {
	Name        *string      `json:"name,omitempty"`
	BackendRefs []BackendRef `json:"backendRefs,omitempty"`
}

// BackendRef is a weighted backend without filters.
type BackendRef struct {
	BackendObjectReference
	Weight *int32 `json:"weight,omitempty"`
}

// HTTP returns the TLSRoute as an HTTPRouteSpec with the same parents,
// hostnames and backendRefs (no matches), for the attachment and status
// code shared by every route kind.
func (s TLSRouteSpec) HTTP() HTTPRouteSpec {
	return HTTPRouteSpec{ParentRefs: s.ParentRefs, Hostnames: s.Hostnames, Rules: l4Rules(s.Rules)}
}

// HTTP returns the TCPRoute as an HTTPRouteSpec (see TLSRouteSpec.HTTP).
func (s TCPRouteSpec) HTTP() HTTPRouteSpec {
	return HTTPRouteSpec{ParentRefs: s.ParentRefs, Rules: l4Rules(s.Rules)}
}

func l4Rules(rs []L4RouteRule) []HTTPRouteRule {
	var out []HTTPRouteRule
	for _, r := range rs {
		hr := HTTPRouteRule{Name: r.Name}
		for _, b := range r.BackendRefs {
			hr.BackendRefs = append(hr.BackendRefs, HTTPBackendRef{BackendObjectReference: b.BackendObjectReference, Weight: b.Weight})
		}
		out = append(out, hr)
	}
	return out
}

// ReferenceGrantSpec lets objects in other namespaces refer to objects in
// the grant's namespace.
type ReferenceGrantSpec struct {
	From []ReferenceGrantFrom `json:"from,omitempty"`
	To   []ReferenceGrantTo   `json:"to,omitempty"`
}

// ReferenceGrantFrom names the referring kind and namespace.
type ReferenceGrantFrom struct {
	Group     string `json:"group"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
}

// ReferenceGrantTo names the kind (and optionally the object) that may be
// referred to.
type ReferenceGrantTo struct {
	Group string  `json:"group"`
	Kind  string  `json:"kind"`
	Name  *string `json:"name,omitempty"`
}

// NamedGrant is a ReferenceGrant with its namespace.
type NamedGrant struct {
	Namespace string
	Spec      ReferenceGrantSpec
}

// Granted reports whether one of grants (in the target's namespace)
// lets an object of fromGroup/fromKind in namespace fromNS refer to the
// object toGroup/toKind/toName in namespace toNS. References within a
// namespace need no grant.
func Granted(grants []NamedGrant, fromGroup, fromKind, fromNS, toGroup, toKind, toName, toNS string) bool {
	if fromNS == toNS {
		return true
	}
	for _, g := range grants {
		if g.Namespace != toNS {
			continue
		}
		from := false
		for _, f := range g.Spec.From {
			from = from || (f.Group == fromGroup && f.Kind == fromKind && f.Namespace == fromNS)
		}
		if !from {
			continue
		}
		for _, t := range g.Spec.To {
			if t.Group == toGroup && t.Kind == toKind && (t.Name == nil || *t.Name == toName) {
				return true
			}
		}
	}
	return false
}

// SecretGranted reports whether a Gateway in namespace gwNS may use the
// Secret name in namespace secretNS as a certificateRef: the same
// namespace, or a ReferenceGrant in secretNS from Gateways of gwNS to
// Secrets (all, or that one).
func SecretGranted(grants []NamedGrant, gwNS, name, secretNS string) bool {
	return Granted(grants, Group, "Gateway", gwNS, "", "Secret", name, secretNS)
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// Deref returns *p, or def when p is nil.
func Deref[T any](p *T, def T) T { return deref(p, def) }

// Spec converts a decoded spec message (from NewGatewaySpec and friends)
// into out, one of *GatewayClassSpec, *GatewaySpec or *HTTPRouteSpec.
func Spec(m proto.Message, out any) error {
	if m == nil {
		return nil
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Errorf("gatewayapi: encode spec: %w", err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("gatewayapi: decode spec: %w", err)
	}
	return nil
}
