package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// virtualInbound builds the conventions' inbound listener: one filter chain
// for the app port with an inline route config to inbound|PORT||.
func virtualInbound(t *testing.T, port int) *listenerv3.Listener {
	inCluster := "inbound|" + strconv.Itoa(port) + "||"
	rc := &routev3.RouteConfiguration{Name: "inbound|" + strconv.Itoa(port), VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound|http|" + strconv.Itoa(port), Domains: []string{"*"}, Routes: []*routev3.Route{
			{Name: "blocked", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/admin"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 403}}},
			xdstest.ToCluster("default", inCluster),
		}}}}
	h, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "inbound", RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: "virtualInbound",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15006}}}},
		FilterChains: []*listenerv3.FilterChain{{
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(port))},
			Filters:          []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: h}}},
		}}}
}

func staticCluster(name, addr string) *clusterv3.Cluster {
	host, ps, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(ps)
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}}}}}}}}}
}

func TestVirtualInboundRoutes(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	app := startBackend(t, "app", nil)
	_, ps, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(ps)
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{virtualInbound(t, port)},
		Clusters: []types.Resource{staticCluster("inbound|"+ps+"||", app.addr)}})
	p := startProxy(t, cp, func(o *proxy.Options) { o.AppPort = port })
	code, body := httpGet(t, "http://"+p.Addresses().Inbound+"/x")
	if code != 200 || body != "app" {
		t.Fatalf("inbound: %d %q", code, body)
	}
	if code, _ := httpGet(t, "http://"+p.Addresses().Inbound+"/admin"); code != 403 {
		t.Fatalf("inline inbound route not applied: %d, want 403", code)
	}
	if app.hits.Load() != 1 {
		t.Fatalf("app hits %d, want 1", app.hits.Load())
	}
}

func TestGracefulDrain(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	started := make(chan struct{}, 1)
	m := newMesh(t, func(w http.ResponseWriter, _ *http.Request) {
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		fmt.Fprint(w, "slow")
	}, nil)
	cp.Set(t, nodeID, m.resources(prefixRoute("v1", "/", toCluster(cv1))))
	p, err := proxy.New(proxy.Options{ControlPlane: cp.Addr, Namespace: ns, Workload: workload,
		OutboundAddress: "127.0.0.1:0", InboundAddress: "127.0.0.1:0", DrainTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()
	c := client(p)
	type res struct {
		body string
		err  error
	}
	rc := make(chan res, 1)
	go func() {
		resp, err := c.Get(svcURL + "/slow")
		if err != nil {
			rc <- res{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		rc <- res{body: string(b)}
	}()
	<-started
	cancel() // SIGTERM-equivalent: drain
	r := <-rc
	if r.err != nil || r.body != "slow" {
		t.Fatalf("in-flight request during drain: %q %v", r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addresses().Outbound, time.Second); err == nil {
		t.Fatal("outbound listener still accepting after drain")
	}
}

func virtualOutbound(t *testing.T, cluster string) *listenerv3.Listener {
	tp, err := anypb.New(&tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: "virtualOutbound",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15001}}}},
		FilterChains: []*listenerv3.FilterChain{{Name: cluster,
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp}}}}}}
}

func TestOutboundTrafficPolicy(t *testing.T) {
	skipShort(t)
	external := startBackend(t, "external", nil)
	passthrough := &clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
	blackhole := &clusterv3.Cluster{Name: "BlackHoleCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
	tests := []struct {
		name     string
		cluster  string
		wantCode int
	}{
		{"ALLOW_ANY passes unknown destinations through", "PassthroughCluster", 200},
		{"REGISTRY_ONLY refuses them", "BlackHoleCluster", 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cp := xdstest.Start(t)
			cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{virtualOutbound(t, tc.cluster)},
				Clusters: []types.Resource{passthrough, blackhole}})
			p := startProxy(t, cp)
			res := get(t, client(p), "http://"+external.addr+"/out")
			if res.status != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", res.status, res.flags, tc.wantCode)
			}
		})
	}
}

type denyPath string

func (d denyPath) Filter(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != string(d) {
		return false
	}
	http.Error(w, "RBAC: access denied", http.StatusForbidden)
	return true
}

func TestExtensionHTTPFilter(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	app := startBackend(t, "app", nil)
	_, ps, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(ps)
	withFilter := func(cfg string) *listenerv3.Listener {
		l := virtualInbound(t, port)
		h := &hcmv3.HttpConnectionManager{}
		if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		tc, err := anypb.New(wrapperspb.String(cfg))
		if err != nil {
			t.Fatal(err)
		}
		h.HttpFilters = []*hcmv3.HttpFilter{{Name: "test.deny", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: tc}}}
		a, err := anypb.New(h)
		if err != nil {
			t.Fatal(err)
		}
		l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		return l
	}
	factory := func(a *anypb.Any) (listener.HTTPFilter, error) {
		s := &wrapperspb.StringValue{}
		if err := a.UnmarshalTo(s); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(s.GetValue(), "/") {
			return nil, fmt.Errorf("bad path %q", s.GetValue())
		}
		return denyPath(s.GetValue()), nil
	}
	res := func(cfg string) *xdstest.Resources {
		return &xdstest.Resources{Listeners: []types.Resource{withFilter(cfg)},
			Clusters: []types.Resource{staticCluster("inbound|"+ps+"||", app.addr)}}
	}
	cp.Set(t, nodeID, res("/deny"))
	p := startProxy(t, cp, func(o *proxy.Options) {
		o.AppPort = port
		o.HTTPFilters = map[string]listener.FilterFactory{"test.deny": factory}
	})
	in := "http://" + p.Addresses().Inbound
	if code, _ := httpGet(t, in+"/deny"); code != 403 {
		t.Fatalf("filtered path: %d, want 403", code)
	}
	if code, body := httpGet(t, in+"/ok"); code != 200 || body != "app" {
		t.Fatalf("allowed path: %d %q", code, body)
	}
	cp.Set(t, nodeID, res("no-slash")) // the factory rejects it: NACK
	select {
	case n := <-cp.NACKs:
		if !strings.Contains(n.GetErrorDetail().GetMessage(), "bad path") {
			t.Fatalf("NACK %q", n.GetErrorDetail().GetMessage())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NACK for a filter config its factory rejects")
	}
	if code, _ := httpGet(t, in+"/deny"); code != 403 {
		t.Fatalf("after NACK the last good filter must still apply: %d", code)
	}
}
