package translate

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	matchv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/matcher/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// ClusterName returns Istio's outbound cluster name outbound|PORT|SUBSET|HOST.
func ClusterName(port uint32, subset, host string) string {
	return "outbound|" + strconv.Itoa(int(port)) + "|" + subset + "|" + host
}

// InboundClusterName returns inbound|PORT||.
func InboundClusterName(port uint32) string { return "inbound|" + strconv.Itoa(int(port)) + "||" }

const (
	defaultConnectTimeout  = 10 * time.Second
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	tlsTransportSocket     = "envoy.transport_sockets.tls"
)

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// SDSCluster is the bootstrap cluster through which an Envoy reaches the
// SDS server next to it (weft proxy --sds-socket), as in Istio's bootstrap.
const SDSCluster = "sds-grpc"

// workloadSDS is the sds_config of the workload secrets ("default",
// "ROOTCA"): as in Istio, served by the proxy-local SDS server over gRPC
// through the bootstrap cluster SDSCluster, not by the control plane.
func workloadSDS() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:                   corev3.ApiConfigSource_GRPC,
			TransportApiVersion:       corev3.ApiVersion_V3,
			SetNodeOnFirstMessageOnly: true,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: SDSCluster},
			}}},
		}},
		InitialFetchTimeout: durationpb.New(0),
		ResourceApiVersion:  corev3.ApiVersion_V3,
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		// anypb.New fails only for messages that cannot be marshalled,
		// which generated Envoy types always can.
		panic(fmt.Sprintf("translate: marshal %T: %v", m, err))
	}
	return a
}

