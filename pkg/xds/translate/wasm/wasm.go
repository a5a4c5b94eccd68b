// Package wasm translates Istio WasmPlugin resources and EnvoyFilter
// HTTP_FILTER patches into HTTP connection manager http_filters carrying
// envoy.filters.http.wasm (envoy.extensions.filters.http.wasm.v3.Wasm),
// which the weft sidecar executes with pkg/proxy/filter/wasm. It is pure:
// no I/O, no store access.
package wasm

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// Names.
const (
	FilterName     = "envoy.filters.http.wasm"
	RouterName     = "envoy.filters.http.router"
	WasmTypeURL    = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
	legacyTypeURL  = "type.googleapis.com/istio.wasm.v1.WASM"
	typedStructURL = "type.googleapis.com/udpa.type.v1.TypedStruct"
	xdsTypedStruct = "type.googleapis.com/xds.type.v3.TypedStruct"
	// RootNamespace holds mesh-wide WasmPlugins and EnvoyFilters.
	RootNamespace = "istio-system"
	// PullPolicyEnv and ResourceVersionEnv are the VM environment of
	// oci:// modules (the names Istio's agent reads; the proxy side is
	// pkg/proxy/filter/wasm/oci.go).
	PullPolicyEnv      = "ISTIO_META_WASM_IMAGE_PULL_POLICY"
	ResourceVersionEnv = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"
)

// Direction is the kind of HCM being built.
type Direction int

// Directions.
const (
	Inbound  Direction = iota // sidecar virtualInbound (SIDECAR_INBOUND, mode SERVER)
	Outbound                  // sidecar outbound listeners (SIDECAR_OUTBOUND, mode CLIENT)
	Gateway                   // gateway listeners (GATEWAY)
)

// Translate returns the http filters that WasmPlugins and EnvoyFilter
// HTTP_FILTER patches add to the proxy's inbound HCM, in order, to be
// inserted before the router. Resources that do not apply to proxy are
// skipped; a resource that cannot be translated is reported in the joined
// error while the others are still returned.
func Translate(plugins []*config.Resource, envoyFilters []*config.Resource, proxy *model.Proxy) ([]*hcmv3.HttpFilter, error) {
	chain, err := Apply([]*hcmv3.HttpFilter{{Name: RouterName}}, plugins, envoyFilters, proxy, Inbound, "")
	return slices.DeleteFunc(chain, func(f *hcmv3.HttpFilter) bool { return f.GetName() == RouterName }), err
}

