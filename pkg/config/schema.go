// Package config is Weft's model of Istio configuration: resources that carry
// Kubernetes-style metadata and an istio.io/api spec, a table of every kind and
// version Istio serves, and (in sibling files) decoding with line numbers and
// validation with field paths.
package config

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	securityv1beta1 "istio.io/api/security/v1beta1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/weftmesh/weft/pkg/config/gatewayapi"
)

// Schema describes one Istio kind: its API group, the versions Istio serves it
// at, its names, and how to make an empty spec message for it.
type Schema struct {
	Group      string
	Kind       string
	Plural     string   // lower-case plural, e.g. "virtualservices"
	ShortNames []string // kubectl short names, e.g. "vs"
	// Versions lists the served versions, storage version first.
	Versions []string
	// NewSpec returns an empty spec message. Every served version of a kind
	// shares one Go type in istio.io/api (the v1 and v1beta1 packages alias
	// v1alpha3), so one constructor serves them all.
	NewSpec func() proto.Message
	// APIKind is the kind written in YAML when it differs from Kind: the
	// Gateway API's Gateway is "Gateway" on the wire but KindKubernetesGateway
	// inside weft (as in Istio), so it never collides with Istio's Gateway
	// in store keys. Empty means Kind.
	APIKind string
	// ClusterScoped marks a kind Kubernetes stores without a namespace
	// (GatewayClass). Weft's own stores keep it in the default namespace;
	// the Kubernetes CRD store does not watch it.
	ClusterScoped bool
}

// WireKind is the kind as written in YAML and sent to Kubernetes.
func (s *Schema) WireKind() string {
	if s.APIKind != "" {
		return s.APIKind
	}
	return s.Kind
}

// DisplayKind names the kind for people: the wire kind, qualified with its
// group when the wire kind alone is ambiguous ("Gateway.gateway.networking.k8s.io").
func (s *Schema) DisplayKind() string {
	if s.APIKind != "" {
		return s.APIKind + "." + s.Group
	}
	return s.Kind
}

// GroupVersion returns "group/version" for the schema's storage version.
func (s *Schema) GroupVersion() string { return s.Group + "/" + s.Versions[0] }

// ServesVersion reports whether v is one of the versions the kind is served at.
func (s *Schema) ServesVersion(v string) bool {
	for _, x := range s.Versions {
		if x == v {
			return true
		}
	}
	return false
}

// APIVersions returns every "group/version" the kind is served at.
func (s *Schema) APIVersions() []string {
	out := make([]string, len(s.Versions))
	for i, v := range s.Versions {
		out[i] = s.Group + "/" + v
	}
	return out
}

const (
	groupNetworking = "networking.istio.io"
	groupSecurity   = "security.istio.io"
	groupTelemetry  = "telemetry.istio.io"
	groupExtensions = "extensions.istio.io"
	// GroupGatewayAPI is the Kubernetes Gateway API group.
	GroupGatewayAPI = gatewayapi.Group
)

// Kind names, as users write them in YAML.
const (
	KindVirtualService        = "VirtualService"
	KindDestinationRule       = "DestinationRule"
	KindGateway               = "Gateway"
	KindServiceEntry          = "ServiceEntry"
	KindSidecar               = "Sidecar"
	KindWorkloadEntry         = "WorkloadEntry"
	KindWorkloadGroup         = "WorkloadGroup"
	KindEnvoyFilter           = "EnvoyFilter"
	KindProxyConfig           = "ProxyConfig"
	KindPeerAuthentication    = "PeerAuthentication"
	KindRequestAuthentication = "RequestAuthentication"
	KindAuthorizationPolicy   = "AuthorizationPolicy"
	KindTelemetry             = "Telemetry"
	KindWasmPlugin            = "WasmPlugin"

	// Gateway API kinds (group gateway.networking.k8s.io). The Gateway
	// API's Gateway is written "Gateway" in YAML; weft keys it as
	// KindKubernetesGateway, as Istio does.
	KindGatewayClass      = "GatewayClass"
	KindKubernetesGateway = "KubernetesGateway"
	KindHTTPRoute         = "HTTPRoute"
	KindReferenceGrant    = "ReferenceGrant"
	KindGRPCRoute         = "GRPCRoute"
	KindTLSRoute          = "TLSRoute"
	KindTCPRoute          = "TCPRoute"
)