func socketAddress(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// destinationRule returns the DestinationRule for host as Istio picks it:
// the proxy's namespace first, then the service's namespace, then the root
// namespace, then any other exported one.
func (b *builder) destinationRule(host string) (*networking.DestinationRule, *config.Resource) {
	svcNS := ""
	if s := b.service(host); s != nil {
		svcNS = s.Namespace
	}
	var best *config.Resource
	bestRank, bestIdx := 99, 0
	cands := append(append([]int(nil), b.drExact[host]...), b.drWild...)
	for _, i := range cands {
		c, h := b.drs[i], b.drHosts[i]
		if !hostMatch(h, host) {
			continue
		}
		rank := 3
		switch ns := nsOf(c); {
		case ns == b.p.Namespace:
			rank = 0
		case ns == svcNS:
			rank = 1
		case b.root[ns]:
			rank = 2
		}
		if h != host {
			rank += 4 // wildcard hosts lose to exact ones
		}
		if rank < bestRank || (rank == bestRank && i < bestIdx) {
			best, bestRank, bestIdx = c, rank, i
		}
	}
	if best == nil {
		return nil, nil
	}
	return best.Spec.(*networking.DestinationRule), best
}

// mergePolicy overlays over's set fields (each as a whole, as Istio does)
// onto base, then the port-level settings for port.
func mergePolicy(base, over *networking.TrafficPolicy, port uint32) *networking.TrafficPolicy {
	out := &networking.TrafficPolicy{}
	apply := func(tp *networking.TrafficPolicy) {
		if tp == nil {
			return
		}
		if tp.LoadBalancer != nil {
			out.LoadBalancer = tp.LoadBalancer
		}
		if tp.ConnectionPool != nil {
			out.ConnectionPool = tp.ConnectionPool
		}
		if tp.OutlierDetection != nil {
			out.OutlierDetection = tp.OutlierDetection
		}
		if tp.Tls != nil {
			out.Tls = tp.Tls
		}
		if tp.ProxyProtocol != nil {
			out.ProxyProtocol = tp.ProxyProtocol
		}
		if tp.RetryBudget != nil {
			out.RetryBudget = tp.RetryBudget
		}
		for _, pl := range tp.GetPortLevelSettings() {
			if pl.GetPort().GetNumber() != port {
				continue
			}
			if pl.LoadBalancer != nil {
				out.LoadBalancer = pl.LoadBalancer
			}
			if pl.ConnectionPool != nil {
				out.ConnectionPool = pl.ConnectionPool
			}
			if pl.OutlierDetection != nil {
				out.OutlierDetection = pl.OutlierDetection
			}
			if pl.Tls != nil {
				out.Tls = pl.Tls
			}
		}
	}
	apply(base)
	apply(over)
	return out
}

// buildClusters emits outbound clusters (and EDS) for every port of svc,
// plus one per DestinationRule subset.
func (b *builder) buildClusters(svc *registry.Service) {
	if b.skipClusters {
		return // a Cache reuses the previous push's (NewCacheFrom)
	}
	dr, _ := b.destinationRule(svc.Hostname)
	for _, port := range svc.Ports {
		policy := mergePolicy(dr.GetTrafficPolicy(), nil, port.Number)
		b.addCluster(svc, port, "", nil, policy)
		for _, ss := range dr.GetSubsets() {
			b.addCluster(svc, port, ss.GetName(), ss.GetLabels(), mergePolicy(dr.GetTrafficPolicy(), ss.GetTrafficPolicy(), port.Number))
		}
	}
}

func (b *builder) addCluster(svc *registry.Service, port registry.Port, subset string, labels map[string]string, tp *networking.TrafficPolicy) {
	name := ClusterName(port.Number, subset, svc.Hostname)
	c := &clusterv3.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(defaultConnectTimeout),
		// Istio's default since 1.14 (LEAST_REQUEST); proxyless gRPC
		// clients get ROUND_ROBIN, as Istio sends them.
		LbPolicy: clusterv3.Cluster_LEAST_REQUEST,
	}
	if b.p.Type == model.Proxyless {
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	}
	cla := b.loadAssignment(name, svc, port, labels, tp)
	switch {
	case svc.Resolution == registry.ResolutionDNS || svc.Resolution == registry.ResolutionDNSRoundRobin:
		t := clusterv3.Cluster_STRICT_DNS
		if svc.Resolution == registry.ResolutionDNSRoundRobin || b.p.Type == model.Proxyless {
			// gRPC clients support LOGICAL_DNS only.
			t = clusterv3.Cluster_LOGICAL_DNS
		}
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: t}
		c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
		if len(cla.Endpoints) == 0 {
			// No endpoints: the host itself is resolved.
			cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
				Locality:            &corev3.Locality{},
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(svc.Hostname, port.Number, 1, svc.Hostname)},
			}}
		}
		if t == clusterv3.Cluster_LOGICAL_DNS && len(cla.Endpoints) > 0 {
			// LOGICAL_DNS takes exactly one endpoint.
			first := cla.Endpoints[0]
			first.LbEndpoints = first.LbEndpoints[:1]
			cla.Endpoints = cla.Endpoints[:1]
		}
		c.LoadAssignment = cla
	case svc.Resolution == registry.ResolutionNone && len(b.reg.EndpointsOf(svc.Hostname)) == 0:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	default:
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name}
		b.endpoints[name] = cla
	}
	proto := protocolOf(port)
	applyLB(c, tp.GetLoadBalancer())
	applyWarmup(c, tp.GetLoadBalancer())
	opts := applyConnectionPool(c, tp.GetConnectionPool())
	applyRetryBudget(c, tp.GetRetryBudget())
	if isHTTP2(proto) && !tp.GetConnectionPool().GetHttp().GetUseClientProtocol() {
		if opts == nil {
			opts = &httpv3.HttpProtocolOptions{}
		}
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	}
	if m := outlierErrorMatcher(tp.GetOutlierDetection().GetOutlierDetectionHttpErrorCodes()); m != nil {
		if opts == nil {
			opts = &httpv3.HttpProtocolOptions{}
		}
		opts.OutlierDetection = &httpv3.HttpProtocolOptions_OutlierDetection{ErrorMatcher: m}
	}
	if opts != nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(opts)}
	}
	c.OutlierDetection = outlier(tp.GetOutlierDetection())
	if od := tp.GetOutlierDetection(); od != nil {
		// Like Istio: always set the panic threshold with outlier detection,
		// so minHealthPercent 0 (the default) disables panic mode instead of
		// leaving Envoy's 50 %.
		if c.CommonLbConfig == nil {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}
		c.CommonLbConfig.HealthyPanicThreshold = &typev3.Percent{Value: float64(od.GetMinHealthPercent())}
	}
	c.TransportSocket = upstreamTLS(tp.GetTls(), svc.Hostname, port.Number, b.credential)
	meshTLS := tp.GetTls().GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL
	if ts := b.autoMTLS(tp, svc, port, labels); ts != nil {
		c.TransportSocket, meshTLS = ts, true
	}
	if meshTLS { // Istio's TCP metadata exchange (see peerexchange.go)
		c.Filters = append(c.Filters, metadataExchangeClusterFilter())
	}
	c.TransportSocket = wrapProxyProtocol(c.TransportSocket, tp.GetProxyProtocol())
	b.clusters[name] = c
}

