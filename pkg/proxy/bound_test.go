package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// freePortOn returns a port that was free a moment ago on ip.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// boundHTTP is a Sidecar egress listener as the translator emits it with
// a bind or captureMode NONE: its own address, bind_to_port true, the
// HCM on route table rds.
func boundHTTP(t *testing.T, name string, addr *corev3.Address, rds string) *listenerv3.Listener {
	t.Helper()
	rtr, _ := anypb.New(&routerv3.Router{})
	h, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_" + name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rds,
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: rtr}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: name, Address: addr, BindToPort: wrapperspb.Bool(true), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: h}}}}}}
}

func sockAddr(ip string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

// TestBoundListeners runs a sidecar's bound listeners (Sidecar egress
// bind / captureMode NONE): an HTTP listener on 127.0.0.2:PORT routes by
// its route table whatever port the Host names, a unix socket listener by
// its own table, a TCP listener serves a server-first protocol (nothing is
// peeked), a listener with bind_to_port false binds nothing, and a
// removed listener stops accepting.
func TestBoundListeners(t *testing.T) {
	skipShort(t)
	t.Parallel()
	reviews := startBackend(t, "reviews", nil)
	greeter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { greeter.Close() })
	go func() {
		for {
			c, err := greeter.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "220 greeter ready\n")
			c.Close()
		}
	}()
	httpPort, tcpPort, capturedPort := freePortOn(t, "127.0.0.2"), freePortOn(t, "127.0.0.2"), freePortOn(t, "127.0.0.2")
	sock := filepath.Join(t.TempDir(), "egress.sock")
	hp := strconv.Itoa(httpPort)
	reviewsCluster, greeterCluster := "outbound|9080||reviews.default.svc.cluster.local", "outbound|25||greeter.default.svc.cluster.local"
	captured := tcpListener(t, capturedPort, greeterCluster)
	captured.Name, captured.Address, captured.BindToPort = "127.0.0.2_"+strconv.Itoa(capturedPort), sockAddr("127.0.0.2", capturedPort), wrapperspb.Bool(false)
	tcp := tcpListener(t, tcpPort, greeterCluster)
	tcp.Name, tcp.Address, tcp.BindToPort = "127.0.0.2_"+strconv.Itoa(tcpPort), sockAddr("127.0.0.2", tcpPort), wrapperspb.Bool(true)
	unixName := "unix://" + sock
	vh := func() []*routev3.VirtualHost {
		return []*routev3.VirtualHost{{Name: "reviews", Domains: []string{"reviews", "reviews:9080"}, Routes: []*routev3.Route{xdstest.ToCluster("r", reviewsCluster)}}}
	}
	full := &xdstest.Resources{
		Listeners: []types.Resource{
			boundHTTP(t, "127.0.0.2_"+hp, sockAddr("127.0.0.2", httpPort), hp),
			boundHTTP(t, unixName+"_0", &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: sock}}}, unixName),
			tcp, captured,
		},
		Routes:    []types.Resource{&routev3.RouteConfiguration{Name: hp, VirtualHosts: vh()}, &routev3.RouteConfiguration{Name: unixName, VirtualHosts: vh()}},
		Clusters:  []types.Resource{xdstest.EDSCluster(reviewsCluster), xdstest.EDSCluster(greeterCluster)},
		Endpoints: []types.Resource{xdstest.Endpoints(reviewsCluster, "reviews-v1", reviews.addr), xdstest.Endpoints(greeterCluster, "greeter", greeter.Addr().String())},
	}
	cp := xdstest.Start(t)
	cp.Set(t, nodeID, full)
	p := startProxy(t, cp)
	eventually(t, "the bound listeners", func() bool { return len(p.GatewayListeners()) == 3 })
	if got := p.GatewayListeners()[captured.Name]; got != "" {
		t.Fatalf("listener with bind_to_port false bound %s", got)
	}

	get := func(c *http.Client, url string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = "reviews" // no port: the listener's route table decides, not port 80
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if got := get(plain, "http://127.0.0.2:"+hp+"/a"); got != "200 reviews" {
		t.Fatalf("bound HTTP listener: %s", got)
	}
	unixClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	if got := get(unixClient, "http://egress/b"); got != "200 reviews" {
		t.Fatalf("unix socket listener: %s", got)
	}
	c, err := net.DialTimeout("tcp", "127.0.0.2:"+strconv.Itoa(tcpPort), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "220 greeter ready\n" {
		t.Fatalf("server-first TCP through the bound listener: %q %v", line, err)
	}
	if got := reviews.seenPaths(); len(got) != 2 {
		t.Fatalf("reviews saw %q, want /a and /b", got)
	}

	// The unix socket listener is removed: the socket stops accepting.
	full.Listeners = full.Listeners[:1]
	cp.Set(t, nodeID, full)
	eventually(t, "the unix socket listener to close", func() bool {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

// TestBoundInboundListener is a Sidecar ingress listener with captureMode
// NONE as the translator emits it: a real inbound listener on
// 127.0.0.2:PORT (bind_to_port true) with the virtualInbound chain of its
// port, whose inline route sends /admin a 403 and the rest to the
// ingress defaultEndpoint (the inbound|PORT|| cluster, here the app on
// another port): a client connecting to it directly gets the chain's
// routes, not the proxy's --app-port.
func TestBoundInboundListener(t *testing.T) {
	skipShort(t)
	t.Parallel()
	app := startBackend(t, "ingress-app", nil)
	other := startBackend(t, "app-port", nil)
	port := freePortOn(t, "127.0.0.2")
	ps := strconv.Itoa(port)
	vi := virtualInbound(t, port)
	bound := &listenerv3.Listener{Name: "127.0.0.2_" + ps, Address: sockAddr("127.0.0.2", port), BindToPort: wrapperspb.Bool(true),
		TrafficDirection: corev3.TrafficDirection_INBOUND, FilterChains: vi.FilterChains}
	cp := xdstest.Start(t)
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{vi, bound},
		Clusters: []types.Resource{staticCluster("inbound|"+ps+"||", app.addr)}})
	_, ops, _ := net.SplitHostPort(other.addr)
	appPort, _ := strconv.Atoi(ops)
	p := startProxy(t, cp, func(o *proxy.Options) { o.AppPort = appPort })
	eventually(t, "the bound inbound listener", func() bool { return p.InboundListeners()[bound.Name] != "" })
	if code, body := httpGet(t, "http://127.0.0.2:"+ps+"/x"); code != 200 || body != "ingress-app" {
		t.Fatalf("bound inbound listener: %d %q, want 200 ingress-app", code, body)
	}
	if code, _ := httpGet(t, "http://127.0.0.2:"+ps+"/admin"); code != 403 {
		t.Fatalf("bound inbound listener skipped the chain's routes: %d, want 403", code)
	}
	if other.hits.Load() != 0 {
		t.Fatalf("the --app-port app got %d requests", other.hits.Load())
	}
	// Removed from LDS: the socket closes.
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{vi},
		Clusters: []types.Resource{staticCluster("inbound|"+ps+"||", app.addr)}})
	eventually(t, "the bound inbound listener to close", func() bool {
		c, err := net.DialTimeout("tcp", "127.0.0.2:"+ps, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}