// Apply returns chain (an HCM's http_filters, ending with the router) with
// the WasmPlugins placed by phase (AUTHN before jwt_authn, AUTHZ before
// rbac, STATS before istio.stats, unspecified before the router; higher
// priority first within a phase) and then the EnvoyFilter patches applied.
// chain is not modified. Resources in rootNamespace (default
// RootNamespace) apply to every proxy.
func Apply(chain []*hcmv3.HttpFilter, plugins []*config.Resource, envoyFilters []*config.Resource, proxy *model.Proxy, dir Direction, rootNamespace string) ([]*hcmv3.HttpFilter, error) {
	if rootNamespace == "" {
		rootNamespace = RootNamespace
	}
	out := slices.Clone(chain)
	var errs []error
	type wp struct {
		r    *config.Resource
		spec *extensionsv1alpha1.WasmPlugin
	}
	var wps []wp
	for _, r := range plugins {
		s, ok := r.Spec.(*extensionsv1alpha1.WasmPlugin)
		if !ok || !selects(r, rootNamespace, s.GetSelector().GetMatchLabels(), proxy) || !pluginApplies(s, dir) {
			continue
		}
		if s.GetSelector() == nil && len(s.GetTargetRefs())+btoi(s.GetTargetRef() != nil) > 0 && dir != Gateway {
			continue // targetRefs select gateways
		}
		wps = append(wps, wp{r, s})
	}
	// Each plugin goes right before its phase's anchor, in sorted order:
	// phase, then priority descending, then namespace/name.
	slices.SortStableFunc(wps, func(a, b wp) int {
		if c := cmp.Compare(phaseRank(a.spec.GetPhase()), phaseRank(b.spec.GetPhase())); c != 0 {
			return c
		}
		if c := cmp.Compare(b.spec.GetPriority().GetValue(), a.spec.GetPriority().GetValue()); c != 0 {
			return c
		}
		return cmp.Compare(a.r.Meta.Namespace+"/"+a.r.Meta.Name, b.r.Meta.Namespace+"/"+b.r.Meta.Name)
	})
	for _, w := range wps {
		f, err := pluginFilter(w.r, w.spec)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		at := anchor(out, w.spec.GetPhase())
		out = slices.Insert(out, at, f)
	}
	efs := slices.Clone(envoyFilters)
	slices.SortStableFunc(efs, func(a, b *config.Resource) int {
		ra, rb := btoi(a.Meta.Namespace != rootNamespace), btoi(b.Meta.Namespace != rootNamespace)
		if c := cmp.Compare(ra, rb); c != 0 {
			return c
		}
		if c := cmp.Compare(efPriority(a), efPriority(b)); c != 0 {
			return c
		}
		if c := a.Meta.CreationTimestamp.Compare(b.Meta.CreationTimestamp); c != 0 {
			return c
		}
		return cmp.Compare(a.Meta.Namespace+"/"+a.Meta.Name, b.Meta.Namespace+"/"+b.Meta.Name)
	})
	for _, r := range efs {
		s, ok := r.Spec.(*networkingv1alpha3.EnvoyFilter)
		if !ok || !selects(r, rootNamespace, s.GetWorkloadSelector().GetLabels(), proxy) {
			continue
		}
		for i, p := range s.GetConfigPatches() {
			var err error
			out, err = applyPatch(out, p, dir)
			if err != nil {
				errs = append(errs, fmt.Errorf("EnvoyFilter %s/%s: configPatches[%d]: %w", r.Meta.Namespace, r.Meta.Name, i, err))
			}
		}
	}
	return out, errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func efPriority(r *config.Resource) int32 {
	if s, ok := r.Spec.(*networkingv1alpha3.EnvoyFilter); ok {
		return s.GetPriority()
	}
	return 0
}

// selects reports whether a resource in r's namespace with these labels
// applies to proxy (root namespace resources apply mesh-wide).
func selects(r *config.Resource, root string, labels map[string]string, proxy *model.Proxy) bool {
	ns := r.Meta.Namespace
	if ns == "" {
		ns = config.DefaultNamespace
	}
	if ns != root && ns != proxy.Namespace {
		return false
	}
	for k, v := range labels {
		if pv, ok := proxy.Labels[k]; !ok || pv != v {
			return false
		}
	}
	return true
}

func pluginApplies(s *extensionsv1alpha1.WasmPlugin, dir Direction) bool {
	if s.GetType() == extensionsv1alpha1.PluginType_NETWORK {
		return false
	}
	if dir == Gateway {
		return true
	}
	if len(s.GetMatch()) == 0 {
		return dir == Inbound
	}
	for _, m := range s.GetMatch() {
		switch m.GetMode() {
		case typev1beta1.WorkloadMode_CLIENT:
			if dir == Outbound {
				return true
			}
		case typev1beta1.WorkloadMode_SERVER, typev1beta1.WorkloadMode_UNDEFINED:
			if dir == Inbound {
				return true
			}
		case typev1beta1.WorkloadMode_CLIENT_AND_SERVER:
			return true
		}
	}
	return false
}

func phaseRank(p extensionsv1alpha1.PluginPhase) int {
	switch p {
	case extensionsv1alpha1.PluginPhase_AUTHN:
		return 0
	case extensionsv1alpha1.PluginPhase_AUTHZ:
		return 1
	case extensionsv1alpha1.PluginPhase_STATS:
		return 2
	}
	return 3
}

// anchor is the index a phase's plugins are inserted at.
func anchor(chain []*hcmv3.HttpFilter, p extensionsv1alpha1.PluginPhase) int {
	var names []string
	switch p {
	case extensionsv1alpha1.PluginPhase_AUTHN:
		names = []string{"envoy.filters.http.jwt_authn", "istio_authn", "envoy.filters.http.rbac", "istio.stats"}
	case extensionsv1alpha1.PluginPhase_AUTHZ:
		names = []string{"envoy.filters.http.rbac", "istio.stats"}
	case extensionsv1alpha1.PluginPhase_STATS:
		names = []string{"istio.stats"}
	}
	names = append(names, RouterName)
	for i, f := range chain {
		if slices.Contains(names, f.GetName()) {
			return i
		}
	}
	return len(chain)
}

// pluginFilter builds the wasm http filter for a WasmPlugin.
func pluginFilter(r *config.Resource, s *extensionsv1alpha1.WasmPlugin) (*hcmv3.HttpFilter, error) {
	name := r.Meta.Namespace + "." + r.Meta.Name
	where := fmt.Sprintf("WasmPlugin %s/%s", r.Meta.Namespace, r.Meta.Name)
	raw := s.GetUrl()
	if !strings.Contains(raw, "://") && raw != "" {
		raw = "oci://" + raw // Istio reads a URL without scheme as an OCI image
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: url: %w", where, err)
	}
	var code *corev3.AsyncDataSource
	var env map[string]string
	switch u.Scheme {
	case "file":
		code = &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{Local: &corev3.DataSource{
			Specifier: &corev3.DataSource_Filename{Filename: u.Path}}}}
	case "http", "https":
		if s.GetSha256() == "" {
			return nil, fmt.Errorf("%s: sha256 is required for %s urls", where, u.Scheme)
		}
		code = &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{
			HttpUri: &corev3.HttpUri{Uri: s.GetUrl(), Timeout: durationpb.New(30e9),
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|" + u.Port() + "||" + u.Hostname()}},
			Sha256: s.GetSha256(),
		}}}
	case "oci":
		// The proxy pulls the image (pkg/proxy/filter/wasm/oci.go); the
		// pull policy and the resource version travel as the VM's
		// environment, under the names Istio's agent reads.
		if s.GetImagePullSecret() != "" {
			return nil, fmt.Errorf("%s: imagePullSecret: pulls with credentials are not supported yet (anonymous registry tokens only)", where)
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		code = &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{
			HttpUri: &corev3.HttpUri{Uri: raw, Timeout: durationpb.New(30e9),
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|" + port + "||" + u.Hostname()}},
			Sha256: s.GetSha256(),
		}}}
		env = map[string]string{ResourceVersionEnv: r.Meta.ResourceVersion}
		if p := s.GetImagePullPolicy(); p != extensionsv1alpha1.PullPolicy_UNSPECIFIED_POLICY {
			env[PullPolicyEnv] = p.String()
		}
	default:
		return nil, fmt.Errorf("%s: url %q: only file://, http(s):// and oci:// modules are supported", where, s.GetUrl())
	}
	pc := &wasmv3.PluginConfig{
		Name:     name,
		RootId:   s.GetPluginName(),
		FailOpen: s.GetFailStrategy() == extensionsv1alpha1.FailStrategy_FAIL_OPEN,
		Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{
			VmId: name, Runtime: "envoy.wasm.runtime.v8", Code: code,
		}},
	}
	if env != nil {
		pc.GetVmConfig().EnvironmentVariables = &wasmv3.EnvironmentVariables{KeyValues: env}
	}
	if c := s.GetPluginConfig(); c != nil {
		b, err := protojson.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("%s: pluginConfig: %w", where, err)
		}
		if pc.Configuration, err = anypb.New(wrapperspb.String(string(b))); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
	}
	return wasmFilter(pc)
}