// Transport socket names of Envoy's upstream PROXY protocol wrapper and
// of the plain socket it wraps when the cluster has no TLS.
const (
	proxyProtocolTransportSocket = "envoy.transport_sockets.upstream_proxy_protocol"
	rawBufferTransportSocket     = "envoy.transport_sockets.raw_buffer"
)

// wrapProxyProtocol is DestinationRule trafficPolicy.proxyProtocol as
// Istio sends it: the cluster's transport socket (TLS, or a raw_buffer
// one when there is none) wrapped in upstream_proxy_protocol, so the
// PROXY header goes first on each upstream connection, then TLS.
func wrapProxyProtocol(ts *corev3.TransportSocket, pp *networking.TrafficPolicy_ProxyProtocol) *corev3.TransportSocket {
	if pp == nil {
		return ts
	}
	if ts == nil {
		ts = &corev3.TransportSocket{Name: rawBufferTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})}}
	}
	version := corev3.ProxyProtocolConfig_V1
	if pp.GetVersion() == networking.TrafficPolicy_ProxyProtocol_V2 {
		version = corev3.ProxyProtocolConfig_V2
	}
	return &corev3.TransportSocket{Name: proxyProtocolTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&proxyprotocolv3.ProxyProtocolUpstreamTransport{
		Config:          &corev3.ProxyProtocolConfig{Version: version},
		TransportSocket: ts,
	})}}
}

// applyWarmup is loadBalancer.warmup (or the older warmupDurationSecs) as
// Istio sends it: Envoy's slow_start_config, only on ROUND_ROBIN and
// LEAST_REQUEST clusters (the policies Envoy's slow start supports).
// minimumPercent and aggression are sent only when set (Envoy's defaults:
// 10 % and 1.0).
func applyWarmup(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings) {
	var ss *clusterv3.Cluster_SlowStartConfig
	switch w := lb.GetWarmup(); {
	case w != nil && w.GetDuration() != nil:
		ss = &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(w.GetDuration().AsDuration())}
		if a := w.GetAggression(); a != nil {
			ss.Aggression = &corev3.RuntimeDouble{DefaultValue: a.GetValue(), RuntimeKey: "upstream.slow_start.aggression"}
		}
		if m := w.GetMinimumPercent(); m != nil {
			ss.MinWeightPercent = &typev3.Percent{Value: m.GetValue()}
		}
	case lb.GetWarmupDurationSecs() != nil:
		ss = &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(lb.GetWarmupDurationSecs().AsDuration())}
	default:
		return
	}
	switch c.LbPolicy {
	case clusterv3.Cluster_ROUND_ROBIN:
		c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: ss}}
	case clusterv3.Cluster_LEAST_REQUEST:
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: ss}}
	}
}

// applyRetryBudget is trafficPolicy.retryBudget as Istio sends it:
// circuit_breakers.thresholds.retry_budget with Istio's defaults (20 %,
// minimum concurrency 3) for unset fields; Envoy then ignores max_retries.
func applyRetryBudget(c *clusterv3.Cluster, rb *networking.TrafficPolicy_RetryBudget) {
	if rb == nil {
		return
	}
	budget := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
		BudgetPercent:       &typev3.Percent{Value: 20},
		MinRetryConcurrency: wrapperspb.UInt32(3),
	}
	if p := rb.GetPercent(); p != nil {
		budget.BudgetPercent.Value = p.GetValue()
	}
	if n := rb.GetMinRetryConcurrency(); n > 0 {
		budget.MinRetryConcurrency.Value = n
	}
	if iv := rb.GetBudgetInterval(); iv != nil && iv.AsDuration() > 0 {
		budget.BudgetInterval = durationpb.New(iv.AsDuration())
	}
	if c.CircuitBreakers == nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}}
	}
	c.CircuitBreakers.Thresholds[0].RetryBudget = budget
}

