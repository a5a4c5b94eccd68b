package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTwoProxies sends productpage → its sidecar → reviews' sidecar →
// reviews app, and checks telemetry, access logs and the admin endpoints.
func TestTwoProxies(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	var mdSeen atomic.Int32 // requests that reached the app with metadata exchange headers
	app := startBackend(t, "reviews-app", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Envoy-Peer-Metadata") != "" || r.Header.Get("X-Envoy-Peer-Metadata-Id") != "" {
			mdSeen.Add(1)
		}
		fmt.Fprint(w, "reviews-app")
	})
	_, appPort, _ := net.SplitHostPort(app.addr)
	var port int
	fmt.Sscan(appPort, &port)

	// Server side: reviews-v1 sidecar; inbound goes straight to the app.
	var serverLog syncBuf
	server := startProxyNoWait(t, cp, func(o *proxy.Options) {
		o.Workload = "reviews-v1"
		o.Labels = map[string]string{"app": "reviews", "version": "v1"}
		o.AppPort = port
		o.Services = []string{"reviews:9080/http"}
		o.AccessLog = &serverLog
	})
	readyFile := filepath.Join(t.TempDir(), "ready.json")
	var clientLog syncBuf
	// Publish the server's config (no outbound needs) and the client's.
	srvRes := &xdstest.Resources{Listeners: []types.Resource{}, Clusters: []types.Resource{}}
	cp.Set(t, xdstest.NodeID("reviews-v1", ns), srvRes)
	select {
	case <-server.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("server proxy not ready")
	}
	cl := xdstest.EDSCluster(cAll)
	cliRes := &xdstest.Resources{
		Listeners: []types.Resource{xdstest.HTTPListener(9080)},
		Routes:    []types.Resource{xdstest.RouteConfig(9080, "reviews", xdstest.ToCluster("reviews.default", cAll))},
		Clusters:  []types.Resource{cl},
		Endpoints: []types.Resource{xdstest.Endpoints(cAll, "reviews-v1", server.Addresses().Inbound)},
	}
	cp.Set(t, nodeID, cliRes)
	client := startProxy(t, cp, func(o *proxy.Options) { o.AccessLog = &clientLog; o.ReadyFile = readyFile })

	c := clientHTTP(client)
	for i := 0; i < 5; i++ {
		r := get(t, c, "http://reviews:9080/reviews/1")
		if r.status != 200 || r.body != "reviews-app" {
			t.Fatalf("through two proxies: %d %q", r.status, r.body)
		}
		if r.header.Get("X-Envoy-Peer-Metadata") != "" || r.header.Get("X-Envoy-Peer-Metadata-Id") != "" {
			t.Fatalf("client app got the server's peer metadata: %v", r.header)
		}
	}
	if hs := app.seenHosts(); hs[0] != "reviews:9080" {
		t.Fatalf("app saw Host %q", hs[0])
	}

	t.Run("ready file has bound addresses", func(t *testing.T) {
		b, err := os.ReadFile(readyFile)
		if err != nil {
			t.Fatal(err)
		}
		var a proxy.Addresses
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		if a != client.Addresses() || strings.HasSuffix(a.Outbound, ":0") {
			t.Fatalf("ready file %+v, want %+v", a, client.Addresses())
		}
	})
	t.Run("node metadata carries the bound inbound address", func(t *testing.T) {
		md := server.Node().GetMetadata().GetFields()
		if got := md["INBOUND_ADDRESS"].GetStringValue(); got != server.Addresses().Inbound {
			t.Fatalf("INBOUND_ADDRESS %q, want %q", got, server.Addresses().Inbound)
		}
		if md["APP_PORTS"].GetStringValue() != appPort || md["SERVICES"].GetStringValue() != "reviews:9080/http" ||
			md["LABELS"].GetStructValue().GetFields()["version"].GetStringValue() != "v1" || md["WORKLOAD_NAME"].GetStringValue() != "reviews-v1" {
			t.Fatalf("metadata %v", md)
		}
		if id := server.Node().GetId(); id != "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local" {
			t.Fatalf("node id %q", id)
		}
	})
	t.Run("istio metrics", func(t *testing.T) {
		// Every Istio standard label, in Istio's order: the client learns
		// the server's app/version/canonical labels from the metadata
		// exchange on the response, the server the client's from the
		// request. Plaintext: principals unknown.
		_, src := httpGet(t, "http://"+client.Addresses().Metrics+"/stats/prometheus")
		for _, want := range []string{`istio_requests_total{reporter="source",source_workload="productpage-v1",source_canonical_service="productpage",source_canonical_revision="latest",source_workload_namespace="default",source_principal="unknown",source_app="productpage",source_version="unknown",source_cluster="Kubernetes",destination_workload="reviews-v1",destination_workload_namespace="default",destination_principal="unknown",destination_app="reviews",destination_version="v1",destination_service="reviews.default.svc.cluster.local",destination_canonical_service="reviews",destination_canonical_revision="v1",destination_service_name="reviews",destination_service_namespace="default",destination_cluster="Kubernetes",request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="unknown"} 5`,
			"istio_request_duration_milliseconds_bucket{", "istio_request_bytes_count{", "istio_response_bytes_sum{"} {
			if !strings.Contains(src, want) {
				t.Errorf("client metrics lack %s\n%s", want, requestSeries(src))
			}
		}
		_, dst := httpGet(t, "http://"+server.Addresses().Metrics+"/stats/prometheus")
		if want := `istio_requests_total{reporter="destination",source_workload="productpage-v1",source_canonical_service="productpage",source_canonical_revision="latest",source_workload_namespace="default",source_principal="unknown",source_app="productpage",source_version="unknown",source_cluster="Kubernetes",destination_workload="reviews-v1",destination_workload_namespace="default",destination_principal="unknown",destination_app="reviews",destination_version="v1",destination_service="reviews.default.svc.cluster.local",destination_canonical_service="reviews",destination_canonical_revision="v1",destination_service_name="reviews",destination_service_namespace="default",destination_cluster="Kubernetes",request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="none"} 5`; !strings.Contains(dst, want) {
			t.Errorf("server metrics lack %s\n%s", want, requestSeries(dst))
		}
		// The metadata exchange stays between the proxies.
		if n := mdSeen.Load(); n != 0 {
			t.Errorf("%d requests reached the app with peer metadata headers", n)
		}
	})
	t.Run("access log", func(t *testing.T) {
		lines := strings.Split(strings.TrimSpace(clientLog.String()), "\n")
		if len(lines) != 5 {
			t.Fatalf("%d access log lines, want 5", len(lines))
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"start_time", "method", "path", "protocol", "response_code", "response_flags", "bytes_received", "bytes_sent", "duration", "upstream_host", "upstream_cluster", "x_request_id", "route_name", "authority"} {
			if _, ok := e[k]; !ok {
				t.Errorf("access log lacks %q: %v", k, e)
			}
		}
		if e["upstream_cluster"] != cAll || e["route_name"] != "reviews.default" || e["upstream_host"] != server.Addresses().Inbound || e["x_request_id"] == "" {
			t.Errorf("access log entry %v", e)
		}
		if !strings.Contains(serverLog.String(), `"x_request_id":"`+e["x_request_id"].(string)) {
			t.Errorf("request id %v not propagated to the server proxy log:\n%s", e["x_request_id"], serverLog.String())
		}
	})
	t.Run("admin", func(t *testing.T) {
		a := client.Addresses().Admin
		if code, body := httpGet(t, "http://"+a+"/config_dump"); code != 200 || !strings.Contains(body, cAll) || !strings.Contains(body, `"0.0.0.0_9080"`) {
			t.Errorf("config_dump %d: %.300s", code, body)
		}
		if code, body := httpGet(t, "http://"+a+"/clusters"); code != 200 || !strings.Contains(body, cAll+"::"+server.Addresses().Inbound+"::rq_total::5") {
			t.Errorf("clusters %d: %s", code, body)
		}
		if code, _ := httpGet(t, "http://"+a+"/ready"); code != 200 {
			t.Errorf("ready %d", code)
		}
		if code, body := httpGet(t, "http://"+a+"/stats"); code != 200 || !strings.Contains(body, "xds.update_success") {
			t.Errorf("stats %d: %s", code, body)
		}
		if code, _ := httpGet(t, "http://"+client.Addresses().Health+"/healthz/ready"); code != 200 {
			t.Errorf("healthz %d", code)
		}
	})
	// Last: it stops the app. The server sidecar's own 503 still carries
	// its metadata, so the client reports who answered.
	t.Run("server sidecar local reply", func(t *testing.T) {
		app.srv.Close()
		if r := get(t, c, "http://reviews:9080/reviews/1"); r.status != 503 {
			t.Fatalf("app down: %d %q", r.status, r.body)
		}
		_, src := httpGet(t, "http://"+client.Addresses().Metrics+"/stats/prometheus")
		if want := `destination_workload="reviews-v1",destination_workload_namespace="default",destination_principal="unknown",destination_app="reviews",destination_version="v1",destination_service="reviews.default.svc.cluster.local",destination_canonical_service="reviews",destination_canonical_revision="v1",destination_service_name="reviews",destination_service_namespace="default",destination_cluster="Kubernetes",request_protocol="http",response_code="503"`; !strings.Contains(src, want) {
			t.Errorf("client metrics lack %s\n%s", want, requestSeries(src))
		}
	})
}