func wasmFilter(pc *wasmv3.PluginConfig) (*hcmv3.HttpFilter, error) {
	a, err := anypb.New(&wasmhttpv3.Wasm{Config: pc})
	if err != nil {
		return nil, err
	}
	return &hcmv3.HttpFilter{Name: FilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}, nil
}

func applyPatch(chain []*hcmv3.HttpFilter, p *networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch, dir Direction) ([]*hcmv3.HttpFilter, error) {
	if p.GetApplyTo() != networkingv1alpha3.EnvoyFilter_HTTP_FILTER {
		return chain, nil
	}
	m := p.GetMatch()
	switch m.GetContext() {
	case networkingv1alpha3.EnvoyFilter_ANY:
	case networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND:
		if dir != Inbound {
			return chain, nil
		}
	case networkingv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND:
		if dir != Outbound {
			return chain, nil
		}
	case networkingv1alpha3.EnvoyFilter_GATEWAY:
		if dir != Gateway {
			return chain, nil
		}
	}
	fm := m.GetListener().GetFilterChain().GetFilter()
	switch fm.GetName() {
	case "", "envoy.http_connection_manager", "envoy.filters.network.http_connection_manager":
	default:
		return chain, nil
	}
	sub := fm.GetSubFilter().GetName()
	idx := -1
	if sub != "" {
		idx = slices.IndexFunc(chain, func(f *hcmv3.HttpFilter) bool { return f.GetName() == sub })
	}
	op := p.GetPatch().GetOperation()
	var f *hcmv3.HttpFilter
	switch op {
	case networkingv1alpha3.EnvoyFilter_Patch_ADD, networkingv1alpha3.EnvoyFilter_Patch_INSERT_FIRST,
		networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE, networkingv1alpha3.EnvoyFilter_Patch_INSERT_AFTER,
		networkingv1alpha3.EnvoyFilter_Patch_REPLACE:
		var err error
		if f, err = FilterFromValue(p.GetPatch().GetValue()); err != nil {
			return chain, err
		}
	}
	switch op {
	case networkingv1alpha3.EnvoyFilter_Patch_ADD:
		return append(chain, f), nil
	case networkingv1alpha3.EnvoyFilter_Patch_INSERT_FIRST:
		return slices.Insert(chain, 0, f), nil
	case networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE:
		switch {
		case sub == "":
			return slices.Insert(chain, 0, f), nil
		case idx >= 0:
			return slices.Insert(chain, idx, f), nil
		}
	case networkingv1alpha3.EnvoyFilter_Patch_INSERT_AFTER:
		switch {
		case sub == "":
			return append(chain, f), nil
		case idx >= 0:
			return slices.Insert(chain, idx+1, f), nil
		}
	case networkingv1alpha3.EnvoyFilter_Patch_REPLACE:
		if idx >= 0 {
			chain = slices.Clone(chain)
			chain[idx] = f
		}
	case networkingv1alpha3.EnvoyFilter_Patch_REMOVE:
		if idx >= 0 {
			return slices.Delete(slices.Clone(chain), idx, idx+1), nil
		}
	default:
		return chain, fmt.Errorf("operation %s is not supported for HTTP_FILTER", op)
	}
	return chain, nil
}

