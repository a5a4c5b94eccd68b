// Package envoyfilter applies Istio EnvoyFilter configPatches to the xDS
// resources translation generated for one proxy, with Istio's semantics:
// applyTo LISTENER, LISTENER_FILTER, FILTER_CHAIN, NETWORK_FILTER,
// HTTP_FILTER, ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE and CLUSTER;
// match by context, proxy (version, metadata), listener, route
// configuration and cluster; operations MERGE, MERGE_AND_REPLACE_LIST,
// ADD, REMOVE, INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST and REPLACE.
//
// Each patch is applied atomically: the resources it changes are cloned,
// patched and checked with Validate() (including the configs packed in
// typed_config Anys); a patch whose result is invalid, or whose value
// cannot be decoded, changes nothing and is reported in Result.Messages.
// The package is pure: no I/O.
package envoyfilter

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// Well-known names.
const (
	VirtualInbound = "virtualInbound"
	HCMName        = "envoy.filters.network.http_connection_manager"
	// GatewayNameLabel selects a gateway's proxies for targetRefs of kind
	// Gateway (Kubernetes Gateway API deployments carry it).
	GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"
)

// Target is the generated configuration of one proxy. Apply modifies the
// maps (it replaces, adds and deletes entries, never mutating a resource
// in place, so the resources may be shared with other proxies).
type Target struct {
	Proxy     *model.Proxy
	Listeners map[string]*listenerv3.Listener
	Routes    map[string]*routev3.RouteConfiguration
	Clusters  map[string]*clusterv3.Cluster
	// RouteInfo describes gateway route configurations by name: the
	// Gateway server port names and the gateways (namespace/name) they
	// serve, for routeConfiguration.portName and .gateway matches.
	RouteInfo map[string]RouteInfo
}

// RouteInfo is what a route configuration was generated for.
type RouteInfo struct {
	PortNames []string
	Gateways  []string
}

// Ref names one patch: EnvoyFilter namespace/name and its index in
// configPatches.
type Ref struct {
	Filter string
	Index  int
}

func (r Ref) String() string {
	return fmt.Sprintf("EnvoyFilter %s: configPatches[%d]", r.Filter, r.Index)
}

// Message is a patch that was not applied, and why.
type Message struct {
	Ref
	Text string
}

func (m Message) String() string { return m.Ref.String() + ": " + m.Text }

// Applied is a patch that changed the proxy's configuration.
type Applied struct {
	Ref
	Patch *networking.EnvoyFilter_EnvoyConfigObjectPatch
}

// Result reports what Apply did.
type Result struct {
	// Applied lists the patches that changed something, in order.
	Applied []Applied
	// Messages lists the patches that were skipped.
	Messages []Message
	// RemovedClusters are the clusters patches removed (their endpoints
	// are stale).
	RemovedClusters []string
}

// Select returns the EnvoyFilters among configs that apply to p, in
// application order: those in a root namespace first, then by priority,
// creation time and namespace/name. A filter applies to the proxies of its
// namespace (every namespace for a root namespace) whose labels match its
// workloadSelector, or, with targetRefs, to the gateways it names (kind
// Gateway: proxies labelled gateway.networking.k8s.io/gateway-name).
func Select(configs []*config.Resource, p *model.Proxy, roots []string) []*config.Resource {
	var out []*config.Resource
	for _, r := range configs {
		s, ok := r.Spec.(*networking.EnvoyFilter)
		if !ok || r.Kind != config.KindEnvoyFilter {
			continue
		}
		ns := nsOf(r)
		root := slices.Contains(roots, ns)
		if !root && ns != p.Namespace {
			continue
		}
		if !labelsMatch(s.GetWorkloadSelector().GetLabels(), p.Labels) {
			continue
		}
		if refs := s.GetTargetRefs(); len(refs) > 0 && len(s.GetWorkloadSelector().GetLabels()) == 0 {
			hit := false
			for _, ref := range refs {
				if ref.GetKind() == "Gateway" && (ref.GetNamespace() == "" || ref.GetNamespace() == p.Namespace) &&
					(root || ns == p.Namespace) && p.Labels[GatewayNameLabel] == ref.GetName() && p.Labels[GatewayNameLabel] != "" {
					hit = true
				}
			}
			if !hit {
				continue
			}
		}
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b *config.Resource) int {
		ra, rb := !slices.Contains(roots, nsOf(a)), !slices.Contains(roots, nsOf(b))
		if ra != rb {
			if ra {
				return 1
			}
			return -1
		}
		pa, pb := a.Spec.(*networking.EnvoyFilter).GetPriority(), b.Spec.(*networking.EnvoyFilter).GetPriority()
		if c := cmp.Compare(pa, pb); c != 0 {
			return c
		}
		if c := a.Meta.CreationTimestamp.Compare(b.Meta.CreationTimestamp); c != 0 {
			return c
		}
		return cmp.Compare(nsOf(a)+"/"+a.Meta.Name, nsOf(b)+"/"+b.Meta.Name)
	})
	return out
}