// outlierErrorMatcher is outlierDetection.outlierDetectionHttpErrorCodes
// as Istio sends it: HttpProtocolOptions.outlier_detection.error_matcher
// matching a response whose :status is one of codes (the response counts
// as an outlier-detection error, any other response as a success); nil
// when codes is empty.
func outlierErrorMatcher(codes []uint32) *matchv3.MatchPredicate {
	if len(codes) == 0 {
		return nil
	}
	rules := make([]*matchv3.MatchPredicate, 0, len(codes))
	for _, code := range codes {
		rules = append(rules, &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_HttpResponseHeadersMatch{
			HttpResponseHeadersMatch: &matchv3.HttpHeadersMatch{Headers: []*routev3.HeaderMatcher{{
				Name: ":status",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: strconv.Itoa(int(code))}}},
			}}},
		}})
	}
	if len(rules) == 1 {
		return rules[0]
	}
	return &matchv3.MatchPredicate{Rule: &matchv3.MatchPredicate_OrMatch{OrMatch: &matchv3.MatchPredicate_MatchSet{Rules: rules}}}
}

func applyLB(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	switch {
	case lb.GetConsistentHash() != nil:
		ch := lb.GetConsistentHash()
		if mg := ch.GetMaglev(); mg != nil {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			if mg.GetTableSize() > 0 {
				c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(mg.GetTableSize())}}
			}
			return
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		size := ch.GetRingHash().GetMinimumRingSize()
		if size == 0 {
			size = ch.GetMinimumRingSize()
		}
		if size > 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(size)}}
		}
	default:
		if _, ok := lb.GetLbPolicy().(*networking.LoadBalancerSettings_Simple); !ok {
			return
		}
		switch lb.GetSimple() {
		case networking.LoadBalancerSettings_LEAST_CONN, networking.LoadBalancerSettings_LEAST_REQUEST:
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		case networking.LoadBalancerSettings_RANDOM:
			c.LbPolicy = clusterv3.Cluster_RANDOM
		case networking.LoadBalancerSettings_ROUND_ROBIN:
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		} // UNSPECIFIED keeps the default
	}
}

// applyConnectionPool sets circuit breakers and connect timeout and
// returns the HTTP protocol options it implies (nil if none).
func applyConnectionPool(c *clusterv3.Cluster, cp *networking.ConnectionPoolSettings) *httpv3.HttpProtocolOptions {
	if cp == nil {
		return nil
	}
	th := &clusterv3.CircuitBreakers_Thresholds{}
	set := false
	if t := cp.GetTcp(); t != nil {
		if t.GetMaxConnections() > 0 {
			th.MaxConnections, set = wrapperspb.UInt32(uint32(t.GetMaxConnections())), true
		}
		if t.GetConnectTimeout() != nil {
			c.ConnectTimeout = durationpb.New(t.GetConnectTimeout().AsDuration())
		}
	}
	var opts *httpv3.HttpProtocolOptions
	if h := cp.GetHttp(); h != nil {
		if h.GetHttp1MaxPendingRequests() > 0 {
			th.MaxPendingRequests, set = wrapperspb.UInt32(uint32(h.GetHttp1MaxPendingRequests())), true
		}
		if h.GetHttp2MaxRequests() > 0 {
			th.MaxRequests, set = wrapperspb.UInt32(uint32(h.GetHttp2MaxRequests())), true
		}
		if h.GetMaxRetries() > 0 {
			th.MaxRetries, set = wrapperspb.UInt32(uint32(h.GetMaxRetries())), true
		}
		common := &corev3.HttpProtocolOptions{}
		commonSet := false
		if h.GetMaxRequestsPerConnection() > 0 {
			common.MaxRequestsPerConnection, commonSet = wrapperspb.UInt32(uint32(h.GetMaxRequestsPerConnection())), true
		}
		if h.GetIdleTimeout() != nil {
			common.IdleTimeout, commonSet = durationpb.New(h.GetIdleTimeout().AsDuration()), true
		}
		if commonSet || h.GetUseClientProtocol() {
			opts = &httpv3.HttpProtocolOptions{}
			if commonSet {
				opts.CommonHttpProtocolOptions = common
			}
			if h.GetUseClientProtocol() {
				opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				}}
			}
		}
		if h.GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE {
			if opts == nil {
				opts = &httpv3.HttpProtocolOptions{}
			}
			opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}}
		}
	}
	if set {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	return opts
}