// FilterFromValue converts an EnvoyFilter patch value to an http filter. Wasm filters
// (Envoy's Wasm type, a TypedStruct of it, or the legacy
// istio.wasm.v1.WASM form with wasm_binary) are normalized to FilterName
// with the original name as the plugin name; other filters are decoded
// with protojson and kept as they are.
func FilterFromValue(v *structpb.Struct) (*hcmv3.HttpFilter, error) {
	if v == nil {
		return nil, errors.New("patch.value is required")
	}
	name := v.GetFields()["name"].GetStringValue()
	if name == "" {
		return nil, errors.New("patch.value.name is required")
	}
	tc := v.GetFields()["typed_config"].GetStructValue()
	if tc == nil {
		tc = v.GetFields()["typedConfig"].GetStructValue()
	}
	typ := tc.GetFields()["@type"].GetStringValue()
	if typ == typedStructURL || typ == xdsTypedStruct {
		inner := tc.GetFields()["type_url"].GetStringValue()
		if inner == "" {
			inner = tc.GetFields()["typeUrl"].GetStringValue()
		}
		val := tc.GetFields()["value"].GetStructValue()
		if val == nil {
			val = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		}
		val = &structpb.Struct{Fields: maps(val.GetFields())}
		val.Fields["@type"] = structpb.NewStringValue(inner)
		tc, typ = val, inner
	}
	switch typ {
	case legacyTypeURL:
		return legacyFilter(name, tc)
	case WasmTypeURL:
		b, err := protojson.Marshal(tc)
		if err != nil {
			return nil, err
		}
		var a anypb.Any
		if err := protojson.Unmarshal(b, &a); err != nil {
			return nil, fmt.Errorf("patch.value.typed_config: %w", err)
		}
		var w wasmhttpv3.Wasm
		if err := a.UnmarshalTo(&w); err != nil {
			return nil, fmt.Errorf("patch.value.typed_config: %w", err)
		}
		pc := w.GetConfig()
		if pc == nil {
			return nil, errors.New("patch.value.typed_config.config is required")
		}
		if pc.GetName() == "" {
			pc.Name = name
		}
		return wasmFilter(pc)
	}
	b, err := protojson.Marshal(v)
	if err != nil {
		return nil, err
	}
	var f hcmv3.HttpFilter
	if err := protojson.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("patch.value: %w", err)
	}
	return &f, nil
}