// MetadataKeys returns the node metadata keys EnvoyFilter proxy matches in
// configs read ("ISTIO_VERSION" for proxyVersion), sorted: callers that
// share one translation between proxies must tell proxies apart by them.
func MetadataKeys(configs []*config.Resource) []string {
	keys := map[string]bool{}
	for _, r := range configs {
		s, ok := r.Spec.(*networking.EnvoyFilter)
		if !ok {
			continue
		}
		for _, p := range s.GetConfigPatches() {
			pm := p.GetMatch().GetProxy()
			if pm.GetProxyVersion() != "" {
				keys[ProxyVersionKey] = true
			}
			for k := range pm.GetMetadata() {
				keys[k] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(keys))
}

// ProxyVersionKey is the node metadata field proxyVersion matches.
const ProxyVersionKey = "ISTIO_VERSION"

// level orders patches as Istio applies them: clusters, then listeners
// from the outside in, then routes from the outside in.
func level(a networking.EnvoyFilter_ApplyTo) int {
	switch a {
	case networking.EnvoyFilter_CLUSTER:
		return 0
	case networking.EnvoyFilter_LISTENER:
		return 1
	case networking.EnvoyFilter_LISTENER_FILTER:
		return 2
	case networking.EnvoyFilter_FILTER_CHAIN:
		return 3
	case networking.EnvoyFilter_NETWORK_FILTER:
		return 4
	case networking.EnvoyFilter_HTTP_FILTER:
		return 5
	case networking.EnvoyFilter_ROUTE_CONFIGURATION:
		return 6
	case networking.EnvoyFilter_VIRTUAL_HOST:
		return 7
	case networking.EnvoyFilter_HTTP_ROUTE:
		return 8
	}
	return 9
}

type patch struct {
	Ref
	p *networking.EnvoyFilter_EnvoyConfigObjectPatch
}

// Apply applies the patches of filters (already selected and ordered, see
// Select) to t. Proxyless clients get no patches.
func Apply(filters []*config.Resource, t *Target) *Result {
	res := &Result{}
	if t.Proxy == nil || t.Proxy.Type == model.Proxyless {
		return res
	}
	var ps []patch
	for _, r := range filters {
		s := r.Spec.(*networking.EnvoyFilter)
		for i, p := range s.GetConfigPatches() {
			ps = append(ps, patch{Ref{nsOf(r) + "/" + r.Meta.Name, i}, p})
		}
	}
	slices.SortStableFunc(ps, func(a, b patch) int { return cmp.Compare(level(a.p.GetApplyTo()), level(b.p.GetApplyTo())) })
	exts := extensionConfigs(ps, t, res)
	seen := map[string]bool{}
	for _, p := range ps {
		if p.p.GetApplyTo() == networking.EnvoyFilter_EXTENSION_CONFIG {
			continue // extensionConfigs
		}
		if !proxyMatches(p.p.GetMatch().GetProxy(), t.Proxy) || !contextApplies(p.p.GetMatch().GetContext(), t.Proxy) {
			continue
		}
		tx := &txn{t: t, seen: seen, lis: map[string]*listenerv3.Listener{}, rts: map[string]*routev3.RouteConfiguration{}, cls: map[string]*clusterv3.Cluster{}}
		err := tx.apply(p.p)
		if err == nil {
			err = tx.validate()
		}
		if err != nil {
			res.Messages = append(res.Messages, Message{p.Ref, "skipped: " + cleanErr(err)})
			continue
		}
		if len(tx.lis)+len(tx.rts)+len(tx.cls) == 0 {
			continue
		}
		res.RemovedClusters = append(res.RemovedClusters, tx.commit()...)
		res.Applied = append(res.Applied, Applied{p.Ref, p.p})
	}
	if len(exts) > 0 {
		inlineExtensionConfigs(exts, t, res)
	}
	return res
}

// cleanErr is err's text with the space protobuf-go varies on purpose
// after "proto:" made stable.
func cleanErr(err error) string { return strings.ReplaceAll(err.Error(), "\u00a0", " ") }

func proxyMatches(m *networking.EnvoyFilter_ProxyMatch, p *model.Proxy) bool {
	if m == nil {
		return true
	}
	if v := m.GetProxyVersion(); v != "" {
		re, err := regexp.Compile(v)
		if err != nil || !re.MatchString(p.Metadata[ProxyVersionKey]) {
			return false
		}
	}
	for k, v := range m.GetMetadata() {
		if p.Metadata[k] != v {
			return false
		}
	}
	return true
}

// contextApplies reports whether a patch context can apply to the proxy
// type at all.
func contextApplies(c networking.EnvoyFilter_PatchContext, p *model.Proxy) bool {
	switch c {
	case networking.EnvoyFilter_ANY:
		return true
	case networking.EnvoyFilter_GATEWAY:
		return p.Type == model.Router
	case networking.EnvoyFilter_SIDECAR_INBOUND, networking.EnvoyFilter_SIDECAR_OUTBOUND:
		return p.Type == model.Sidecar
	}
	return false // WAYPOINT: no waypoints here
}

// sideOf is the context of a generated object: GATEWAY on routers, else
// SIDECAR_INBOUND or SIDECAR_OUTBOUND.
func sideOf(p *model.Proxy, inbound bool) networking.EnvoyFilter_PatchContext {
	switch {
	case p.Type == model.Router:
		return networking.EnvoyFilter_GATEWAY
	case inbound:
		return networking.EnvoyFilter_SIDECAR_INBOUND
	}
	return networking.EnvoyFilter_SIDECAR_OUTBOUND
}

func ctxMatch(want, got networking.EnvoyFilter_PatchContext) bool {
	return want == networking.EnvoyFilter_ANY || want == got
}

// txn holds one patch's changes: clones of the resources it changed (nil:
// removed) until they validate.
type txn struct {
	t    *Target
	seen map[string]bool // Anys found valid (validateDeep), shared by the patches of one Apply
	lis  map[string]*listenerv3.Listener
	rts  map[string]*routev3.RouteConfiguration
	cls  map[string]*clusterv3.Cluster
}

func (tx *txn) validate() error {
	seen := tx.seen
	for _, n := range slices.Sorted(maps.Keys(tx.cls)) {
		if c := tx.cls[n]; c != nil {
			if err := validateDeep(c, seen); err != nil {
				return fmt.Errorf("cluster %q would be invalid: %w", n, err)
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(tx.lis)) {
		if l := tx.lis[n]; l != nil {
			if err := validateDeep(l, seen); err != nil {
				return fmt.Errorf("listener %q would be invalid: %w", n, err)
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(tx.rts)) {
		if r := tx.rts[n]; r != nil {
			if err := validateDeep(r, seen); err != nil {
				return fmt.Errorf("route configuration %q would be invalid: %w", n, err)
			}
		}
	}
	return nil
}

func (tx *txn) commit() (removedClusters []string) {
	for n, l := range tx.lis {
		if l == nil {
			delete(tx.t.Listeners, n)
		} else {
			tx.t.Listeners[n] = l
		}
	}
	for n, r := range tx.rts {
		if r == nil {
			delete(tx.t.Routes, n)
		} else {
			tx.t.Routes[n] = r
		}
	}
	for n, c := range tx.cls {
		if c == nil {
			delete(tx.t.Clusters, n)
			removedClusters = append(removedClusters, n)
		} else {
			tx.t.Clusters[n] = c
		}
	}
	slices.Sort(removedClusters)
	return removedClusters
}

func (tx *txn) apply(p *networking.EnvoyFilter_EnvoyConfigObjectPatch) error {
	switch p.GetApplyTo() {
	case networking.EnvoyFilter_CLUSTER:
		return tx.patchClusters(p)
	case networking.EnvoyFilter_LISTENER, networking.EnvoyFilter_LISTENER_FILTER, networking.EnvoyFilter_FILTER_CHAIN,
		networking.EnvoyFilter_NETWORK_FILTER, networking.EnvoyFilter_HTTP_FILTER:
		return tx.patchListeners(p)
	case networking.EnvoyFilter_ROUTE_CONFIGURATION, networking.EnvoyFilter_VIRTUAL_HOST, networking.EnvoyFilter_HTTP_ROUTE:
		return tx.patchRoutes(p)
	case networking.EnvoyFilter_BOOTSTRAP:
		return fmt.Errorf("applyTo BOOTSTRAP: weft proxies take no bootstrap patches")
	}
	return fmt.Errorf("applyTo %s is not supported", p.GetApplyTo())
}

// --- clusters ---

func (tx *txn) patchClusters(p *networking.EnvoyFilter_EnvoyConfigObjectPatch) error {
	op := p.GetPatch().GetOperation()
	m := p.GetMatch()
	if op == networking.EnvoyFilter_Patch_ADD {
		c := &clusterv3.Cluster{}
		if err := decode(p.GetPatch().GetValue(), c); err != nil {
			return err
		}
		if c.GetName() == "" {
			return fmt.Errorf("patch.value.name is required to ADD a cluster")
		}
		if _, ok := tx.t.Clusters[c.GetName()]; ok {
			return fmt.Errorf("cluster %q already exists", c.GetName())
		}
		tx.cls[c.GetName()] = c
		return nil
	}
	var val *clusterv3.Cluster
	if op == networking.EnvoyFilter_Patch_MERGE || op == networking.EnvoyFilter_Patch_MERGE_AND_REPLACE_LIST || op == networking.EnvoyFilter_Patch_REPLACE {
		val = &clusterv3.Cluster{}
		if err := decode(p.GetPatch().GetValue(), val); err != nil {
			return err
		}
	}
	for _, n := range slices.Sorted(maps.Keys(tx.t.Clusters)) {
		c := tx.t.Clusters[n]
		if !ctxMatch(m.GetContext(), sideOf(tx.t.Proxy, strings.HasPrefix(n, "inbound|"))) || !clusterMatches(m.GetCluster(), n) {
			continue
		}
		switch op {
		case networking.EnvoyFilter_Patch_REMOVE:
			tx.cls[n] = nil
		case networking.EnvoyFilter_Patch_MERGE, networking.EnvoyFilter_Patch_MERGE_AND_REPLACE_LIST:
			w := proto.Clone(c).(*clusterv3.Cluster)
			if err := merge(w, val, op == networking.EnvoyFilter_Patch_MERGE_AND_REPLACE_LIST); err != nil {
				return err
			}
			tx.cls[n] = w
		case networking.EnvoyFilter_Patch_REPLACE:
			w := proto.Clone(val).(*clusterv3.Cluster)
			w.Name = n
			tx.cls[n] = w
		default:
			return fmt.Errorf("operation %s is not supported for CLUSTER", op)
		}
	}
	return nil
}

// clusterMatches applies a cluster match to a cluster name
// (DIRECTION|PORT|SUBSET|HOST for generated clusters).
func clusterMatches(m *networking.EnvoyFilter_ClusterMatch, name string) bool {
	if m == nil {
		return true
	}
	if m.GetName() != "" && m.GetName() != name {
		return false
	}
	parts := strings.Split(name, "|")
	var port, subset, host string
	if len(parts) == 4 {
		port, subset, host = parts[1], parts[2], parts[3]
	}
	if m.GetPortNumber() != 0 && port != strconv.Itoa(int(m.GetPortNumber())) {
		return false
	}
	if m.GetSubset() != "" && m.GetSubset() != subset {
		return false
	}
	if m.GetService() != "" && !hostMatch(m.GetService(), host) {
		return false
	}
	return true
}

// --- helpers ---

func nsOf(r *config.Resource) string {
	if r.Meta.Namespace == "" {
		return config.DefaultNamespace
	}
	return r.Meta.Namespace
}

func labelsMatch(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func hostMatch(pattern, host string) bool {
	if strings.HasPrefix(pattern, "*") {
		return strings.HasSuffix(host, pattern[1:])
	}
	return pattern == host
}

// canonical maps deprecated filter names to the current ones, as Istio
// does.
func canonical(name string) string {
	switch name {
	case "envoy.http_connection_manager":
		return HCMName
	case "envoy.tcp_proxy":
		return "envoy.filters.network.tcp_proxy"
	case "envoy.router":
		return "envoy.filters.http.router"
	case "envoy.cors":
		return "envoy.filters.http.cors"
	case "envoy.fault":
		return "envoy.filters.http.fault"
	case "envoy.lua":
		return "envoy.filters.http.lua"
	case "envoy.filters.http.ext_authz", "envoy.ext_authz":
		return "envoy.filters.http.ext_authz"
	case "envoy.listener.tls_inspector":
		return "envoy.filters.listener.tls_inspector"
	case "envoy.listener.original_dst":
		return "envoy.filters.listener.original_dst"
	case "envoy.listener.http_inspector":
		return "envoy.filters.listener.http_inspector"
	}
	return name
}

func nameIs(want, got string) bool { return canonical(want) == canonical(got) }

// listOp applies a list operation to list. match selects targets and the
// anchor of relative inserts (nil: no match given: INSERT_BEFORE inserts
// first, INSERT_AFTER last, MERGE/REMOVE apply to every element, REPLACE
// to none). value builds the element to insert or the replacement; mergeInto
// merges the patch into an element (which belongs to a clone and may be
// modified). It reports whether the list changed.
func listOp[T any](list []T, op networking.EnvoyFilter_Patch_Operation, match func(T) bool, value func() (T, error), mergeInto func(T) error) ([]T, bool, error) {
	first := -1
	for i, e := range list {
		if match == nil || match(e) {
			first = i
			break
		}
	}
	switch op {
	case networking.EnvoyFilter_Patch_ADD, networking.EnvoyFilter_Patch_INSERT_FIRST,
		networking.EnvoyFilter_Patch_INSERT_BEFORE, networking.EnvoyFilter_Patch_INSERT_AFTER:
		at := -1
		switch op {
		case networking.EnvoyFilter_Patch_ADD:
			at = len(list)
		case networking.EnvoyFilter_Patch_INSERT_FIRST:
			at = 0
		case networking.EnvoyFilter_Patch_INSERT_BEFORE:
			if match == nil {
				at = 0
			} else {
				at = first
			}
		case networking.EnvoyFilter_Patch_INSERT_AFTER:
			if match == nil {
				at = len(list)
			} else if first >= 0 {
				at = first + 1
			}
		}
		if at < 0 {
			return list, false, nil
		}
		v, err := value()
		if err != nil {
			return list, false, err
		}
		return slices.Insert(slices.Clone(list), at, v), true, nil
	case networking.EnvoyFilter_Patch_REMOVE:
		out := slices.DeleteFunc(slices.Clone(list), func(e T) bool { return match == nil || match(e) })
		return out, len(out) != len(list), nil
	case networking.EnvoyFilter_Patch_REPLACE:
		if match == nil || first < 0 {
			return list, false, nil
		}
		out := slices.Clone(list)
		for i, e := range out {
			if match(e) {
				v, err := value()
				if err != nil {
					return list, false, err
				}
				out[i] = v
			}
		}
		return out, true, nil
	case networking.EnvoyFilter_Patch_MERGE, networking.EnvoyFilter_Patch_MERGE_AND_REPLACE_LIST:
		changed := false
		for _, e := range list {
			if match == nil || match(e) {
				if err := mergeInto(e); err != nil {
					return list, false, err
				}
				changed = true
			}
		}
		return list, changed, nil
	}
	return list, false, fmt.Errorf("operation %s is not supported here", op)
}
