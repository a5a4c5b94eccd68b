package envoyfilter

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestMerge(t *testing.T) {
	t.Parallel()
	tcp := func(prefix, cluster string) *listenerv3.Filter {
		return &listenerv3.Filter{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpv3.TcpProxy{
			StatPrefix: prefix, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})}}
	}
	tests := []struct {
		name         string
		dst, src     proto.Message
		replaceLists bool
		want         proto.Message
	}{
		{"duration replaced as a whole",
			&clusterv3.Cluster{Name: "c", ConnectTimeout: &durationpb.Duration{Seconds: 15, Nanos: 5e8}},
			&clusterv3.Cluster{ConnectTimeout: &durationpb.Duration{Seconds: 5}}, false,
			&clusterv3.Cluster{Name: "c", ConnectTimeout: &durationpb.Duration{Seconds: 5}}},
		{"lists append",
			&clusterv3.Cluster{Name: "c", DnsLookupFamily: clusterv3.Cluster_V4_ONLY, HealthChecks: nil, Metadata: nil,
				CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}}}},
			&clusterv3.Cluster{CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(2)}}}}, false,
			&clusterv3.Cluster{Name: "c", DnsLookupFamily: clusterv3.Cluster_V4_ONLY,
				CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}, {MaxConnections: wrapperspb.UInt32(2)}}}}},
		{"lists replaced (MERGE_AND_REPLACE_LIST)",
			&clusterv3.Cluster{Name: "c", CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}}}},
			&clusterv3.Cluster{CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(2)}}}}, true,
			&clusterv3.Cluster{Name: "c", CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(2)}}}}},
		{"Any of the same type merges fields",
			tcp("old", "a"), &listenerv3.Filter{ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tcpv3.TcpProxy{StatPrefix: "new"})}}, false,
			tcp("new", "a")},
		{"Any of another type replaces",
			tcp("old", "a"), &listenerv3.Filter{ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{SuppressEnvoyHeaders: true})}}, false,
			&listenerv3.Filter{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{SuppressEnvoyHeaders: true})}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := merge(tc.dst, tc.src, tc.replaceLists); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, tc.dst, protocmp.Transform()); d != "" {
				t.Errorf("merge (-want +got):\n%s", d)
			}
		})
	}
	if err := merge(&clusterv3.Cluster{}, &listenerv3.Listener{}, false); err == nil {
		t.Error("merging different types: want an error")
	}
}
