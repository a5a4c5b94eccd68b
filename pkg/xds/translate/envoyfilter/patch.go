package envoyfilter

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/wasm"
)

type (
	opT    = networking.EnvoyFilter_Patch_Operation
	patchT = networking.EnvoyFilter_EnvoyConfigObjectPatch
)

const (
	opMerge        = networking.EnvoyFilter_Patch_MERGE
	opMergeReplace = networking.EnvoyFilter_Patch_MERGE_AND_REPLACE_LIST
	opAdd          = networking.EnvoyFilter_Patch_ADD
	opRemove       = networking.EnvoyFilter_Patch_REMOVE
	opReplace      = networking.EnvoyFilter_Patch_REPLACE
)

func isMerge(op opT) bool { return op == opMerge || op == opMergeReplace }

// decoder returns a function returning a new T decoded from the patch
// value (decoded once; each call returns a fresh copy).
func decoder[T proto.Message](p *patchT, mk func() T) func() (T, error) {
	var v T
	var err error
	done := false
	return func() (T, error) {
		if !done {
			v, err, done = mk(), nil, true
			err = decode(p.GetPatch().GetValue(), v)
		}
		if err != nil {
			return v, err
		}
		return proto.Clone(v).(T), nil
	}
}

// merger returns a function merging the patch value (decoded once as T)
// into an element.
func merger[T proto.Message](p *patchT, mk func() T) func(T) error {
	var v T
	var err error
	done := false
	return func(dst T) error {
		if !done {
			v, done = mk(), true
			err = decode(p.GetPatch().GetValue(), v)
		}
		if err != nil {
			return err
		}
		return merge(dst, v, p.GetPatch().GetOperation() == opMergeReplace)
	}
}

// --- listeners ---

func (tx *txn) patchListeners(p *patchT) error {
	op := p.GetPatch().GetOperation()
	m := p.GetMatch()
	lm := m.GetListener()
	if p.GetApplyTo() == networking.EnvoyFilter_LISTENER && op == opAdd {
		l := &listenerv3.Listener{}
		if err := decode(p.GetPatch().GetValue(), l); err != nil {
			return err
		}
		if l.GetName() == "" {
			return fmt.Errorf("patch.value.name is required to ADD a listener")
		}
		if _, ok := tx.t.Listeners[l.GetName()]; ok {
			return fmt.Errorf("listener %q already exists", l.GetName())
		}
		tx.lis[l.GetName()] = l
		return nil
	}
	for _, n := range slices.Sorted(maps.Keys(tx.t.Listeners)) {
		cur := tx.t.Listeners[n]
		inbound := n == VirtualInbound
		if !ctxMatch(m.GetContext(), sideOf(tx.t.Proxy, inbound)) || !listenerMatches(lm, cur, inbound) {
			continue
		}
		if p.GetApplyTo() == networking.EnvoyFilter_LISTENER {
			switch {
			case op == opRemove:
				tx.lis[n] = nil
			case isMerge(op):
				w := proto.Clone(cur).(*listenerv3.Listener)
				if err := merger(p, func() *listenerv3.Listener { return &listenerv3.Listener{} })(w); err != nil {
					return err
				}
				tx.lis[n] = w
			case op == opReplace:
				w := &listenerv3.Listener{}
				if err := decode(p.GetPatch().GetValue(), w); err != nil {
					return err
				}
				w.Name = n
				tx.lis[n] = w
			default:
				return fmt.Errorf("operation %s is not supported for LISTENER", op)
			}
			continue
		}
		w := proto.Clone(cur).(*listenerv3.Listener)
		changed, err := tx.patchInListener(w, p, inbound)
		if err != nil {
			return fmt.Errorf("listener %q: %w", n, err)
		}
		if changed {
			tx.lis[n] = w
		}
	}
	return nil
}

