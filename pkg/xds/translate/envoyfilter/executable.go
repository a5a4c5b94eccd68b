package envoyfilter

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/proxy/executable"
	"github.com/weftmesh/weft/pkg/xds/translate/wasm"
)

// Finding is one thing a patch sets that weft proxy does not execute.
type Finding struct {
	// Filter is the kind and name of an unexecuted filter ("network
	// filter", "envoy.filters.network.redis_proxy"); empty Kind for fields.
	Kind, Name string
	// Text says what, e.g. "network filter envoy.filters.network.redis_proxy"
	// or "route field route.idle_timeout".
	Text string
}

// NotExecuted lists what a patch adds or sets that weft proxy does not
// execute (see pkg/proxy/executable). It looks at the patch value only:
// REMOVE patches and values that do not decode (those are skipped and
// reported by Apply) give nothing.
func NotExecuted(p *networking.EnvoyFilter_EnvoyConfigObjectPatch) []Finding {
	op := p.GetPatch().GetOperation()
	if op == opRemove || op == networking.EnvoyFilter_Patch_INVALID || p.GetPatch().GetValue() == nil {
		return nil
	}
	c := &checker{}
	lm := p.GetMatch().GetListener()
	switch p.GetApplyTo() {
	case networking.EnvoyFilter_CLUSTER:
		c.decodeWalk(p, &clusterv3.Cluster{}, "cluster")
	case networking.EnvoyFilter_LISTENER:
		c.decodeWalk(p, &listenerv3.Listener{}, "listener")
	case networking.EnvoyFilter_FILTER_CHAIN:
		c.decodeWalk(p, &listenerv3.FilterChain{}, "filter chain")
	case networking.EnvoyFilter_ROUTE_CONFIGURATION:
		c.decodeWalk(p, &routev3.RouteConfiguration{}, "route configuration")
	case networking.EnvoyFilter_VIRTUAL_HOST:
		c.decodeWalk(p, &routev3.VirtualHost{}, "virtual host")
	case networking.EnvoyFilter_HTTP_ROUTE:
		c.decodeWalk(p, &routev3.Route{}, "route")
	case networking.EnvoyFilter_EXTENSION_CONFIG:
		tec := &corev3.TypedExtensionConfig{}
		if decode(p.GetPatch().GetValue(), tec) == nil && tec.GetTypedConfig() != nil {
			f := inlineFilter(&hcmv3.HttpFilter{Name: tec.GetName()}, tec.GetTypedConfig())
			c.httpFilter(f, f.GetName())
		}
	case networking.EnvoyFilter_LISTENER_FILTER:
		f := &listenerv3.ListenerFilter{}
		if decode(p.GetPatch().GetValue(), f) == nil {
			c.listenerFilter(cmpOr(f.GetName(), lm.GetListenerFilter()))
		}
	case networking.EnvoyFilter_NETWORK_FILTER:
		f := &listenerv3.Filter{}
		if decode(p.GetPatch().GetValue(), f) == nil {
			c.networkFilter(f, cmpOr(f.GetName(), lm.GetFilterChain().GetFilter().GetName()))
		}
	case networking.EnvoyFilter_HTTP_FILTER:
		var f *hcmv3.HttpFilter
		if isMerge(op) {
			f = &hcmv3.HttpFilter{}
			if decode(p.GetPatch().GetValue(), f) != nil {
				return nil
			}
		} else {
			var err error
			if f, err = wasm.FilterFromValue(p.GetPatch().GetValue()); err != nil {
				return nil
			}
		}
		c.httpFilter(f, cmpOr(f.GetName(), lm.GetFilterChain().GetFilter().GetSubFilter().GetName()))
	}
	return c.out
}

// Finding kinds of unexecuted filters.
const (
	KindNetworkFilter  = "network filter"
	KindHTTPFilter     = "http filter"
	KindListenerFilter = "listener filter"
)

