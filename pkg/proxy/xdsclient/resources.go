// Package xdsclient is the proxy's Aggregated Discovery Service client:
// xDS v3 over one gRPC stream, state of the world or delta with VHDS
// (Config.Delta, see delta.go). It subscribes to all
// listeners and clusters, follows the route and endpoint names they
// reference, validates every update through a caller-supplied Update
// callback, ACKs what was applied and NACKs (with error_detail) what was
// not, keeping the last good set. It reconnects with exponential backoff
// and jitter; the caller keeps serving its last config meanwhile.
package xdsclient

import (
	"fmt"
	"maps"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resources the client subscribes to.
const (
	typePrefix   = "type.googleapis.com/"
	ListenerType = typePrefix + "envoy.config.listener.v3.Listener"
	ClusterType  = typePrefix + "envoy.config.cluster.v3.Cluster"
	RouteType    = typePrefix + "envoy.config.route.v3.RouteConfiguration"
	EndpointType = typePrefix + "envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// Resources is one immutable set of xDS resources, keyed by name. A value
// handed to Update must not be modified by the callee.
type Resources struct {
	Listeners map[string]*listenerv3.Listener
	Clusters  map[string]*clusterv3.Cluster
	Routes    map[string]*routev3.RouteConfiguration
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
	// Versions maps a type URL to the version_info last accepted for it.
	Versions map[string]string
	// Received records which type URLs had at least one accepted response.
	Received map[string]bool
}

// NewResources returns an empty set.
func NewResources() *Resources {
	return &Resources{
		Listeners: map[string]*listenerv3.Listener{},
		Clusters:  map[string]*clusterv3.Cluster{},
		Routes:    map[string]*routev3.RouteConfiguration{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Versions:  map[string]string{},
		Received:  map[string]bool{},
	}
}

func (r *Resources) clone() *Resources {
	return &Resources{
		Listeners: maps.Clone(r.Listeners),
		Clusters:  maps.Clone(r.Clusters),
		Routes:    maps.Clone(r.Routes),
		Endpoints: maps.Clone(r.Endpoints),
		Versions:  maps.Clone(r.Versions),
		Received:  maps.Clone(r.Received),
	}
}

// RouteNames returns the sorted RDS names referenced by HTTP connection
// managers of the listeners.
func (r *Resources) RouteNames() []string {
	set := map[string]bool{}
	for _, l := range r.Listeners {
		for _, h := range ListenerHCMs(l) {
			if rds := h.GetRds(); rds != nil && rds.GetRouteConfigName() != "" {
				set[rds.GetRouteConfigName()] = true
			}
		}
	}
	return sortedKeys(set)
}

// EndpointNames returns the sorted EDS service names of EDS clusters.
func (r *Resources) EndpointNames() []string {
	set := map[string]bool{}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS {
			set[EDSName(c)] = true
		}
	}
	return sortedKeys(set)
}

// EDSName is the ClusterLoadAssignment name an EDS cluster asks for.
func EDSName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// Complete reports whether listeners and clusters were received and every
// referenced route configuration and load assignment is present.
func (r *Resources) Complete() bool {
	if !r.Received[ListenerType] || !r.Received[ClusterType] {
		return false
	}
	for _, n := range r.RouteNames() {
		if r.Routes[n] == nil {
			return false
		}
	}
	for _, n := range r.EndpointNames() {
		if r.Endpoints[n] == nil {
			return false
		}
	}
	return true
}

// ListenerHCMs returns the HTTP connection managers configured in the
// listener's filter chains (including the default chain and api_listener).
func ListenerHCMs(l *listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	var out []*hcmv3.HttpConnectionManager
	chains := append([]*listenerv3.FilterChain{}, l.GetFilterChains()...)
	if l.GetDefaultFilterChain() != nil {
		chains = append(chains, l.GetDefaultFilterChain())
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			if h := decodeHCM(f.GetTypedConfig()); h != nil {
				out = append(out, h)
			}
		}
	}
	if api := l.GetApiListener().GetApiListener(); api != nil {
		if h := decodeHCM(api); h != nil {
			out = append(out, h)
		}
	}
	return out
}

func decodeHCM(a *anypb.Any) *hcmv3.HttpConnectionManager {
	if a == nil {
		return nil
	}
	h := &hcmv3.HttpConnectionManager{}
	if a.MessageIs(h) && a.UnmarshalTo(h) == nil {
		return h
	}
	return nil
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type validator interface {
	proto.Message
	Validate() error
}

// decode unmarshals and validates the resources of one response into a
// name-keyed map. Any invalid resource rejects the whole response.
func decode[T validator](typeURL string, in []*anypb.Any, newT func() T, name func(T) string) (map[string]T, error) {
	out := make(map[string]T, len(in))
	for i, a := range in {
		if a.GetTypeUrl() != typeURL {
			return nil, fmt.Errorf("resource %d: type %q in a %q response", i, a.GetTypeUrl(), typeURL)
		}
		m := newT()
		if err := a.UnmarshalTo(m); err != nil {
			return nil, fmt.Errorf("resource %d: unmarshal: %w", i, err)
		}
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("resource %q: %w", name(m), err)
		}
		n := name(m)
		if n == "" {
			return nil, fmt.Errorf("resource %d: empty name", i)
		}
		if _, dup := out[n]; dup {
			return nil, fmt.Errorf("resource %q: duplicate name", n)
		}
		out[n] = m
	}
	return out, nil
}

// apply returns a copy of r with the response's resources replacing the
// previous ones of that type (state of the world).
func (r *Resources) apply(typeURL, version string, in []*anypb.Any) (*Resources, error) {
	next := r.clone()
	var err error
	switch typeURL {
	case ListenerType:
		next.Listeners, err = decode(typeURL, in, func() *listenerv3.Listener { return &listenerv3.Listener{} },
			(*listenerv3.Listener).GetName)
	case ClusterType:
		next.Clusters, err = decode(typeURL, in, func() *clusterv3.Cluster { return &clusterv3.Cluster{} },
			(*clusterv3.Cluster).GetName)
	case RouteType:
		next.Routes, err = decode(typeURL, in, func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} },
			(*routev3.RouteConfiguration).GetName)
	case EndpointType:
		next.Endpoints, err = decode(typeURL, in, func() *endpointv3.ClusterLoadAssignment { return &endpointv3.ClusterLoadAssignment{} },
			(*endpointv3.ClusterLoadAssignment).GetClusterName)
	default:
		return nil, fmt.Errorf("unsupported type %q", typeURL)
	}
	if err != nil {
		return nil, err
	}
	next.Versions[typeURL] = version
	next.Received[typeURL] = true
	return next, nil
}