// listenerMatches applies a listener match to a listener. On
// virtualInbound, portNumber selects filter chains by destination port.
func listenerMatches(m *networking.EnvoyFilter_ListenerMatch, l *listenerv3.Listener, inbound bool) bool {
	if m == nil {
		return true
	}
	if m.GetName() != "" && m.GetName() != l.GetName() {
		return false
	}
	if pn := m.GetPortNumber(); pn != 0 && !inbound && listenerPort(l) != pn {
		return false
	}
	if m.GetListenerFilter() != "" && !slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
		return nameIs(m.GetListenerFilter(), f.GetName())
	}) {
		return false
	}
	if m.GetFilterChain() != nil || (inbound && m.GetPortNumber() != 0) {
		return slices.ContainsFunc(chainsOf(l), func(fc *listenerv3.FilterChain) bool { return chainMatches(m, fc, inbound) })
	}
	return true
}

func listenerPort(l *listenerv3.Listener) uint32 {
	if p := l.GetAddress().GetSocketAddress().GetPortValue(); p != 0 {
		return p
	}
	if i := strings.LastIndexByte(l.GetName(), '_'); i >= 0 {
		if p, err := strconv.Atoi(l.GetName()[i+1:]); err == nil {
			return uint32(p)
		}
	}
	return 0
}

func chainsOf(l *listenerv3.Listener) []*listenerv3.FilterChain {
	out := slices.Clone(l.GetFilterChains())
	if d := l.GetDefaultFilterChain(); d != nil {
		out = append(out, d)
	}
	return out
}

// chainMatches applies the listener match's filterChain (and, on
// virtualInbound, portNumber) to a filter chain.
func chainMatches(lm *networking.EnvoyFilter_ListenerMatch, fc *listenerv3.FilterChain, inbound bool) bool {
	fcm := fc.GetFilterChainMatch()
	if pn := lm.GetPortNumber(); inbound && pn != 0 && fcm.GetDestinationPort().GetValue() != pn {
		return false
	}
	m := lm.GetFilterChain()
	if m == nil {
		return true
	}
	if m.GetName() != "" && m.GetName() != fc.GetName() {
		return false
	}
	if m.GetSni() != "" && !slices.Contains(fcm.GetServerNames(), m.GetSni()) {
		return false
	}
	if m.GetTransportProtocol() != "" && m.GetTransportProtocol() != fcm.GetTransportProtocol() {
		return false
	}
	if ap := m.GetApplicationProtocols(); ap != "" {
		for _, a := range strings.Split(ap, ",") {
			if !slices.Contains(fcm.GetApplicationProtocols(), strings.TrimSpace(a)) {
				return false
			}
		}
	}
	if dp := m.GetDestinationPort(); dp != 0 && fcm.GetDestinationPort().GetValue() != dp {
		return false
	}
	if ts := m.GetTransportSocket(); ts != "" && ts != fc.GetTransportSocket().GetName() {
		return false
	}
	if fn := m.GetFilter().GetName(); fn != "" && !slices.ContainsFunc(fc.GetFilters(), func(f *listenerv3.Filter) bool { return nameIs(fn, f.GetName()) }) {
		return false
	}
	return true
}