func startProxyNoWait(t *testing.T, cp *xdstest.ControlPlane, mutate ...func(*proxy.Options)) *proxy.Proxy {
	t.Helper()
	opts := proxy.Options{
		ControlPlane: cp.Addr, Namespace: ns, Workload: workload,
		OutboundAddress: "127.0.0.1:0", InboundAddress: "127.0.0.1:0", AdminAddress: "127.0.0.1:0",
		MetricsAddress: "127.0.0.1:0", HealthAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, DrainTimeout: time.Second,
	}
	for _, m := range mutate {
		m(&opts)
	}
	p, err := proxy.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); done <- p.Shutdown() }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func clientHTTP(p *proxy.Proxy) *http.Client { return client(p) }

func TestNotReadyWithoutConfig(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	p := startProxyNoWait(t, cp)
	time.Sleep(200 * time.Millisecond)
	if code, _ := httpGet(t, "http://"+p.Addresses().Health+"/healthz/ready"); code != 503 {
		t.Fatalf("healthz before config: %d, want 503", code)
	}
	// Listeners without their RDS are not complete either.
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(9080)}})
	time.Sleep(200 * time.Millisecond)
	if code, _ := httpGet(t, "http://"+p.Addresses().Health+"/healthz/ready"); code != 503 {
		t.Fatalf("healthz with a missing route config: %d, want 503", code)
	}
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{xdstest.HTTPListener(9080)},
		Routes: []types.Resource{xdstest.RouteConfig(9080, "x", xdstest.ToCluster("r", "c"))}})
	eventually(t, "ready", func() bool {
		code, _ := httpGet(t, "http://"+p.Addresses().Health+"/healthz/ready")
		return code == 200
	})
	// quitquitquit on the status port drains the proxy.
	resp, err := http.Post("http://"+p.Addresses().Status+"/quitquitquit", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("quitquitquit: %v %v", resp, err)
	}
}

