package translate

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

func build(t *testing.T, file string) *Output {
	t.Helper()
	in, p := loadCase(t, filepath.Join("testdata", file+".yaml"))
	out, err := Build(in, p)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return out
}

func find[T types.Resource](t *testing.T, rs []types.Resource, name string) T {
	t.Helper()
	for _, r := range rs {
		if n, ok := r.(interface{ GetName() string }); ok && n.GetName() == name {
			return r.(T)
		}
		if c, ok := r.(*endpointv3.ClusterLoadAssignment); ok && c.GetClusterName() == name {
			return r.(T)
		}
	}
	var zero T
	t.Fatalf("resource %q not found", name)
	return zero
}

func routesOf(t *testing.T, out *Output, rc, vh string) []*routev3.Route {
	t.Helper()
	for _, v := range find[*routev3.RouteConfiguration](t, out.Routes, rc).GetVirtualHosts() {
		if v.GetName() == vh {
			return v.GetRoutes()
		}
	}
	t.Fatalf("virtual host %q not in %q", vh, rc)
	return nil
}

const reviewsVH = "reviews.default.svc.cluster.local:9080"

func TestWeightsAndZeroWeightDropped(t *testing.T) {
	out := build(t, "vs_weights")
	rs := routesOf(t, out, "9080", reviewsVH)
	if len(rs) != 1 {
		t.Fatalf("got %d routes, want 1", len(rs))
	}
	wc := rs[0].GetRoute().GetWeightedClusters().GetClusters()
	got := map[string]uint32{}
	for _, c := range wc {
		got[c.GetName()] = c.GetWeight().GetValue()
	}
	want := map[string]uint32{
		"outbound|9080|v1|reviews.default.svc.cluster.local": 70,
		"outbound|9080|v2|reviews.default.svc.cluster.local": 30,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("weights = %v, want %v", got, want)
	}
}

func TestSubsetEndpointFiltering(t *testing.T) {
	out := build(t, "vs_weights")
	for subset, addr := range map[string]string{"v1": "10.0.1.1", "v2": "10.0.1.2", "v3": "10.0.1.3"} {
		cla := find[*endpointv3.ClusterLoadAssignment](t, out.Endpoints, ClusterName(9080, subset, "reviews.default.svc.cluster.local"))
		var addrs []string
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				addrs = append(addrs, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
			}
		}
		if len(addrs) != 1 || addrs[0] != addr {
			t.Errorf("subset %s endpoints = %v, want [%s]", subset, addrs, addr)
		}
	}
	all := find[*endpointv3.ClusterLoadAssignment](t, out.Endpoints, ClusterName(9080, "", "reviews.default.svc.cluster.local"))
	if n := len(all.GetEndpoints()[0].GetLbEndpoints()); n != 3 {
		t.Errorf("service-wide cluster has %d endpoints, want 3", n)
	}
}

func TestIstioDefaultRetries(t *testing.T) {
	out := build(t, "sidecar_basic")
	rp := routesOf(t, out, "9080", reviewsVH)[0].GetRoute().GetRetryPolicy()
	if rp.GetNumRetries().GetValue() != 2 || rp.GetRetryOn() != DefaultRetryOn {
		t.Errorf("retry policy = %v", rp)
	}
	if len(rp.GetRetryHostPredicate()) != 1 || rp.GetRetryHostPredicate()[0].GetName() != "envoy.retry_host_predicates.previous_hosts" {
		t.Errorf("retry host predicate = %v", rp.GetRetryHostPredicate())
	}
	if rt := routesOf(t, out, "9080", reviewsVH)[0].GetRoute().GetTimeout(); rt == nil || rt.AsDuration() != 0 {
		t.Errorf("timeout = %v, want explicit 0s", rt)
	}
	// Custom retries replace the defaults; attempts 0 disables them.
	rs := routesOf(t, build(t, "vs_timeout_retries"), "9080", reviewsVH)
	if got := rs[0].GetRoute().GetRetryPolicy(); got.GetNumRetries().GetValue() != 4 || got.GetRetryOn() != "gateway-error,connect-failure,retriable-status-codes" || len(got.GetRetriableStatusCodes()) != 1 {
		t.Errorf("custom retry policy = %v", got)
	}
	if got := rs[1].GetRoute().GetRetryPolicy(); got != nil {
		t.Errorf("attempts 0: retry policy = %v, want none", got)
	}
}

func TestSourceLabels(t *testing.T) {
	rs := routesOf(t, build(t, "vs_source_labels"), "9080", reviewsVH)
	var clusters []string
	for _, r := range rs {
		clusters = append(clusters, r.GetRoute().GetCluster())
	}
	if strings.Contains(strings.Join(clusters, " "), "|v3|") || len(rs) != 2 {
		t.Errorf("routes = %v: the ratings-only route must be dropped", clusters)
	}
}

