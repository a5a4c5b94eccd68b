package translate

import (
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
)

// Istio's TCP metadata exchange (pkg/proxy/peerexchange), emitted as
// Istio's translator does: the istio.metadata_exchange network filter
// first on the sidecar's inbound filter chains, the cluster filter of the
// same name on outbound clusters, both configured with the ALPN protocol
// that turns it on. Inbound mTLS chains for opaque TCP offer that protocol
// (istio-peer-exchange), HTTP chains do not, so the exchange only ever
// runs on TCP. Differences from Istio: emitted only when the mesh has a CA
// (the exchange needs mutual TLS) and on clusters with ISTIO_MUTUAL
// transport (Istio puts it on every outbound cluster, where it is inert
// without the ALPN), and without `enable_discovery` (no workload
// discovery service here).

// metadataExchangeConfig is the filters' typed config: a TypedStruct of
// envoy.tcp.metadataexchange.config.MetadataExchange, whose proto weft
// does not compile in (neither does Istio's translator).
func metadataExchangeConfig() *anypb.Any {
	return mustAny(&xdstypev3.TypedStruct{TypeUrl: peerexchange.ConfigTypeURL, Value: &structpb.Struct{Fields: map[string]*structpb.Value{
		"protocol": structpb.NewStringValue(peerexchange.Protocol),
	}}})
}

func metadataExchangeClusterFilter() *clusterv3.Filter {
	return &clusterv3.Filter{Name: peerexchange.FilterName, TypedConfig: metadataExchangeConfig()}
}

func metadataExchangeNetworkFilter() *listenerv3.Filter {
	return &listenerv3.Filter{Name: peerexchange.FilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: metadataExchangeConfig()}}
}

// addInboundMetadataExchange puts the exchange filter first on fc (Istio:
// before RBAC, so policies and telemetry can see the peer).
func addInboundMetadataExchange(fc *listenerv3.FilterChain) {
	for _, f := range fc.GetFilters() {
		if f.GetName() == peerexchange.FilterName {
			return
		}
	}
	fc.Filters = append([]*listenerv3.Filter{metadataExchangeNetworkFilter()}, fc.Filters...)
}