func TestGRPC(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	res := &xdstest.Resources{
		Listeners: []types.Resource{xdstest.HTTPListener(9080)},
		Routes: []types.Resource{&routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{
			{Name: "grpc", Domains: []string{"grpc:9080"}, Routes: []*routev3.Route{xdstest.ToCluster("g", "outbound|9080||grpc")}},
			{Name: "dead", Domains: []string{"dead:9080"}, Routes: []*routev3.Route{xdstest.ToCluster("d", "outbound|9080||dead")}},
		}}},
		Clusters:  []types.Resource{xdstest.EDSCluster("outbound|9080||grpc"), xdstest.EDSCluster("outbound|9080||dead")},
		Endpoints: []types.Resource{xdstest.Endpoints("outbound|9080||grpc", "grpc", l.Addr().String()), xdstest.Endpoints("outbound|9080||dead", "dead", "127.0.0.1:1")},
	}
	cp.Set(t, nodeID, res)
	p := startProxy(t, cp)
	dial := func(authority string) healthpb.HealthClient {
		conn, err := grpc.NewClient(p.Addresses().Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := dial("grpc:9080")
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check through the proxy: %v %v", r, err)
	}
	// An error status travels in trailers.
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v, want NotFound from trailers", err)
	}
	// A local reply (dead upstream) carries grpc-status UNAVAILABLE.
	_, err = dial("dead:9080").Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("dead upstream: %v, want Unavailable", err)
	}
	// grpc_response_status: 0 (header-and-trailers OK), 5 (NotFound in a
	// trailers-only response), 14 (the proxy's own reply).
	_, m := httpGet(t, "http://"+p.Addresses().Metrics+"/stats/prometheus")
	for _, want := range []string{
		`destination_service="grpc.default.svc.cluster.local",destination_canonical_service="unknown",destination_canonical_revision="latest",destination_service_name="grpc",destination_service_namespace="default",destination_cluster="unknown",request_protocol="grpc",response_code="200",grpc_response_status="0",response_flags="-",connection_security_policy="unknown"} 1`,
		`request_protocol="grpc",response_code="200",grpc_response_status="5",response_flags="-"`,
		`request_protocol="grpc",response_code="200",grpc_response_status="14",response_flags="UF"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s\n%s", want, requestSeries(m))
		}
	}
}

// requestSeries are the istio_requests_total lines of a scrape.
func requestSeries(m string) string {
	var b strings.Builder
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "istio_requests_total{") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func rawRequest(t *testing.T, addr, req string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

func TestWebSocketAndConnect(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	m := newMesh(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			fmt.Fprint(w, "v1")
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		buf := make([]byte, 5)
		if _, err := io.ReadFull(brw, buf); err == nil {
			_, _ = conn.Write([]byte(strings.ToUpper(string(buf))))
		}
	}, nil)
	cp.Set(t, nodeID, m.resources(prefixRoute("v1", "/", toCluster(cv1))))
	p := startProxy(t, cp)
	out := p.Addresses().Outbound

	conn, br, resp := rawRequest(t, out, "GET /ws HTTP/1.1\r\nHost: reviews:9080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	_, _ = io.WriteString(conn, "hello")
	buf := make([]byte, 5)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "HELLO" {
		t.Fatalf("websocket echo %q %v", buf, err)
	}

	conn, br, resp = rawRequest(t, out, "CONNECT reviews:9080 HTTP/1.1\r\nHost: reviews:9080\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	_, _ = io.WriteString(conn, "GET /tunnel HTTP/1.1\r\nHost: x\r\n\r\n")
	tr, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(tr.Body, 2))
	if string(b) != "v1" {
		t.Fatalf("through the tunnel: %q", b)
	}
	_, _, resp = rawRequest(t, out, "CONNECT nowhere.example:443 HTTP/1.1\r\nHost: nowhere.example:443\r\n\r\n")
	if resp.StatusCode != 404 {
		t.Fatalf("CONNECT to an unknown host: %d, want 404", resp.StatusCode)
	}
}

func TestInboundSniffing(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	// The app speaks a server-first line protocol, then echoes upper-cased.
	l := echotest.Start(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "220 ready\n")
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write([]byte(strings.ToUpper(string(buf))))
		}
	})
	_, ps, _ := net.SplitHostPort(l.Addr().String())
	var port int
	fmt.Sscan(ps, &port)
	cp.Set(t, nodeID, &xdstest.Resources{Clusters: []types.Resource{&clusterv3.Cluster{Name: "BlackHoleCluster",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}}})
	p := startProxy(t, cp, func(o *proxy.Options) { o.AppPort = port })
	conn, err := net.Dial("tcp", p.Addresses().Inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil || line != "220 ready\n" {
		t.Fatalf("server-first greeting through the inbound listener: %q %v", line, err)
	}
	_, _ = io.WriteString(conn, "ping")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "PING" {
		t.Fatalf("opaque TCP echo: %q %v", buf, err)
	}
	_ = conn.Close()
	eventually(t, "tcp metrics", func() bool {
		_, body := httpGet(t, "http://"+p.Addresses().Metrics+"/stats/prometheus")
		return strings.Contains(body, "istio_tcp_connections_closed_total{reporter=\"destination\"") &&
			strings.Contains(body, "istio_tcp_received_bytes_total{reporter=\"destination\"")
	})
}
