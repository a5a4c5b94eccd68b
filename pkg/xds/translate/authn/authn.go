// Package authn translates Istio RequestAuthentication resources into the
// Envoy JWT authentication HTTP filter config
// (envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication) for one
// proxy, the way Istio does: one provider per jwtRule, named origins-N,
// and one rule for every path requiring any provider or, when the token is
// missing, nothing (allow_missing). So a request with an invalid token is
// rejected (401) while a request without a token passes with no request
// principal; AuthorizationPolicies then decide. Translate is a pure
// function.
package authn

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	emptypb "google.golang.org/protobuf/types/known/emptypb"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// FilterName is the HCM http filter name of the JWT authentication filter.
const FilterName = "envoy.filters.http.jwt_authn"

// DefaultRootNamespace is the mesh root namespace when Translate gets "";
// "istio-system" is always a root namespace too.
const DefaultRootNamespace = "weft-system"

// Defaults Istio uses for remote JWKS.
const (
	DefaultJWKSTimeout       = 5 * time.Second
	DefaultJWKSCacheDuration = 5 * time.Minute
)

// EmptyJWKS replaces an inline jwks that is not a JSON key set, so that
// every token fails verification (as Istio does with a bad jwks).
const EmptyJWKS = `{"keys":[]}`

// defaultSpaceDelimitedClaims are always split on spaces (Istio).
var defaultSpaceDelimitedClaims = []string{"scope", "permission"}

// ProviderName is the provider name of the idx-th jwtRule (over all
// selected RequestAuthentications, in order).
func ProviderName(idx int) string { return "origins-" + strconv.Itoa(idx) }

// Translate selects the RequestAuthentications that apply to proxy (those
// in a root namespace, rootNamespace (default weft-system) or
// istio-system, and in the proxy's namespace, whose selector matches its
// labels; root namespace first, then by name) and builds the jwt_authn
// config. It returns nil when no jwtRule applies. Resources of other kinds
// are ignored; policies with targetRefs (gateways, waypoints) are skipped.
//
// jwksURI resolves the jwks_uri of a rule that names only an issuer (OpenID
// discovery, see pkg/oidc); nil, or an issuer it has not resolved, leaves
// the provider without keys, so its tokens are rejected.
func Translate(ras []*config.Resource, proxy *model.Proxy, rootNamespace string, jwksURI func(issuer string) (string, bool)) (*jwtauthnv3.JwtAuthentication, error) {
	if proxy == nil {
		return nil, fmt.Errorf("authn: nil proxy")
	}
	if rootNamespace == "" {
		rootNamespace = DefaultRootNamespace
	}
	isRoot := func(ns string) bool { return ns == rootNamespace || ns == "istio-system" }
	type sel struct {
		root bool
		r    *config.Resource
		ra   *securityv1beta1.RequestAuthentication
	}
	var sels []sel
	for _, r := range ras {
		if r == nil || r.Kind != config.KindRequestAuthentication {
			continue
		}
		ra, ok := r.Spec.(*securityv1beta1.RequestAuthentication)
		if !ok {
			return nil, fmt.Errorf("authn: %s: spec is %T", r.Key(), r.Spec)
		}
		ns := r.Meta.Namespace
		if ns == "" {
			ns = config.DefaultNamespace
		}
		if !isRoot(ns) && ns != proxy.Namespace {
			continue
		}
		if ra.GetTargetRef() != nil || len(ra.GetTargetRefs()) > 0 {
			continue
		}
		if !selects(ra.GetSelector().GetMatchLabels(), proxy.Labels) {
			continue
		}
		sels = append(sels, sel{root: isRoot(ns), r: r, ra: ra})
	}
	sort.SliceStable(sels, func(i, j int) bool {
		a, b := sels[i], sels[j]
		if a.root != b.root {
			return a.root
		}
		if a.r.Meta.Namespace != b.r.Meta.Namespace {
			return a.r.Meta.Namespace < b.r.Meta.Namespace
		}
		return a.r.Meta.Name < b.r.Meta.Name
	})
	out := &jwtauthnv3.JwtAuthentication{Providers: map[string]*jwtauthnv3.JwtProvider{}, BypassCorsPreflight: true}
	var reqs []*jwtauthnv3.JwtRequirement
	allRequired := true
	for _, s := range sels {
		for _, rule := range s.ra.GetJwtRules() {
			name := ProviderName(len(out.Providers))
			out.Providers[name] = provider(rule, jwksURI)
			reqs = append(reqs, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: name}})
			if rule.GetPresence() != securityv1beta1.JWTRule_REQUIRED {
				allRequired = false
			}
		}
	}
	if len(out.Providers) == 0 {
		return nil, nil
	}
	if !allRequired {
		reqs = append(reqs, &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	}
	var req *jwtauthnv3.JwtRequirement
	if len(reqs) == 1 {
		req = reqs[0]
	} else {
		req = &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_RequiresAny{RequiresAny: &jwtauthnv3.JwtRequirementOrList{Requirements: reqs}}}
	}
	out.Rules = []*jwtauthnv3.RequirementRule{{
		Match:           &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: req},
	}}
	return out, nil
}