// FilterNames returns the names of the network, HTTP and listener filters
// in listeners, by kind (for telling whether a reported filter is still
// in a proxy's final configuration).
func FilterNames(listeners map[string]*listenerv3.Listener) map[string]map[string]bool {
	out := map[string]map[string]bool{KindNetworkFilter: {}, KindHTTPFilter: {}, KindListenerFilter: {}}
	for _, l := range listeners {
		for _, lf := range l.GetListenerFilters() {
			out[KindListenerFilter][canonical(lf.GetName())] = true
		}
		for _, fc := range chainsOf(l) {
			for _, f := range fc.GetFilters() {
				out[KindNetworkFilter][canonical(f.GetName())] = true
				if h, ok := hcmOf(f); ok {
					for _, hf := range h.GetHttpFilters() {
						out[KindHTTPFilter][canonical(hf.GetName())] = true
					}
				}
			}
		}
	}
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type checker struct{ out []Finding }

func (c *checker) add(format string, args ...any) { c.addFilter("", "", format, args...) }

func (c *checker) addFilter(kind, name, format string, args ...any) {
	f := Finding{Kind: kind, Name: name, Text: fmt.Sprintf(format, args...)}
	if !slices.Contains(c.out, f) {
		c.out = append(c.out, f)
	}
}

func (c *checker) decodeWalk(p *networking.EnvoyFilter_EnvoyConfigObjectPatch, m proto.Message, what string) {
	if decode(p.GetPatch().GetValue(), m) == nil {
		c.walk(m.ProtoReflect(), what, "")
	}
}

// walk reports the set fields of m that the proxy does not read.
func (c *checker) walk(m protoreflect.Message, what, path string) {
	switch x := m.Interface().(type) {
	case *listenerv3.Filter:
		c.networkFilter(x, x.GetName())
		return
	case *hcmv3.HttpFilter:
		c.httpFilter(x, x.GetName())
		return
	case *listenerv3.ListenerFilter:
		c.listenerFilter(x.GetName())
		return
	case *anypb.Any:
		return // transport sockets, protocol options: their owners read them
	}
	msg := string(m.Descriptor().FullName())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fp := string(fd.Name())
		if path != "" {
			fp = path + "." + fp
		}
		if !executable.Field(msg, string(fd.Name())) {
			c.add("%s field %s", what, fp)
			return true
		}
		switch {
		case fd.Name() == "typed_per_filter_config" && fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				if !executable.PerFilterConfig(canonical(k.String())) {
					c.add("%s %s[%s]", what, fp, k.String())
				}
				return true
			})
		case fd.Message() == nil:
		case fd.IsList():
			for i := 0; i < v.List().Len(); i++ {
				c.walk(v.List().Get(i).Message(), what, fp)
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					c.walk(mv.Message(), what, fp)
					return true
				})
			}
		default:
			c.walk(v.Message(), what, fp)
		}
		return true
	})
}

func (c *checker) networkFilter(f *listenerv3.Filter, name string) {
	name = canonical(name)
	if name == "" {
		return
	}
	if !executable.NetworkFilterExecuted(name) {
		c.addFilter(KindNetworkFilter, name, "network filter %s", name)
		return
	}
	if tc := f.GetTypedConfig(); tc != nil {
		if m, err := tc.UnmarshalNew(); err == nil {
			c.walk(m.ProtoReflect(), "network filter "+name, "typed_config")
		}
	}
}

func (c *checker) httpFilter(f *hcmv3.HttpFilter, name string) {
	name = canonical(name)
	switch {
	case name == "":
	case !executable.HTTPFilter(name):
		c.addFilter(KindHTTPFilter, name, "http filter %s", name)
	case len(f.GetTypedConfig().GetValue()) > 0 && !executable.HTTPFilterConfig(name):
		c.addFilter(KindHTTPFilter, name, "typed_config of http filter %s", name)
	}
}

func (c *checker) listenerFilter(name string) {
	if name = canonical(name); name != "" && !executable.ListenerFilter(name) {
		c.addFilter(KindListenerFilter, name, "listener filter %s", name)
	}
}