func outlier(od *networking.OutlierDetection) *clusterv3.OutlierDetection {
	if od == nil {
		return nil
	}
	// Istio turns Envoy's success-rate detection off.
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	if od.GetConsecutiveErrors() > 0 { // deprecated field: gateway errors
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(uint32(od.GetConsecutiveErrors()))
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
		out.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
	}
	if e := od.GetConsecutiveGatewayErrors(); e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		enf := uint32(0)
		if e.GetValue() > 0 {
			enf = 100
		}
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enf)
	}
	if e := od.GetConsecutive_5XxErrors(); e != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(e.GetValue())
		enf := uint32(0)
		if e.GetValue() > 0 {
			enf = 100
		}
		out.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enf)
	}
	if d := od.GetInterval(); d != nil {
		out.Interval = durationpb.New(d.AsDuration())
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		out.BaseEjectionTime = durationpb.New(d.AsDuration())
		// Envoy caps one ejection at max_ejection_time (300 s); a longer
		// base ejection time raises the cap, as Istio does.
		if d.AsDuration() > 300*time.Second {
			out.MaxEjectionTime = durationpb.New(d.AsDuration())
		}
	}
	if p := od.GetMaxEjectionPercent(); p > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(p))
	}
	if od.GetSplitExternalLocalOriginErrors() {
		out.SplitExternalLocalOriginErrors = true
		if v := od.GetConsecutiveLocalOriginFailures(); v.GetValue() > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(v.GetValue())
			out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
		}
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
	}
	if v := od.GetFailurePercentageThreshold(); v != nil {
		out.FailurePercentageThreshold = wrapperspb.UInt32(v.GetValue())
		out.EnforcingFailurePercentage = wrapperspb.UInt32(100)
	}
	return out
}

