// Package xdstest runs go-control-plane's own ADS server with a snapshot
// cache in-process, and builds Envoy resources that follow
// docs/xds-conventions.md, for the proxy's tests.
package xdstest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// NodeID is the node ID of the test proxies' default identity.
func NodeID(workload, ns string) string {
	return fmt.Sprintf("sidecar~127.0.0.1~%s.%s~%s.svc.cluster.local", workload, ns, ns)
}

// ControlPlane is an in-process go-control-plane ADS server.
type ControlPlane struct {
	Cache cachev3.SnapshotCache
	Addr  string

	mu      sync.Mutex
	srv     *grpc.Server
	version int
	NACKs   chan *discoveryv3.DiscoveryRequest
}

// Start starts a control plane on 127.0.0.1:0.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{Cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), NACKs: make(chan *discoveryv3.DiscoveryRequest, 16)}
	if err := cp.serve("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

func (cp *ControlPlane) serve(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
		if r.GetErrorDetail() != nil {
			select {
			case cp.NACKs <- r:
			default:
			}
		}
		return nil
	}}
	s := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s, serverv3.NewServer(context.Background(), cp.Cache, cb))
	cp.mu.Lock()
	cp.srv, cp.Addr = s, l.Addr().String()
	cp.mu.Unlock()
	go func() { _ = s.Serve(l) }()
	return nil
}

// Stop stops the gRPC server (streams are cut).
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	s := cp.srv
	cp.srv = nil
	cp.mu.Unlock()
	if s != nil {
		s.Stop()
	}
}

// Restart serves again on the same address, with the same cache.
func (cp *ControlPlane) Restart() error {
	var err error
	for i := 0; i < 50; i++ {
		if err = cp.serve(cp.Addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Set publishes resources for a node as a new snapshot version.
func (cp *ControlPlane) Set(t testing.TB, node string, r *Resources) {
	t.Helper()
	cp.mu.Lock()
	cp.version++
	v := strconv.Itoa(cp.version)
	cp.mu.Unlock()
	snap, err := cachev3.NewSnapshot(v, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: r.Listeners, resourcev3.ClusterType: r.Clusters,
		resourcev3.RouteType: r.Routes, resourcev3.EndpointType: r.Endpoints,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Cache.SetSnapshot(context.Background(), node, snap); err != nil {
		t.Fatal(err)
	}
}

// Resources is a set to publish.
type Resources struct {
	Listeners, Clusters, Routes, Endpoints []types.Resource
}

// HTTPListener is the outbound listener 0.0.0.0_PORT with RDS "PORT".
func HTTPListener(port int) *listenerv3.Listener {
	rtr, _ := anypb.New(&routerv3.Router{})
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_" + strconv.Itoa(port),
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: strconv.Itoa(port),
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rtr}}},
	}
	a, _ := anypb.New(h)
	return &listenerv3.Listener{
		Name:    "0.0.0.0_" + strconv.Itoa(port),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}}}},
	}
}

// EDSCluster is an EDS cluster named name (ROUND_ROBIN unless changed).
func EDSCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		ConnectTimeout:       durationpb.New(time.Second),
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name,
			EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}},
	}
}

// Endpoints is a load assignment for cluster name with hosts (host:port).
func Endpoints(name, workload string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		port, _ := strconv.Atoi(p)
		md, _ := structpb.NewStruct(map[string]any{"workload": workload})
		eps = append(eps, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": md}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality: &corev3.Locality{}, LbEndpoints: eps}}}
}

// RouteConfig builds RouteConfiguration "PORT" with one virtual host for
// host (domains host and host:port) holding routes.
func RouteConfig(port int, host string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: strconv.Itoa(port), VirtualHosts: []*routev3.VirtualHost{{
		Name: host + ":" + strconv.Itoa(port), Domains: []string{host, host + ":" + strconv.Itoa(port)}, Routes: routes}}}
}

// ToCluster is a catch-all (prefix "/") route to cluster.
func ToCluster(name, cluster string) *routev3.Route {
	return &routev3.Route{Name: name, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}