// patchInListener applies a LISTENER_FILTER, FILTER_CHAIN, NETWORK_FILTER or
// HTTP_FILTER patch to w, a clone.
func (tx *txn) patchInListener(w *listenerv3.Listener, p *patchT, inbound bool) (bool, error) {
	op := p.GetPatch().GetOperation()
	lm := p.GetMatch().GetListener()
	switch p.GetApplyTo() {
	case networking.EnvoyFilter_LISTENER_FILTER:
		var match func(*listenerv3.ListenerFilter) bool
		if n := lm.GetListenerFilter(); n != "" {
			match = func(f *listenerv3.ListenerFilter) bool { return nameIs(n, f.GetName()) }
		}
		mk := func() *listenerv3.ListenerFilter { return &listenerv3.ListenerFilter{} }
		out, changed, err := listOp(w.GetListenerFilters(), op, match, decoder(p, mk), merger(p, mk))
		w.ListenerFilters = out
		return changed, err
	case networking.EnvoyFilter_FILTER_CHAIN:
		mk := func() *listenerv3.FilterChain { return &listenerv3.FilterChain{} }
		if op == opAdd {
			fc, err := decoder(p, mk)()
			if err != nil {
				return false, err
			}
			w.FilterChains = append(w.FilterChains, fc)
			return true, nil
		}
		match := func(fc *listenerv3.FilterChain) bool { return chainMatches(lm, fc, inbound) }
		if op != opRemove && !isMerge(op) && op != opReplace {
			return false, fmt.Errorf("operation %s is not supported for FILTER_CHAIN", op)
		}
		out, changed, err := listOp(w.GetFilterChains(), op, match, decoder(p, mk), merger(p, mk))
		if err != nil {
			return false, err
		}
		w.FilterChains = out
		if d := w.GetDefaultFilterChain(); d != nil && match(d) {
			switch {
			case op == opRemove:
				w.DefaultFilterChain = nil
			case isMerge(op):
				if err := merger(p, mk)(d); err != nil {
					return false, err
				}
			case op == opReplace:
				if w.DefaultFilterChain, err = decoder(p, mk)(); err != nil {
					return false, err
				}
			}
			changed = true
		}
		return changed, nil
	case networking.EnvoyFilter_NETWORK_FILTER:
		var match func(*listenerv3.Filter) bool
		if n := lm.GetFilterChain().GetFilter().GetName(); n != "" {
			match = func(f *listenerv3.Filter) bool { return nameIs(n, f.GetName()) }
		}
		mk := func() *listenerv3.Filter { return &listenerv3.Filter{} }
		touched := false
		for _, fc := range chainsOf(w) {
			if !chainMatches(lm, fc, inbound) {
				continue
			}
			out, changed, err := listOp(fc.GetFilters(), op, match, decoder(p, mk), merger(p, mk))
			if err != nil {
				return false, err
			}
			fc.Filters = out
			touched = touched || changed
		}
		return touched, nil
	case networking.EnvoyFilter_HTTP_FILTER:
		if n := lm.GetFilterChain().GetFilter().GetName(); n != "" && !nameIs(n, HCMName) {
			return false, nil
		}
		var match func(*hcmv3.HttpFilter) bool
		if n := lm.GetFilterChain().GetFilter().GetSubFilter().GetName(); n != "" {
			match = func(f *hcmv3.HttpFilter) bool { return nameIs(n, f.GetName()) }
		}
		value := func() (*hcmv3.HttpFilter, error) { return wasm.FilterFromValue(p.GetPatch().GetValue()) }
		mk := func() *hcmv3.HttpFilter { return &hcmv3.HttpFilter{} }
		touched := false
		for _, fc := range chainsOf(w) {
			if !chainMatches(lm, fc, inbound) {
				continue
			}
			for _, f := range fc.GetFilters() {
				h, ok := hcmOf(f)
				if !ok {
					continue
				}
				var out []*hcmv3.HttpFilter
				var changed bool
				var err error
				if fc := p.GetPatch().GetFilterClass(); op == opAdd && fc != networking.EnvoyFilter_Patch_UNSPECIFIED {
					var f *hcmv3.HttpFilter
					if f, err = value(); err != nil {
						return false, err
					}
					out, changed = slices.Insert(slices.Clone(h.GetHttpFilters()), classPosition(h.GetHttpFilters(), fc), f), true
				} else if out, changed, err = listOp(h.GetHttpFilters(), op, match, value, merger(p, mk)); err != nil {
					return false, err
				}
				if !changed {
					continue
				}
				h.HttpFilters = out
				if err := setHCM(f, h); err != nil {
					return false, err
				}
				touched = true
			}
		}
		return touched, nil
	}
	return false, nil
}

