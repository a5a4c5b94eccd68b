package wasm

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
	"github.com/weftmesh/weft/pkg/xds/model"
	translatewasm "github.com/weftmesh/weft/pkg/xds/translate/wasm"
)

// TestProxyEndToEnd translates a WasmPlugin (file:// go-header) and an
// EnvoyFilter (inline go-deny) into virtualInbound's HCM, serves it to a
// real proxy over xDS and sends requests through its inbound listener.
func TestProxyEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	dir := t.TempDir()
	hdrFile := filepath.Join(dir, "go-header.wasm")
	if err := os.WriteFile(hdrFile, example(t, "go-header"), 0o600); err != nil {
		t.Fatal(err)
	}
	deny := base64.StdEncoding.EncodeToString(example(t, "go-deny"))
	rs, err := config.Decode("wasm.yaml", []byte(`
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: header, namespace: default}
spec:
  url: file://`+hdrFile+`
  phase: AUTHN
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: deny, namespace: default}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value:
        name: go-deny
        typed_config:
          "@type": type.googleapis.com/istio.wasm.v1.WASM
          wasm_binary: {inline_bytes: "`+deny+`"}
`))
	if err != nil {
		t.Fatal(err)
	}
	var plugins, efs []*config.Resource
	for _, r := range rs {
		if r.Kind == config.KindWasmPlugin {
			plugins = append(plugins, r)
		} else {
			efs = append(efs, r)
		}
	}
	filters, err := translatewasm.Translate(plugins, efs, &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "web"}})
	if err != nil || len(filters) != 2 {
		t.Fatalf("translate: %d filters, %v", len(filters), err)
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: translatewasm.RouterName})
	e := newEngine(t)
	p, _ := startProxy(t, e, filters, nil, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app:"+r.Header.Get("X-My-Header"))
	})
	in := p.Addresses().Inbound
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := rawGet(t, in, "/", "x-allowed", "1")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("config not applied (last status %d)", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tests := []struct {
		name string
		hdr  []string
		code int
		body string
	}{
		{"allowed gets the header", []string{"x-allowed", "1"}, 200, "app:Hello from WASM!"},
		{"denied without x-allowed", nil, 403, "denied by wasm\n"},
	}
	for _, tt := range tests {
		code, body := rawGet(t, in, "/x", tt.hdr...)
		if code != tt.code || body != tt.body {
			t.Errorf("%s: %d %q, want %d %q", tt.name, code, body, tt.code, tt.body)
		}
	}
	// The deny plugin's counter is on the proxy's Prometheus endpoint
	// (15090) and the admin /stats: one denial above.
	if prom := scrape(t, "http://"+p.Addresses().Metrics+"/stats/prometheus"); !strings.Contains(prom, "# TYPE wasm_go_deny_denied_total counter\nwasm_go_deny_denied_total 1\n") ||
		!strings.Contains(prom, "istio_requests_total{") {
		t.Errorf("/stats/prometheus lacks the wasm counter:\n%s", prom)
	}
	if st := scrape(t, "http://"+p.Addresses().Admin+"/stats"); !strings.Contains(st, "wasm_go_deny_denied_total: 1\n") {
		t.Errorf("admin /stats lacks the wasm counter:\n%s", st)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// startInbound runs an app (echoing x-my-header), an xDS server and a real
// proxy whose inbound HCM has filters; set replaces the filter chain.
func startInbound(t testing.TB, e *Engine, filters []*hcmv3.HttpFilter) (in string, set func([]*hcmv3.HttpFilter)) {
	t.Helper()
	p, set := startProxy(t, e, filters, nil, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "app:"+r.Header.Get("X-My-Header"))
	})
	return p.Addresses().Inbound, set
}

// startProxy runs app, an xDS server and a real proxy whose inbound HCM
// has filters, with the engine's metrics on the proxy's stats endpoints
// and its http calls through the proxy's clusters (extra adds clusters);
// set replaces the filter chain.
func startProxy(t testing.TB, e *Engine, filters []*hcmv3.HttpFilter, extra []types.Resource, app http.HandlerFunc) (*proxy.Proxy, func([]*hcmv3.HttpFilter)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: app}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, ps, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(ps)

	inCluster := "inbound|" + ps + "||"
	rc := &routev3.RouteConfiguration{Name: "inbound|" + ps, VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound|http|" + ps, Domains: []string{"*"}, Routes: []*routev3.Route{xdstest.ToCluster("default", inCluster)}}}}
	mkListener := func(filters []*hcmv3.HttpFilter) *listenerv3.Listener {
		h, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "inbound", HttpFilters: filters,
			RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}})
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
	cluster := &clusterv3.Cluster{Name: inCluster, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: inCluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}}}}}}

	cp := xdstest.Start(t)
	nodeID := xdstest.NodeID("web-v1", "default")
	clusters := append([]types.Resource{cluster}, extra...)
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{mkListener(filters)}, Clusters: clusters})

	p, err := proxy.New(proxy.Options{
		ControlPlane: cp.Addr, Namespace: "default", Workload: "web-v1", Labels: map[string]string{"app": "web"},
		OutboundAddress: "127.0.0.1:0", InboundAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", AppPort: port,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, DrainTimeout: time.Second,
		HTTPFilters: e.Filters(), StatsCollectors: []stats.Collector{e}, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.SetHTTPCaller(p.HTTPCall)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy exited: %v", err)
	case <-time.After(60 * time.Second): // compiling modules is slow on a loaded machine
		t.Fatal("proxy not ready")
	}
	set := func(filters []*hcmv3.HttpFilter) {
		cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{mkListener(filters)}, Clusters: clusters})
	}
	return p, set
}

func rawGet(t *testing.T, addr, target string, hdr ...string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + target + " HTTP/1.1\r\nHost: web\r\nConnection: close\r\n"
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