// schemas is the immutable table of kinds (versions as in istio.io/api's
// +cue-gen markers). It is read-only after package initialisation.
var schemas = []Schema{
	{Group: groupNetworking, Kind: KindVirtualService, Plural: "virtualservices", ShortNames: []string{"vs"}, Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.VirtualService{} }},
	{Group: groupNetworking, Kind: KindDestinationRule, Plural: "destinationrules", ShortNames: []string{"dr"}, Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.DestinationRule{} }},
	{Group: groupNetworking, Kind: KindGateway, Plural: "gateways", ShortNames: []string{"gw"}, Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.Gateway{} }},
	{Group: groupNetworking, Kind: KindServiceEntry, Plural: "serviceentries", ShortNames: []string{"se"}, Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.ServiceEntry{} }},
	{Group: groupNetworking, Kind: KindSidecar, Plural: "sidecars", Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.Sidecar{} }},
	{Group: groupNetworking, Kind: KindWorkloadEntry, Plural: "workloadentries", ShortNames: []string{"we"}, Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.WorkloadEntry{} }},
	{Group: groupNetworking, Kind: KindWorkloadGroup, Plural: "workloadgroups", ShortNames: []string{"wg"}, Versions: []string{"v1", "v1beta1", "v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.WorkloadGroup{} }},
	{Group: groupNetworking, Kind: KindEnvoyFilter, Plural: "envoyfilters", Versions: []string{"v1alpha3"}, NewSpec: func() proto.Message { return &networkingv1alpha3.EnvoyFilter{} }},
	{Group: groupNetworking, Kind: KindProxyConfig, Plural: "proxyconfigs", Versions: []string{"v1beta1"}, NewSpec: func() proto.Message { return &networkingv1beta1.ProxyConfig{} }},
	{Group: groupSecurity, Kind: KindPeerAuthentication, Plural: "peerauthentications", ShortNames: []string{"pa"}, Versions: []string{"v1", "v1beta1"}, NewSpec: func() proto.Message { return &securityv1beta1.PeerAuthentication{} }},
	{Group: groupSecurity, Kind: KindRequestAuthentication, Plural: "requestauthentications", ShortNames: []string{"ra"}, Versions: []string{"v1", "v1beta1"}, NewSpec: func() proto.Message { return &securityv1beta1.RequestAuthentication{} }},
	{Group: groupSecurity, Kind: KindAuthorizationPolicy, Plural: "authorizationpolicies", ShortNames: []string{"ap"}, Versions: []string{"v1", "v1beta1"}, NewSpec: func() proto.Message { return &securityv1beta1.AuthorizationPolicy{} }},
	{Group: groupTelemetry, Kind: KindTelemetry, Plural: "telemetries", ShortNames: []string{"telemetry"}, Versions: []string{"v1", "v1alpha1"}, NewSpec: func() proto.Message { return &telemetryv1alpha1.Telemetry{} }},
	{Group: groupExtensions, Kind: KindWasmPlugin, Plural: "wasmplugins", Versions: []string{"v1alpha1"}, NewSpec: func() proto.Message { return &extensionsv1alpha1.WasmPlugin{} }},
	{Group: GroupGatewayAPI, Kind: KindGatewayClass, Plural: "gatewayclasses", ShortNames: []string{"gc"}, Versions: []string{"v1", "v1beta1"}, NewSpec: gatewayapi.NewGatewayClassSpec, ClusterScoped: true},
	{Group: GroupGatewayAPI, Kind: KindKubernetesGateway, APIKind: "Gateway", Plural: "gateways", ShortNames: []string{"gtw"}, Versions: []string{"v1", "v1beta1"}, NewSpec: gatewayapi.NewGatewaySpec},
	{Group: GroupGatewayAPI, Kind: KindHTTPRoute, Plural: "httproutes", Versions: []string{"v1", "v1beta1"}, NewSpec: gatewayapi.NewHTTPRouteSpec},
	{Group: GroupGatewayAPI, Kind: KindGRPCRoute, Plural: "grpcroutes", Versions: []string{"v1"}, NewSpec: gatewayapi.NewGRPCRouteSpec},
	{Group: GroupGatewayAPI, Kind: KindTLSRoute, Plural: "tlsroutes", Versions: []string{"v1", "v1alpha3", "v1alpha2"}, NewSpec: gatewayapi.NewTLSRouteSpec},
	{Group: GroupGatewayAPI, Kind: KindTCPRoute, Plural: "tcproutes", Versions: []string{"v1alpha2"}, NewSpec: gatewayapi.NewTCPRouteSpec},
	{Group: GroupGatewayAPI, Kind: KindReferenceGrant, Plural: "referencegrants", ShortNames: []string{"refgrant"}, Versions: []string{"v1beta1"}, NewSpec: gatewayapi.NewReferenceGrantSpec},
}

// Schemas returns every kind Weft understands, in a stable order.
func Schemas() []Schema { return append([]Schema(nil), schemas...) }

// SchemaForKind returns the schema of a kind given by its exact Kind name.
func SchemaForKind(kind string) (*Schema, bool) {
	for i := range schemas {
		if schemas[i].Kind == kind {
			return &schemas[i], true
		}
	}
	return nil, false
}

// SchemaFor returns the schema of a kind as written in YAML (wire kind)
// in API group group. With an unknown group it returns the first schema of
// that wire kind (Istio's, for "Gateway"), so callers can name the versions
// it is served at.
func SchemaFor(group, kind string) (*Schema, bool) {
	var first *Schema
	for i := range schemas {
		s := &schemas[i]
		if s.WireKind() != kind {
			continue
		}
		if s.Group == group {
			return s, true
		}
		if first == nil {
			first = s
		}
	}
	return first, first != nil
}

// ResolveKind maps what a user typed on the command line (Kind, lower-case
// kind, plural, or short name, case-insensitive; "plural.group" as kubectl
// takes it, e.g. gateways.gateway.networking.k8s.io) to a schema. A bare
// "gateway" is Istio's; the Gateway API's is "kubernetesgateway", "gtw" or
// "gateways.gateway.networking.k8s.io".
func ResolveKind(name string) (*Schema, error) {
	n := strings.ToLower(name)
	for i := range schemas {
		s := &schemas[i]
		if n == s.Plural+"."+s.Group || n == strings.ToLower(s.WireKind())+"."+s.Group {
			return s, nil
		}
	}
	for i := range schemas {
		s := &schemas[i]
		if n == strings.ToLower(s.Kind) || n == s.Plural || n == strings.ToLower(s.Kind)+"s" {
			return s, nil
		}
		for _, sn := range s.ShortNames {
			if n == sn {
				return s, nil
			}
		}
	}
	names := make([]string, 0, len(schemas))
	for _, s := range schemas {
		names = append(names, strings.ToLower(s.Kind))
	}
	sort.Strings(names)
	return nil, fmt.Errorf("unknown resource type %q (known: %s)", name, strings.Join(names, ", "))
}