// classPosition is where ADD with a filterClass inserts, as in Istio:
// AUTHN before the authentication filters, AUTHZ after the authorization
// filters, STATS before istio.stats; the router stays last.
func classPosition(chain []*hcmv3.HttpFilter, class networking.EnvoyFilter_Patch_FilterClass) int {
	first := func(names ...string) int {
		for i, f := range chain {
			if slices.Contains(names, canonical(f.GetName())) {
				return i
			}
		}
		return -1
	}
	router := first("envoy.filters.http.router")
	if router < 0 {
		router = len(chain)
	}
	switch class {
	case networking.EnvoyFilter_Patch_AUTHN:
		if i := first("envoy.filters.http.jwt_authn", "istio_authn", "envoy.filters.http.rbac", "envoy.filters.http.ext_authz", "istio.stats"); i >= 0 {
			return i
		}
	case networking.EnvoyFilter_Patch_AUTHZ:
		last := -1
		for i, f := range chain {
			if n := canonical(f.GetName()); n == "envoy.filters.http.rbac" || n == "envoy.filters.http.ext_authz" {
				last = i
			}
		}
		if last >= 0 {
			return last + 1
		}
		if i := first("istio.stats"); i >= 0 {
			return i
		}
	case networking.EnvoyFilter_Patch_STATS:
		if i := first("istio.stats"); i >= 0 {
			return i
		}
	}
	return router
}

// hcmOf unpacks an HTTP connection manager network filter.
func hcmOf(f *listenerv3.Filter) (*hcmv3.HttpConnectionManager, bool) {
	h := &hcmv3.HttpConnectionManager{}
	if tc := f.GetTypedConfig(); tc == nil || !tc.MessageIs(h) || tc.UnmarshalTo(h) != nil {
		return nil, false
	}
	return h, true
}

func setHCM(f *listenerv3.Filter, h *hcmv3.HttpConnectionManager) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(h)
	if err != nil {
		return err
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{
		TypeUrl: "type.googleapis.com/" + string(h.ProtoReflect().Descriptor().FullName()), Value: b}}
	return nil
}

// --- routes ---

func (tx *txn) patchRoutes(p *patchT) error {
	m := p.GetMatch()
	rm := m.GetRouteConfiguration()
	for _, n := range slices.Sorted(maps.Keys(tx.t.Routes)) {
		if !ctxMatch(m.GetContext(), sideOf(tx.t.Proxy, false)) || !routeConfigMatches(rm, n, routePort(n), tx.t.RouteInfo[n]) {
			continue
		}
		w := proto.Clone(tx.t.Routes[n]).(*routev3.RouteConfiguration)
		changed, err := patchRouteConfig(w, p)
		if err != nil {
			return fmt.Errorf("route configuration %q: %w", n, err)
		}
		if changed {
			tx.rts[n] = w
		}
	}
	// virtualInbound's HCMs carry their route configurations inline.
	vi := tx.t.Listeners[VirtualInbound]
	if vi == nil || tx.t.Proxy.Type != model.Sidecar || !ctxMatch(m.GetContext(), networking.EnvoyFilter_SIDECAR_INBOUND) {
		return nil
	}
	w := proto.Clone(vi).(*listenerv3.Listener)
	touched := false
	for _, fc := range chainsOf(w) {
		port := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
		for _, f := range fc.GetFilters() {
			h, ok := hcmOf(f)
			rc := h.GetRouteConfig()
			if !ok || rc == nil || !routeConfigMatches(rm, rc.GetName(), port, RouteInfo{}) {
				continue
			}
			changed, err := patchRouteConfig(rc, p)
			if err != nil {
				return fmt.Errorf("virtualInbound route configuration %q: %w", rc.GetName(), err)
			}
			if changed {
				if err := setHCM(f, h); err != nil {
					return err
				}
				touched = true
			}
		}
	}
	if touched {
		tx.lis[VirtualInbound] = w
	}
	return nil
}