func maps(m map[string]*structpb.Value) map[string]*structpb.Value {
	out := make(map[string]*structpb.Value, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// legacyFilter converts the istio.wasm.v1.WASM form: wasm_binary
// {inline_bytes (base64) | inline_string | filename}, config (string),
// fail_open.
func legacyFilter(name string, tc *structpb.Struct) (*hcmv3.HttpFilter, error) {
	bin := tc.GetFields()["wasm_binary"].GetStructValue()
	ds := &corev3.DataSource{}
	f := bin.GetFields()
	switch {
	case f["inline_bytes"] != nil:
		b, err := base64.StdEncoding.DecodeString(f["inline_bytes"].GetStringValue())
		if err != nil {
			return nil, fmt.Errorf("wasm_binary.inline_bytes: %w", err)
		}
		ds.Specifier = &corev3.DataSource_InlineBytes{InlineBytes: b}
	case f["inline_string"] != nil:
		ds.Specifier = &corev3.DataSource_InlineString{InlineString: f["inline_string"].GetStringValue()}
	case f["filename"] != nil:
		ds.Specifier = &corev3.DataSource_Filename{Filename: f["filename"].GetStringValue()}
	default:
		return nil, errors.New("wasm_binary needs inline_bytes, inline_string or filename")
	}
	pc := &wasmv3.PluginConfig{
		Name:     name,
		FailOpen: tc.GetFields()["fail_open"].GetBoolValue(),
		Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{
			VmId: name, Runtime: "envoy.wasm.runtime.v8",
			Code: &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Local{Local: ds}},
		}},
	}
	if c, ok := tc.GetFields()["config"]; ok {
		s := c.GetStringValue()
		if s == "" {
			b, err := protojson.Marshal(c)
			if err != nil {
				return nil, err
			}
			s = string(b)
		}
		a, err := anypb.New(wrapperspb.String(s))
		if err != nil {
			return nil, err
		}
		pc.Configuration = a
	}
	return wasmFilter(pc)
}

// IsWasm reports whether an http filter is a wasm filter.
func IsWasm(f *hcmv3.HttpFilter) bool {
	return f.GetName() == FilterName || strings.HasSuffix(f.GetTypedConfig().GetTypeUrl(), "envoy.extensions.filters.http.wasm.v3.Wasm")
}