// ops lists the operations each applyTo supports.
var ops = map[networking.EnvoyFilter_ApplyTo][]networking.EnvoyFilter_Patch_Operation{
	networking.EnvoyFilter_CLUSTER:             {opAdd, opRemove, opMerge, opMergeReplace, opReplace},
	networking.EnvoyFilter_LISTENER:            {opAdd, opRemove, opMerge, opMergeReplace, opReplace},
	networking.EnvoyFilter_FILTER_CHAIN:        {opAdd, opRemove, opMerge, opMergeReplace, opReplace},
	networking.EnvoyFilter_ROUTE_CONFIGURATION: {opMerge, opMergeReplace},
	networking.EnvoyFilter_VIRTUAL_HOST:        {opAdd, opRemove, opMerge, opMergeReplace, opReplace},
}

var listOps = []networking.EnvoyFilter_Patch_Operation{opAdd, opRemove, opMerge, opMergeReplace, opReplace,
	networking.EnvoyFilter_Patch_INSERT_BEFORE, networking.EnvoyFilter_Patch_INSERT_AFTER, networking.EnvoyFilter_Patch_INSERT_FIRST}

// Check reports why a patch can never apply: an applyTo weft does not
// patch, an operation its applyTo does not support, or a value that does
// not decode into the patched type. The error names the field
// ("applyTo", "patch.operation", "patch.value").
func Check(p *networking.EnvoyFilter_EnvoyConfigObjectPatch) (field string, err error) {
	at, op := p.GetApplyTo(), p.GetPatch().GetOperation()
	var mk func() proto.Message
	switch at {
	case networking.EnvoyFilter_CLUSTER:
		mk = func() proto.Message { return &clusterv3.Cluster{} }
	case networking.EnvoyFilter_LISTENER:
		mk = func() proto.Message { return &listenerv3.Listener{} }
	case networking.EnvoyFilter_LISTENER_FILTER:
		mk = func() proto.Message { return &listenerv3.ListenerFilter{} }
	case networking.EnvoyFilter_FILTER_CHAIN:
		mk = func() proto.Message { return &listenerv3.FilterChain{} }
	case networking.EnvoyFilter_NETWORK_FILTER:
		mk = func() proto.Message { return &listenerv3.Filter{} }
	case networking.EnvoyFilter_HTTP_FILTER:
		mk = func() proto.Message { return &hcmv3.HttpFilter{} }
	case networking.EnvoyFilter_ROUTE_CONFIGURATION:
		mk = func() proto.Message { return &routev3.RouteConfiguration{} }
	case networking.EnvoyFilter_VIRTUAL_HOST:
		mk = func() proto.Message { return &routev3.VirtualHost{} }
	case networking.EnvoyFilter_HTTP_ROUTE:
		mk = func() proto.Message { return &routev3.Route{} }
	case networking.EnvoyFilter_EXTENSION_CONFIG:
		if op != opAdd {
			return "patch.operation", fmt.Errorf("operation %s is not supported for EXTENSION_CONFIG (only ADD)", op)
		}
		tec := &corev3.TypedExtensionConfig{}
		if err := decode(p.GetPatch().GetValue(), tec); err != nil {
			return "patch.value", err
		}
		if err := tec.Validate(); err != nil {
			return "patch.value", err
		}
		return "", nil
	case networking.EnvoyFilter_BOOTSTRAP:
		return "applyTo", fmt.Errorf("BOOTSTRAP is not applied: weft proxies take no bootstrap patches")
	default:
		return "applyTo", fmt.Errorf("applyTo %s is not supported", at)
	}
	allowed, ok := ops[at]
	if !ok {
		allowed = listOps
	}
	if !slices.Contains(allowed, op) {
		return "patch.operation", fmt.Errorf("operation %s is not supported for %s", op, at)
	}
	if op == opRemove {
		return "", nil
	}
	if at == networking.EnvoyFilter_HTTP_FILTER && !isMerge(op) {
		if _, err := wasm.FilterFromValue(p.GetPatch().GetValue()); err != nil {
			return "patch.value", err
		}
		return "", nil
	}
	if err := decode(p.GetPatch().GetValue(), mk()); err != nil {
		return "patch.value", err
	}
	return "", nil
}