// provider converts one jwtRule.
func provider(rule *securityv1beta1.JWTRule, jwksURI func(issuer string) (string, bool)) *jwtauthnv3.JwtProvider {
	p := &jwtauthnv3.JwtProvider{
		Issuer:               rule.GetIssuer(),
		Audiences:            append([]string(nil), rule.GetAudiences()...),
		Forward:              rule.GetForwardOriginalToken(),
		ForwardPayloadHeader: rule.GetOutputPayloadToHeader(),
		PayloadInMetadata:    rule.GetIssuer(),
		FromParams:           append([]string(nil), rule.GetFromParams()...),
		FromCookies:          append([]string(nil), rule.GetFromCookies()...),
		NormalizePayloadInMetadata: &jwtauthnv3.JwtProvider_NormalizePayload{
			SpaceDelimitedClaims: mergeClaims(defaultSpaceDelimitedClaims, rule.GetSpaceDelimitedClaims()),
		},
	}
	for _, h := range rule.GetFromHeaders() {
		p.FromHeaders = append(p.FromHeaders, &jwtauthnv3.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
	}
	for _, c := range rule.GetOutputClaimToHeaders() {
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtauthnv3.JwtClaimToHeader{HeaderName: c.GetHeader(), ClaimName: c.GetClaim()})
	}
	switch {
	case rule.GetJwks() != "":
		jwks := rule.GetJwks()
		if !validJWKS(jwks) {
			jwks = EmptyJWKS
		}
		p.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: jwks}}}
	case rule.GetJwksUri() != "":
		p.JwksSourceSpecifier = remoteJWKS(rule, rule.GetJwksUri())
	default:
		// Istio resolves the issuer's OpenID discovery document; so does
		// the control plane (jwksURI). Until it has, the provider has no
		// keys and every token for it fails.
		if jwksURI != nil && rule.GetIssuer() != "" {
			if uri, ok := jwksURI(rule.GetIssuer()); ok {
				p.JwksSourceSpecifier = remoteJWKS(rule, uri)
				return p
			}
		}
		p.JwksSourceSpecifier = &jwtauthnv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: EmptyJWKS}}}
	}
	return p
}

// remoteJWKS fetches the keys from uri.
func remoteJWKS(rule *securityv1beta1.JWTRule, uri string) *jwtauthnv3.JwtProvider_RemoteJwks {
	timeout := DefaultJWKSTimeout
	if t := rule.GetTimeout(); t != nil && t.AsDuration() > 0 {
		timeout = t.AsDuration()
	}
	return &jwtauthnv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtauthnv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{
			Uri:              uri,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: jwksCluster(uri)},
			Timeout:          durationpb.New(timeout),
		},
		CacheDuration: durationpb.New(DefaultJWKSCacheDuration),
	}}
}

// jwksCluster names the outbound cluster of a jwks URI as Istio does:
// outbound|PORT||HOST.
func jwksCluster(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.Host == "" {
		return "outbound|80||" + uri
	}
	host, port := u.Host, ""
	if h, p, err := net.SplitHostPort(u.Host); err == nil {
		host, port = h, p
	}
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return "outbound|" + port + "||" + host
}

// validJWKS reports whether s is a JSON object with a "keys" array.
func validJWKS(s string) bool {
	var v struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return false
	}
	return v.Keys != nil
}

func mergeClaims(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range append(append([]string(nil), a...), b...) {
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
