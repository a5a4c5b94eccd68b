package authz

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Names Istio uses to tie the CUSTOM shadow rules to the ext_authz filter:
// the RBAC filter's shadow_rules_stat_prefix makes Envoy store the matched
// shadow policy under "istio_ext_authz_shadow_effective_policy_id" in the
// envoy.filters.http.rbac dynamic metadata, and the ext_authz filter runs
// only when that value starts with "istio-ext-authz".
const (
	ExtAuthzFilterName  = "envoy.filters.http.ext_authz"
	ExtAuthzPrefix      = "istio-ext-authz"
	ExtAuthzStatPrefix  = "istio_ext_authz_"
	ShadowEffectiveKey  = "shadow_effective_policy_id"
	ExtAuthzMetadataKey = ExtAuthzStatPrefix + ShadowEffectiveKey
)

// HTTPFilters returns the HCM http filters in chain order: audit RBAC,
// CUSTOM RBAC and ext_authz, DENY RBAC, ALLOW RBAC.
func (p *Policies) HTTPFilters() []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	add := func(name string, m proto.Message) {
		a, err := anypb.New(m)
		if err != nil { // only for unregistered types, never for these
			panic(fmt.Sprintf("authz: %s: %v", name, err))
		}
		out = append(out, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	}
	if p.Audit != nil {
		add(FilterName, p.Audit)
	}
	if p.Custom != nil {
		add(FilterName, p.Custom)
	}
	if p.ExtAuthz != nil {
		add(ExtAuthzFilterName, p.ExtAuthz)
	}
	if p.Deny != nil {
		add(FilterName, p.Deny)
	}
	if p.Allow != nil {
		add(FilterName, p.Allow)
	}
	return out
}

// customFilters builds Custom and ExtAuthz from the CUSTOM policies' rules
// (named istio-ext-authz-ns[..]-policy[..]-rule[..]). A proxy can use one
// provider: several, an unknown one or an invalid one turn the rules into
// enforced DENY rules, as Istio does.
func (out *Policies) customFilters(rules map[string]*rbacv3.Policy, providers []string, o Options, tcp bool) {
	rb := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: rules}
	out.Provider = strings.Join(providers, ",")
	p, err := providerFor(providers, o)
	if err != nil {
		what := "requests"
		if tcp {
			what = "connections"
		}
		out.Warnings = append(out.Warnings, fmt.Sprintf("CUSTOM AuthorizationPolicy: %v; %s its rules match are denied", err, what))
		out.Custom = &rbachttp.RBAC{Rules: rb}
		return
	}
	if tcp && !p.GRPC { // as Istio: only gRPC providers apply to TCP
		out.Warnings = append(out.Warnings, fmt.Sprintf("CUSTOM AuthorizationPolicy: provider %q is HTTP; not applied to TCP traffic (only envoyExtAuthzGrpc is)", p.Name))
		return
	}
	out.Custom = &rbachttp.RBAC{ShadowRules: rb, ShadowRulesStatPrefix: ExtAuthzStatPrefix}
	out.ExtAuthz = ExtAuthzConfig(p)
	out.extAuthzProvider = p
}

// ErrCustomProvider wraps every reason a CUSTOM provider cannot be used.
var ErrCustomProvider = errors.New("CUSTOM provider")

func providerFor(providers []string, o Options) (*meshconfig.ExtAuthzProvider, error) {
	if len(providers) > 1 {
		return nil, fmt.Errorf("%w: only one provider per workload, found %s", ErrCustomProvider, strings.Join(providers, ", "))
	}
	p, err := meshconfig.ExtAuthz(o.Mesh, providers[0])
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", ErrCustomProvider, providers[0], err)
	}
	host := p.Host
	if o.LookupService != nil {
		h, ok := o.LookupService(p.Host, p.Namespace)
		if !ok {
			return nil, fmt.Errorf("%w %q: service %q not found in the registry", ErrCustomProvider, p.Name, p.Host)
		}
		host = h
	}
	p.Host = host
	return p, nil
}

// ExtAuthzConfig is the ext_authz filter Istio generates for provider p:
// checks go through the cluster outbound|PORT||HOST, only for requests the
// CUSTOM shadow rules marked.
func ExtAuthzConfig(p *meshconfig.ExtAuthzProvider) *extauthzv3.ExtAuthz {
	ea := &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    p.FailOpen,
		FilterEnabledMetadata: &matcherv3.MetadataMatcher{
			Filter: FilterName,
			Path:   []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: ExtAuthzMetadataKey}}},
			Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: ExtAuthzPrefix}}}},
		},
	}
	if p.StatusOnError != 0 {
		ea.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode(p.StatusOnError)}
	}
	if b := p.Body; b != nil {
		ea.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: b.GetMaxRequestBytes(), AllowPartialMessage: b.GetAllowPartialMessage(), PackAsBytes: b.GetPackAsBytes()}
	}
	timeout := durationpb.New(p.Timeout)
	if p.GRPC {
		ea.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: p.Cluster(), Authority: p.Host}},
			Timeout:         timeout,
		}}
		ea.IncludePeerCertificate = true
		return ea
	}
	svc := &extauthzv3.HttpService{
		PathPrefix: p.PathPrefix,
		ServerUri: &corev3.HttpUri{Uri: "http://" + p.Host, Timeout: timeout,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: p.Cluster()}},
	}
	if len(p.AdditionalHeaders) > 0 {
		keys := make([]string, 0, len(p.AdditionalHeaders))
		for k := range p.AdditionalHeaders {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		req := &extauthzv3.AuthorizationRequest{}
		for _, k := range keys {
			req.HeadersToAdd = append(req.HeadersToAdd, &corev3.HeaderValue{Key: k, Value: p.AdditionalHeaders[k]})
		}
		svc.AuthorizationRequest = req
	}
	if len(p.UpstreamOnAllow)+len(p.DownstreamOnDeny)+len(p.DownstreamOnAllow) > 0 {
		svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{
			AllowedUpstreamHeaders:        headerPatterns(p.UpstreamOnAllow),
			AllowedClientHeaders:          headerPatterns(p.DownstreamOnDeny),
			AllowedClientHeadersOnSuccess: headerPatterns(p.DownstreamOnAllow),
		}
	}
	ea.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: svc}
	ea.AllowedHeaders = headerPatterns(p.RequestHeaders)
	return ea
}

// headerPatterns maps Istio header names ("x-a", "x-*" prefix, "*-id"
// suffix) to case-insensitive matchers; nil for none.
func headerPatterns(hs []string) *matcherv3.ListStringMatcher {
	if len(hs) == 0 {
		return nil
	}
	l := &matcherv3.ListStringMatcher{}
	for _, h := range hs {
		m := &matcherv3.StringMatcher{IgnoreCase: true}
		switch {
		case h == "*":
			m.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}
		case strings.HasSuffix(h, "*"):
			m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: strings.TrimSuffix(h, "*")}
		case strings.HasPrefix(h, "*"):
			m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: strings.TrimPrefix(h, "*")}
		default:
			m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: h}
		}
		l.Patterns = append(l.Patterns, m)
	}
	return l
}