// credential resolves a credentialName in the proxy's namespace (Istio
// reads a sidecar's DestinationRule credentials there too).
func (b *builder) credential(name string) (Credential, bool) {
	if b.in.Credentials == nil {
		return Credential{}, false
	}
	return b.in.Credentials(b.p.Namespace, name)
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// upstreamTLS builds the TLS transport socket for a ClientTLSSettings. A
// credentialName (MUTUAL: client certificate and key; SIMPLE and MUTUAL:
// its CA bundle unless caCertificates is set) is inlined when cred knows
// it, else referenced by SDS name (kubernetes://NAME), which weft proxy
// refuses to dial without.
func upstreamTLS(t *networking.ClientTLSSettings, host string, port uint32, cred func(string) (Credential, bool)) *corev3.TransportSocket {
	if t == nil || t.GetMode() == networking.ClientTLSSettings_DISABLE {
		return nil
	}
	ctx := &tlsv3.UpstreamTlsContext{Sni: t.GetSni(), CommonTlsContext: &tlsv3.CommonTlsContext{}}
	var sans []*tlsv3.SubjectAltNameMatcher
	for _, s := range t.GetSubjectAltNames() {
		typ := tlsv3.SubjectAltNameMatcher_DNS
		if strings.HasPrefix(s, "spiffe://") {
			typ = tlsv3.SubjectAltNameMatcher_URI
		}
		sans = append(sans, &tlsv3.SubjectAltNameMatcher{SanType: typ, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	validation := &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans}
	if t.GetInsecureSkipVerify().GetValue() {
		validation.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
	}
	switch t.GetMode() {
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		if ctx.Sni == "" {
			ctx.Sni = "outbound_." + strconv.Itoa(int(port)) + "_._." + host
		}
		ctx.CommonTlsContext.AlpnProtocols = []string{"istio-peer-exchange", "istio"}
		ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: WorkloadCertSecret, SdsConfig: workloadSDS()}}
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         validation,
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootCASecret, SdsConfig: workloadSDS()},
		}}
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		if ctx.Sni == "" && !strings.Contains(host, "*") {
			ctx.Sni = host
		}
		var c Credential
		found := false
		if cn := t.GetCredentialName(); cn != "" && cred != nil {
			c, found = cred(cn)
		}
		if t.GetMode() == networking.ClientTLSSettings_MUTUAL {
			if cn := t.GetCredentialName(); cn != "" && found {
				ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{CertificateChain: inline(c.Cert), PrivateKey: inline(c.Key)}}
			} else if cn != "" {
				ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "kubernetes://" + cn, SdsConfig: ads()}}
			} else if t.GetClientCertificate() != "" {
				ctx.CommonTlsContext.TlsCertificates = []*tlsv3.TlsCertificate{{
					CertificateChain: fileSource(t.GetClientCertificate()),
					PrivateKey:       fileSource(t.GetPrivateKey()),
				}}
			}
		}
		if ca := t.GetCaCertificates(); ca != "" {
			validation.TrustedCa = fileSource(ca)
		} else if found && len(c.CA) > 0 {
			validation.TrustedCa = inline(c.CA)
		}
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: validation}
	}
	return &corev3.TransportSocket{Name: tlsTransportSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// loadAssignment groups the service's endpoints (filtered by subset labels)
// by locality (and, with failoverPriority, by how many of its labels the
// endpoint shares with the proxy). Every LocalityLbEndpoints has a Locality
// and a weight; with locality failover each has a priority (see
// failoverPriorities).
func (b *builder) loadAssignment(name string, svc *registry.Service, port registry.Port, labels map[string]string, tp *networking.TrafficPolicy) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	type group struct {
		loc    string
		match  uint32 // failoverPriority labels matched; 0 without failoverPriority
		eps    []*endpointv3.LbEndpoint
		weight uint32
	}
	lbs := b.localityLbSetting(tp)
	failover := localityFailoverOn(lbs, tp)
	var fp []priorityLabel
	if failover {
		fp = parseFailoverPriority(lbs.GetFailoverPriority())
	}
	groups := map[string]*group{}
	var keys []string
	for _, e := range b.reg.EndpointsOf(svc.Hostname) {
		if !labelsMatch(labels, e.Labels) || !e.Serves(port) {
			continue
		}
		w := e.Weight
		if w == 0 {
			w = 1
		}
		m := b.priorityMatch(fp, e)
		key := e.Locality + "\x00" + strconv.Itoa(int(m))
		g := groups[key]
		if g == nil {
			g = &group{loc: e.Locality, match: m}
			groups[key] = g
			keys = append(keys, key)
		}
		g.eps = append(g.eps, lbEndpoint(e.Address, e.PortFor(port), w, e.Workload))
		g.weight += w
	}
	sort.Strings(keys)
	locs := make([]string, 0, len(keys))
	counts := map[string]int{}
	for _, k := range keys {
		g := groups[k]
		if _, seen := counts[g.loc]; !seen {
			locs = append(locs, g.loc)
		}
		counts[g.loc] += len(g.eps)
	}
	var prio func(loc string, match uint32) uint32
	if failover {
		prio = b.failoverPriorities(locs, lbs, fp, func(yield func(string, uint32) bool) {
			for _, k := range keys {
				if g := groups[k]; !yield(g.loc, g.match) {
					return
				}
			}
		})
	}
	dist := b.localityDistribution(counts, lbs)
	for _, k := range keys {
		g := groups[k]
		w := g.weight
		if dist != nil { // no failover: one group per locality
			if w = dist[g.loc]; w == 0 {
				continue // not a distribute target: no traffic
			}
		}
		region, zone, sub := splitLocality(g.loc)
		lle := &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: region, Zone: zone, SubZone: sub},
			LbEndpoints:         g.eps,
			LoadBalancingWeight: wrapperspb.UInt32(w),
		}
		if prio != nil {
			lle.Priority = prio(g.loc, g.match)
		}
		cla.Endpoints = append(cla.Endpoints, lle)
	}
	if prio != nil {
		sort.SliceStable(cla.Endpoints, func(i, j int) bool { return cla.Endpoints[i].Priority < cla.Endpoints[j].Priority })
	}
	return cla
}

// localityLbSetting is the DestinationRule's localityLbSetting, else the
// mesh config's, else Istio's default: enabled.
func (b *builder) localityLbSetting(tp *networking.TrafficPolicy) *networking.LocalityLoadBalancerSetting {
	if s := tp.GetLoadBalancer().GetLocalityLbSetting(); s != nil {
		return s
	}
	if s := b.in.Mesh.GetLocalityLbSetting(); s != nil {
		return s
	}
	return &networking.LocalityLoadBalancerSetting{}
}

