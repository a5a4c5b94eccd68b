package envoyfilter

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/xds/translate/wasm"
)

// Weft serves no ECDS: EXTENSION_CONFIG ADD patches define extension
// configs (envoy.config.core.v3.TypedExtensionConfig) by name, and an HTTP
// filter whose config_discovery names one (the filter's name) gets that
// typed_config inline, as if ECDS had delivered it. A filter no extension
// config names keeps config_discovery's default_config, if any. Wasm
// configs are named envoy.filters.http.wasm (the name weft proxy runs them
// by), keeping the extension name as the plugin name.

type extConfig struct {
	ref Ref
	p   *networking.EnvoyFilter_EnvoyConfigObjectPatch
	tec *corev3.TypedExtensionConfig
}

// extensionConfigs decodes the EXTENSION_CONFIG ADD patches that select
// the proxy; later patches win a name.
func extensionConfigs(ps []patch, t *Target, res *Result) map[string]extConfig {
	out := map[string]extConfig{}
	for _, p := range ps {
		if p.p.GetApplyTo() != networking.EnvoyFilter_EXTENSION_CONFIG ||
			!proxyMatches(p.p.GetMatch().GetProxy(), t.Proxy) || !contextApplies(p.p.GetMatch().GetContext(), t.Proxy) {
			continue
		}
		if op := p.p.GetPatch().GetOperation(); op != opAdd {
			res.Messages = append(res.Messages, Message{p.Ref, fmt.Sprintf("skipped: operation %s is not supported for EXTENSION_CONFIG (only ADD)", op)})
			continue
		}
		tec := &corev3.TypedExtensionConfig{}
		err := decode(p.p.GetPatch().GetValue(), tec)
		if err == nil {
			err = tec.Validate()
		}
		if err != nil {
			res.Messages = append(res.Messages, Message{p.Ref, "skipped: " + cleanErr(err)})
			continue
		}
		out[tec.GetName()] = extConfig{p.Ref, p.p, tec}
	}
	return out
}

// inlineExtensionConfigs resolves config_discovery HTTP filters in every
// listener; one transaction per listener, reported like a patch.
func inlineExtensionConfigs(exts map[string]extConfig, t *Target, res *Result) {
	used := map[Ref]bool{}
	for _, n := range slices.Sorted(maps.Keys(t.Listeners)) {
		w := proto.Clone(t.Listeners[n]).(*listenerv3.Listener)
		changed := false
		var refs []Ref
		for _, fc := range chainsOf(w) {
			for _, f := range fc.GetFilters() {
				h, ok := hcmOf(f)
				if !ok {
					continue
				}
				hc := false
				for i, hf := range h.GetHttpFilters() {
					cd := hf.GetConfigDiscovery()
					if cd == nil {
						continue
					}
					var tc *anypb.Any
					if e, ok := exts[hf.GetName()]; ok && (len(cd.GetTypeUrls()) == 0 || slices.Contains(cd.GetTypeUrls(), e.tec.GetTypedConfig().GetTypeUrl())) {
						tc = e.tec.GetTypedConfig()
						refs = append(refs, e.ref)
					} else if cd.GetDefaultConfig() != nil {
						tc = cd.GetDefaultConfig()
					} else {
						continue
					}
					h.HttpFilters[i] = inlineFilter(hf, tc)
					hc = true
				}
				if hc {
					if err := setHCM(f, h); err != nil {
						res.Messages = append(res.Messages, Message{Ref{Filter: "(extension configs)"}, err.Error()})
						continue
					}
					changed = true
				}
			}
		}
		if !changed {
			continue
		}
		if err := validateDeep(w, nil); err != nil {
			for _, r := range refs {
				res.Messages = append(res.Messages, Message{r, fmt.Sprintf("skipped: listener %q would be invalid: %s", n, cleanErr(err))})
			}
			continue
		}
		t.Listeners[n] = w
		for _, r := range refs {
			used[r] = true
		}
	}
	var refs []Ref
	for r := range used {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b Ref) int {
		if a.Filter != b.Filter {
			return strings.Compare(a.Filter, b.Filter)
		}
		return a.Index - b.Index
	})
	for _, r := range refs {
		for _, e := range exts {
			if e.ref == r {
				res.Applied = append(res.Applied, Applied{e.ref, e.p})
				break
			}
		}
	}
}

// inlineFilter is hf with typed_config tc instead of config_discovery.
func inlineFilter(hf *hcmv3.HttpFilter, tc *anypb.Any) *hcmv3.HttpFilter {
	out := &hcmv3.HttpFilter{Name: hf.GetName(), IsOptional: hf.GetIsOptional(), Disabled: hf.GetDisabled(),
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: proto.Clone(tc).(*anypb.Any)}}
	w := &wasmhttpv3.Wasm{}
	if tc.MessageIs(w) && tc.UnmarshalTo(w) == nil {
		if w.GetConfig() != nil && w.GetConfig().GetName() == "" {
			w.Config.Name = hf.GetName()
		}
		if a, err := anypb.New(w); err == nil {
			out.Name, out.ConfigType = wasm.FilterName, &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
		}
	}
	return out
}