// routePort is the port a generated route configuration serves: "9080"
// (sidecar), "http.80" and "https.443.SERVER.GW.NS" (gateways).
func routePort(name string) uint32 {
	s := name
	if rest, ok := strings.CutPrefix(name, "http."); ok {
		s = rest
	} else if rest, ok := strings.CutPrefix(name, "https."); ok {
		s, _, _ = strings.Cut(rest, ".")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return uint32(n)
}

func routeConfigMatches(m *networking.EnvoyFilter_RouteConfigurationMatch, name string, port uint32, info RouteInfo) bool {
	if m == nil {
		return true
	}
	if m.GetName() != "" && m.GetName() != name {
		return false
	}
	if m.GetPortNumber() != 0 && m.GetPortNumber() != port {
		return false
	}
	if m.GetPortName() != "" && !slices.Contains(info.PortNames, m.GetPortName()) {
		return false
	}
	if m.GetGateway() != "" && !slices.Contains(info.Gateways, m.GetGateway()) {
		return false
	}
	return true
}

// patchRouteConfig applies a ROUTE_CONFIGURATION, VIRTUAL_HOST or
// HTTP_ROUTE patch to rc, a clone.
func patchRouteConfig(rc *routev3.RouteConfiguration, p *patchT) (bool, error) {
	op := p.GetPatch().GetOperation()
	vm := p.GetMatch().GetRouteConfiguration().GetVhost()
	switch p.GetApplyTo() {
	case networking.EnvoyFilter_ROUTE_CONFIGURATION:
		if !isMerge(op) {
			return false, fmt.Errorf("operation %s is not supported for ROUTE_CONFIGURATION (only MERGE)", op)
		}
		err := merger(p, func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} })(rc)
		return err == nil, err
	case networking.EnvoyFilter_VIRTUAL_HOST:
		mk := func() *routev3.VirtualHost { return &routev3.VirtualHost{} }
		var match func(*routev3.VirtualHost) bool
		if vm.GetName() != "" || vm.GetDomainName() != "" {
			match = func(vh *routev3.VirtualHost) bool { return vhostMatches(vm, vh) }
		}
		switch {
		case op == opAdd:
			match = nil
		case op == opRemove, op == opReplace, isMerge(op):
		default:
			return false, fmt.Errorf("operation %s is not supported for VIRTUAL_HOST", op)
		}
		out, changed, err := listOp(rc.GetVirtualHosts(), op, match, decoder(p, mk), merger(p, mk))
		rc.VirtualHosts = out
		return changed, err
	case networking.EnvoyFilter_HTTP_ROUTE:
		rm := vm.GetRoute()
		var match func(*routev3.Route) bool
		if rm.GetName() != "" || rm.GetAction() != networking.EnvoyFilter_RouteConfigurationMatch_RouteMatch_ANY {
			match = func(r *routev3.Route) bool { return routeMatches(rm, r) }
		}
		if op == opAdd {
			match = nil
		}
		mk := func() *routev3.Route { return &routev3.Route{} }
		dec, mer := decoder(p, mk), merger(p, mk)
		touched := false
		for _, vh := range rc.GetVirtualHosts() {
			if !vhostMatches(vm, vh) {
				continue
			}
			out, changed, err := listOp(vh.GetRoutes(), op, match, dec, mer)
			if err != nil {
				return false, err
			}
			vh.Routes = out
			touched = touched || changed
		}
		return touched, nil
	}
	return false, nil
}

func vhostMatches(m *networking.EnvoyFilter_RouteConfigurationMatch_VirtualHostMatch, vh *routev3.VirtualHost) bool {
	if m.GetName() != "" && m.GetName() != vh.GetName() {
		return false
	}
	if m.GetDomainName() != "" && !slices.Contains(vh.GetDomains(), m.GetDomainName()) {
		return false
	}
	return true
}

func routeMatches(m *networking.EnvoyFilter_RouteConfigurationMatch_RouteMatch, r *routev3.Route) bool {
	if m.GetName() != "" && m.GetName() != r.GetName() {
		return false
	}
	switch m.GetAction() {
	case networking.EnvoyFilter_RouteConfigurationMatch_RouteMatch_ROUTE:
		return r.GetRoute() != nil
	case networking.EnvoyFilter_RouteConfigurationMatch_RouteMatch_REDIRECT:
		return r.GetRedirect() != nil
	case networking.EnvoyFilter_RouteConfigurationMatch_RouteMatch_DIRECT_RESPONSE:
		return r.GetDirectResponse() != nil
	}
	return true
}