func TestRegistryOnlyAndAllowAny(t *testing.T) {
	for _, tc := range []struct {
		file, want string
	}{{"sidecar_registry_only", BlackHoleCluster}, {"sidecar_basic", PassthroughCluster}} {
		out := build(t, tc.file)
		l := find[*listenerv3.Listener](t, out.Listeners, VirtualOutbound)
		var tp tcpproxyv3.TcpProxy
		if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatal(err)
		}
		if tp.GetCluster() != tc.want {
			t.Errorf("%s: virtualOutbound goes to %q, want %q", tc.file, tp.GetCluster(), tc.want)
		}
	}
	out := build(t, "sidecar_registry_only")
	for _, c := range out.Clusters {
		if strings.Contains(c.(*clusterv3.Cluster).GetName(), "other.other") {
			t.Errorf("Sidecar egress should hide %s", c.(*clusterv3.Cluster).GetName())
		}
	}
}

func TestProxylessHasNoCORSFilter(t *testing.T) {
	out := build(t, "proxyless_grpc")
	l := find[*listenerv3.Listener](t, out.Listeners, "echo.default.svc.cluster.local:7070")
	var h hcmv3.HttpConnectionManager
	if err := l.GetApiListener().GetApiListener().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	fs := h.GetHttpFilters()
	if fs[len(fs)-1].GetName() != RouterFilter {
		t.Errorf("last filter = %s, want router", fs[len(fs)-1].GetName())
	}
	for _, f := range fs {
		if f.GetName() == CorsFilter {
			t.Error("proxyless listener has the CORS filter")
		}
	}
	if h.GetRds().GetRouteConfigName() != "echo.default.svc.cluster.local:7070" {
		t.Errorf("RDS name = %q", h.GetRds().GetRouteConfigName())
	}
	// Short-name aliases share the FQDN route configuration.
	for _, alias := range []string{"echo:7070", "echo.default:7070"} {
		var ah hcmv3.HttpConnectionManager
		if err := find[*listenerv3.Listener](t, out.Listeners, alias).GetApiListener().GetApiListener().UnmarshalTo(&ah); err != nil {
			t.Fatal(err)
		}
		if ah.GetRds().GetRouteConfigName() != "echo.default.svc.cluster.local:7070" {
			t.Errorf("%s: RDS name = %q", alias, ah.GetRds().GetRouteConfigName())
		}
	}
	for _, r := range routesOf(t, out, "echo.default.svc.cluster.local:7070", "echo.default.svc.cluster.local:7070") {
		if _, ok := r.GetTypedPerFilterConfig()[CorsFilter]; ok {
			t.Error("proxyless route carries a CORS config")
		}
	}
}

// TestInvariants checks, for every golden case, what the proxy and gRPC-Go
// rely on: every locality and endpoint has a weight and a Locality, every
// RDS name and cluster referenced exists, every EDS cluster has endpoints.
func TestInvariants(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			out := build(t, name)
			clusters := map[string]*clusterv3.Cluster{}
			for _, r := range out.Clusters {
				c := r.(*clusterv3.Cluster)
				clusters[c.GetName()] = c
			}
			routes := map[string]bool{}
			for _, r := range out.Routes {
				rc := r.(*routev3.RouteConfiguration)
				routes[rc.GetName()] = true
				for _, vh := range rc.GetVirtualHosts() {
					for _, rt := range vh.GetRoutes() {
						refs := []string{rt.GetRoute().GetCluster()}
						for _, w := range rt.GetRoute().GetWeightedClusters().GetClusters() {
							refs = append(refs, w.GetName())
						}
						for _, m := range rt.GetRoute().GetRequestMirrorPolicies() {
							refs = append(refs, m.GetCluster())
						}
						for _, ref := range refs {
							if ref != "" && clusters[ref] == nil {
								t.Errorf("route %s/%s references missing cluster %q", rc.GetName(), vh.GetName(), ref)
							}
						}
					}
				}
			}
			for _, r := range out.Listeners {
				l := r.(*listenerv3.Listener)
				var hcms []*hcmv3.HttpConnectionManager
				if al := l.GetApiListener().GetApiListener(); al != nil {
					var h hcmv3.HttpConnectionManager
					if err := al.UnmarshalTo(&h); err != nil {
						t.Fatal(err)
					}
					hcms = append(hcms, &h)
				}
				for _, fc := range l.GetFilterChains() {
					for _, f := range fc.GetFilters() {
						switch f.GetName() {
						case HCMFilter:
							var h hcmv3.HttpConnectionManager
							if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
								t.Fatal(err)
							}
							hcms = append(hcms, &h)
						case TCPProxyFilter:
							var tp tcpproxyv3.TcpProxy
							if err := f.GetTypedConfig().UnmarshalTo(&tp); err != nil {
								t.Fatal(err)
							}
							refs := []string{tp.GetCluster()}
							for _, w := range tp.GetWeightedClusters().GetClusters() {
								refs = append(refs, w.GetName())
							}
							for _, ref := range refs {
								if ref != "" && clusters[ref] == nil {
									t.Errorf("listener %s tcp_proxy references missing cluster %q", l.GetName(), ref)
								}
							}
						}
					}
				}
				for _, h := range hcms {
					if n := h.GetRds().GetRouteConfigName(); n != "" && !routes[n] {
						t.Errorf("listener %s references missing route config %q", l.GetName(), n)
					}
				}
			}
			eds := map[string]bool{}
			for _, r := range out.Endpoints {
				cla := r.(*endpointv3.ClusterLoadAssignment)
				eds[cla.GetClusterName()] = true
				checkCLA(t, cla)
			}
			for n, c := range clusters {
				if c.GetType() == clusterv3.Cluster_EDS && !eds[c.GetEdsClusterConfig().GetServiceName()] {
					t.Errorf("EDS cluster %s has no ClusterLoadAssignment", n)
				}
				if c.GetLoadAssignment() != nil {
					checkCLA(t, c.GetLoadAssignment())
				}
			}
		})
	}
}