// localityFailoverOn reports whether endpoints get failover priorities:
// locality load balancing enabled (the default), no distribute rule, and
// outlier detection configured, as Istio requires — without it no host is
// ever marked unhealthy, and a dead nearest locality would keep its traffic.
func localityFailoverOn(s *networking.LocalityLoadBalancerSetting, tp *networking.TrafficPolicy) bool {
	if s.GetEnabled() != nil && !s.GetEnabled().GetValue() {
		return false
	}
	return len(s.GetDistribute()) == 0 && tp.GetOutlierDetection() != nil
}

// Istio's topology labels in failoverPriority: their values come from the
// proxy's and the endpoint's locality and network, not from pod labels.
const (
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
	labelSubzone = "topology.istio.io/subzone"
	labelNetwork = "topology.istio.io/network"
)

// priorityLabel is one failoverPriority entry: a label key, and the value
// to compare with when given as "key=value" (instead of the proxy's own).
type priorityLabel struct {
	key, value string
	fixed      bool
}

func parseFailoverPriority(in []string) []priorityLabel {
	out := make([]priorityLabel, 0, len(in))
	for _, s := range in {
		k, v, fixed := strings.Cut(s, "=")
		out = append(out, priorityLabel{key: k, value: v, fixed: fixed})
	}
	return out
}

// topologyValue is the value of label key for a workload of locality loc,
// network net and labels ls.
func topologyValue(key, loc, net string, ls map[string]string) (string, bool) {
	r, z, sz := splitLocality(loc)
	switch key {
	case labelRegion:
		return r, r != ""
	case labelZone:
		return z, z != ""
	case labelSubzone:
		return sz, sz != ""
	case labelNetwork:
		return net, net != ""
	}
	v, ok := ls[key]
	return v, ok
}

// priorityMatch counts the leading failoverPriority labels endpoint e
// shares with the proxy; counting stops at the first label that differs
// (or that either side lacks).
func (b *builder) priorityMatch(fp []priorityLabel, e *registry.Endpoint) uint32 {
	var n uint32
	for _, l := range fp {
		want, ok := l.value, l.fixed
		if !l.fixed {
			want, ok = topologyValue(l.key, b.p.Metadata["LOCALITY"], b.p.Metadata["NETWORK"], b.p.Labels)
		}
		got, gok := topologyValue(l.key, e.Locality, e.Network, e.Labels)
		if !ok || !gok || got != want {
			break
		}
		n++
	}
	return n
}

// failoverPriorities assigns Envoy priorities (0 = preferred) to the
// (locality, matched-labels) groups listed by all.
//
// Without failoverPriority they follow Istio's locality order relative to
// the proxy's locality (metadata LOCALITY "region/zone/subzone"): same
// subzone 0, same zone 1, same region 2, a configured failover region 3,
// anything else 4 (none without a proxy locality). With N failoverPriority
// labels an endpoint matching the proxy on all N gets 0, on the first N-1
// gets 1, ..., on none N. With both failover and failoverPriority the
// region failover orders first and the labels within it. Priorities are
// then made contiguous.
func (b *builder) failoverPriorities(locs []string, s *networking.LocalityLoadBalancerSetting, fp []priorityLabel,
	all func(yield func(loc string, match uint32) bool)) func(loc string, match uint32) uint32 {
	var locPrio map[string]uint32
	if len(fp) == 0 || len(s.GetFailover()) > 0 {
		locPrio = b.localityOrder(locs, s.GetFailover(), len(fp) > 0)
	}
	n := uint32(len(fp))
	raw := func(loc string, match uint32) uint32 {
		return locPrio[loc]*(n+1) + (n - match)
	}
	if locPrio == nil && len(fp) == 0 {
		return nil // no proxy locality to order by
	}
	used := map[uint32]bool{}
	for loc, m := range all {
		used[raw(loc, m)] = true
	}
	levels := slices.Sorted(maps.Keys(used))
	return func(loc string, match uint32) uint32 {
		i, _ := slices.BinarySearch(levels, raw(loc, match))
		return uint32(i)
	}
}