func checkCLA(t *testing.T, cla *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	for _, l := range cla.GetEndpoints() {
		if l.GetLocality() == nil || l.GetLoadBalancingWeight() == nil || l.GetLoadBalancingWeight().GetValue() == 0 {
			t.Errorf("%s: locality %v lacks Locality or weight", cla.GetClusterName(), l.GetLocality())
		}
		for _, e := range l.GetLbEndpoints() {
			if e.GetLoadBalancingWeight().GetValue() == 0 {
				t.Errorf("%s: endpoint %v has no weight", cla.GetClusterName(), e.GetEndpoint())
			}
		}
	}
}

func TestBuildErrors(t *testing.T) {
	p := &model.Proxy{ID: "sidecar~1.1.1.1~a.default~default.svc.cluster.local", Type: model.Sidecar, Namespace: "default"}
	if _, err := Build(&Input{}, nil); err == nil {
		t.Error("nil proxy: want error")
	}
	if out, err := Build(nil, p); err != nil || len(out.Clusters) != 2 {
		t.Errorf("nil input: out=%v err=%v, want the two well-known clusters", out, err)
	}
	// An out-of-range value that Istio validation would reject still must
	// not reach a proxy: Build names the invalid resource.
	rs, err := config.Decode("bad.yaml", []byte(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.1.1.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc
  trafficPolicy:
    outlierDetection: {maxEjectionPercent: 150}
`))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(nil)
	reg.SetConfigs(rs)
	_, err = Build(&Input{Configs: rs, Registry: reg.Snapshot()}, p)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "outbound|80||svc.default.svc.cluster.local") {
		t.Errorf("err = %v, want ErrInvalid naming the cluster", err)
	}
}

// TestConcurrentBuild builds for several proxies at once from one Input, as
// the ADS server does; run with -race.
func TestConcurrentBuild(t *testing.T) {
	in, p := loadCase(t, filepath.Join("testdata", "proxyless_grpc.yaml"))
	want := renderOutput(t, mustBuild(t, in, p))
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() {
			out, err := Build(in, p)
			if err == nil && string(renderOutput(t, out)) != string(want) {
				err = errors.New("concurrent build differs")
			}
			errs <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func mustBuild(t *testing.T, in *Input, p *model.Proxy) *Output {
	t.Helper()
	out, err := Build(in, p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGatewayHTTPS(t *testing.T) {
	out := build(t, "gateway_https")
	l := find[*listenerv3.Listener](t, out.Listeners, "0.0.0.0_443")
	if len(l.GetFilterChains()) != 3 || len(l.GetListenerFilters()) != 1 {
		t.Fatalf("443: %d chains, %d listener filters; want 3 SNI chains and tls_inspector", len(l.GetFilterChains()), len(l.GetListenerFilters()))
	}
	var tls tlsv3.DownstreamTlsContext
	fc := l.GetFilterChains()[0]
	if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(&tls); err != nil {
		t.Fatal(err)
	}
	if sn := fc.GetFilterChainMatch().GetServerNames(); len(sn) != 1 || sn[0] != "bookinfo.example.com" {
		t.Errorf("server names = %v", sn)
	}
	if c := tls.GetCommonTlsContext().GetTlsCertificates(); len(c) != 1 || !strings.Contains(string(c[0].GetCertificateChain().GetInlineBytes()), "BEGIN CERTIFICATE") {
		t.Errorf("credentialName not inlined: %v", c)
	}
	var mtls tlsv3.DownstreamTlsContext
	if err := l.GetFilterChains()[1].GetTransportSocket().GetTypedConfig().UnmarshalTo(&mtls); err != nil {
		t.Fatal(err)
	}
	if !mtls.GetRequireClientCertificate().GetValue() {
		t.Error("MUTUAL server must require a client certificate")
	}
	// MUTUAL with a credentialName: certificate and client CA inline from
	// the credential, looked up in the gateway proxy's namespace.
	var cmtls tlsv3.DownstreamTlsContext
	if err := l.GetFilterChains()[2].GetTransportSocket().GetTypedConfig().UnmarshalTo(&cmtls); err != nil {
		t.Fatal(err)
	}
	if ca := cmtls.GetCommonTlsContext().GetValidationContext().GetTrustedCa().GetInlineBytes(); !strings.Contains(string(ca), "partner-ca") {
		t.Errorf("MUTUAL credentialName: trusted CA %q, want the credential's CA", ca)
	}
	if c := cmtls.GetCommonTlsContext().GetTlsCertificates(); len(c) != 1 || !strings.Contains(string(c[0].GetCertificateChain().GetInlineBytes()), "partner") {
		t.Errorf("MUTUAL credentialName: certificate not inlined: %v", c)
	}
	vhs := find[*routev3.RouteConfiguration](t, out.Routes, "http.80").GetVirtualHosts()
	if len(vhs) != 1 || vhs[0].GetRequireTls() != routev3.VirtualHost_ALL || !vhs[0].GetRoutes()[0].GetRedirect().GetHttpsRedirect() {
		t.Errorf("httpsRedirect virtual hosts = %v", vhs)
	}
}

func TestSubsetPolicyInheritance(t *testing.T) {
	out := build(t, "dr_port_level_subset")
	for _, tc := range []struct {
		name    string
		lb      clusterv3.Cluster_LbPolicy
		maxConn uint32
		maxReq  uint32
		outlier bool
	}{
		{ClusterName(9080, "", "ratings.default.svc.cluster.local"), clusterv3.Cluster_ROUND_ROBIN, 10, 0, false},
		{ClusterName(9090, "", "ratings.default.svc.cluster.local"), clusterv3.Cluster_LEAST_REQUEST, 0, 50, false},
		{ClusterName(9080, "v1", "ratings.default.svc.cluster.local"), clusterv3.Cluster_RANDOM, 10, 0, true},
		{ClusterName(9090, "v1", "ratings.default.svc.cluster.local"), clusterv3.Cluster_RANDOM, 0, 50, false},
	} {
		c := find[*clusterv3.Cluster](t, out.Clusters, tc.name)
		th := c.GetCircuitBreakers().GetThresholds()
		var maxConn, maxReq uint32
		if len(th) > 0 {
			maxConn, maxReq = th[0].GetMaxConnections().GetValue(), th[0].GetMaxRequests().GetValue()
		}
		if c.GetLbPolicy() != tc.lb || maxConn != tc.maxConn || maxReq != tc.maxReq || (c.GetOutlierDetection() != nil) != tc.outlier {
			t.Errorf("%s: lb=%v maxConn=%d maxReq=%d outlier=%v; want %v %d %d %v", tc.name, c.GetLbPolicy(), maxConn, maxReq, c.GetOutlierDetection() != nil, tc.lb, tc.maxConn, tc.maxReq, tc.outlier)
		}
	}
	// The endpoint's named port overrides the service port for grpc.
	cla := find[*endpointv3.ClusterLoadAssignment](t, out.Endpoints, ClusterName(9090, "", "ratings.default.svc.cluster.local"))
	ports := map[string]uint32{}
	for _, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
		sa := e.GetEndpoint().GetAddress().GetSocketAddress()
		ports[sa.GetAddress()] = sa.GetPortValue()
	}
	if ports["10.0.2.1"] != 9090 || ports["10.0.2.2"] != 19090 {
		t.Errorf("grpc endpoint ports = %v", ports)
	}
}

func TestLocalityFailoverPriorities(t *testing.T) {
	out := build(t, "dr_locality_failover")
	cla := find[*endpointv3.ClusterLoadAssignment](t, out.Endpoints, ClusterName(9080, "", "reviews.default.svc.cluster.local"))
	got := map[string]uint32{}
	for _, l := range cla.GetEndpoints() {
		got[l.GetLocality().GetRegion()+"/"+l.GetLocality().GetZone()] = l.GetPriority()
	}
	want := map[string]uint32{"us-east/zone-a": 0, "us-east/zone-b": 1, "eu-west/zone-c": 2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("priorities = %v, want %v", got, want)
	}
}