// localityOrder is Istio's locality failover order of locs relative to
// the proxy's locality (see failoverPriorities); nil when the proxy has no
// locality. regionOnly (failover combined with failoverPriority, whose
// labels then decide within a region) uses just same region 0, failover
// region 1, other 2.
func (b *builder) localityOrder(locs []string, failover []*networking.LocalityLoadBalancerSetting_Failover, regionOnly bool) map[string]uint32 {
	mine := b.p.Metadata["LOCALITY"]
	if mine == "" {
		return nil
	}
	r, z, sz := splitLocality(mine)
	failTo := map[string]bool{}
	for _, f := range failover {
		if f.GetFrom() == r {
			failTo[f.GetTo()] = true
		}
	}
	out := map[string]uint32{}
	for _, l := range locs {
		lr, lz, lsz := splitLocality(l)
		var p uint32
		switch {
		case regionOnly && lr == r:
			p = 0
		case regionOnly && failTo[lr]:
			p = 1
		case regionOnly:
			p = 2
		case lr == r && lz == z && lsz == sz:
			p = 0
		case lr == r && lz == z:
			p = 1
		case lr == r:
			p = 2
		case failTo[lr]:
			p = 3
		default:
			p = 4
		}
		out[l] = p
	}
	return out
}

// localityDistribution applies the first localityLbSetting.distribute rule
// whose from matches the proxy's locality: each to pattern's percentage is
// shared by the matching localities in proportion to their endpoint counts.
// It returns nil when no rule applies; localities absent from the result
// get no traffic.
func (b *builder) localityDistribution(counts map[string]int, s *networking.LocalityLoadBalancerSetting) map[string]uint32 {
	if s == nil || (s.GetEnabled() != nil && !s.GetEnabled().GetValue()) {
		return nil
	}
	mine := b.p.Metadata["LOCALITY"]
	for _, d := range s.GetDistribute() {
		if !localityMatch(d.GetFrom(), mine) {
			continue
		}
		out := map[string]uint32{}
		for _, pat := range sortedKeys(d.GetTo()) {
			total := 0
			for l, n := range counts {
				if localityMatch(pat, l) {
					total += n
				}
			}
			if total == 0 {
				continue
			}
			for l, n := range counts {
				if localityMatch(pat, l) {
					w := uint32(uint64(d.GetTo()[pat]) * 1000 * uint64(n) / uint64(total))
					if w == 0 {
						w = 1
					}
					out[l] += w
				}
			}
		}
		return out
	}
	return nil
}

// localityMatch matches "region/zone/subzone" patterns with "*" segments
// ("us-west/*" matches every locality of us-west).
func localityMatch(pattern, loc string) bool {
	if pattern == "" {
		return false
	}
	ps := strings.Split(pattern, "/")
	lr, lz, lsz := splitLocality(loc)
	ls := []string{lr, lz, lsz}
	for i, p := range ps {
		if p == "*" {
			return true
		}
		if i >= 3 || p != ls[i] {
			return false
		}
	}
	return len(ps) == 3 || ls[len(ps)] == ""
}

func splitLocality(l string) (region, zone, subzone string) {
	parts := strings.SplitN(l, "/", 3)
	for len(parts) < 3 {
		parts = append(parts, "")
	}
	return parts[0], parts[1], parts[2]
}

func lbEndpoint(addr string, port, weight uint32, workload string) *endpointv3.LbEndpoint {
	ep := &endpointv3.LbEndpoint{
		HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(addr, port)}},
		LoadBalancingWeight: wrapperspb.UInt32(weight),
	}
	if workload != "" {
		ep.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
			"istio": {Fields: map[string]*structpb.Value{"workload": structpb.NewStringValue(workload)}},
		}}
	}
	return ep
}

// staticCluster is a STATIC cluster with one endpoint (inbound clusters).
func staticCluster(name, addr string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint(addr, port, 1, "")},
		}}},
	}
}

func (b *builder) addWellKnownClusters() {
	b.clusters[PassthroughCluster] = &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
	}
	b.clusters[BlackHoleCluster] = &clusterv3.Cluster{
		Name:                 BlackHoleCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(defaultConnectTimeout),
	}
}
