package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/iptables"
	"github.com/weftmesh/weft/pkg/netnstest"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// The capture test re-executes this test binary inside network namespaces;
// captureHelperEnv selects the helper's role.
const captureHelperEnv = "WEFT_PROXY_CAPTURE_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(captureHelperEnv) {
	case "":
		os.Exit(m.Run())
	case "app":
		helperApp()
	case "proxy":
		helperProxy()
	case "apply":
		if err := iptables.Apply(context.Background(), iptables.Defaults()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "client":
		helperClient(os.Getenv("WEFT_TARGET"))
	case "tcpclient":
		helperTCPClient(os.Getenv("WEFT_TARGET"))
	}
	os.Exit(0)
}

// helperApp is an unmodified HTTP server on 0.0.0.0:8080 and :9090.
func helperApp() {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app got %s host=%s", r.URL.Path, r.Host)
	})
	var lns []net.Listener
	for _, a := range []string{"0.0.0.0:8080", "0.0.0.0:9090"} { // 9090 is not a mesh service
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		lns = append(lns, ln)
	}
	// 7000 (a mesh TCP service) and 7001 (not one) speak a server-first
	// protocol: a banner, then each line echoed back.
	for _, a := range []string{"0.0.0.0:7000", "0.0.0.0:7001"} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serveBanner(ln)
	}
	fmt.Println("ready")
	go func() { _ = http.Serve(lns[1], h) }()
	_ = http.Serve(lns[0], h)
}

func serveBanner(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "banner %s\n", c.LocalAddr())
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "echo %s", line)
			}
		}()
	}
}

// helperTCPClient waits for the server's banner, sends a line that is not
// HTTP and prints both lines it got back.
func helperTCPClient(target string) {
	c, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	banner, err := br.ReadString('\n')
	if err != nil {
		fmt.Println("error: banner:", err)
		return
	}
	fmt.Fprintln(c, "\x00opaque bytes")
	echo, err := br.ReadString('\n')
	if err != nil {
		fmt.Println("error: echo:", err)
		return
	}
	fmt.Print(banner, echo)
}

// tcpListener is an outbound tcp_proxy listener on 0.0.0.0:port to cluster,
// with Istio's stat prefix (the cluster name).
func tcpListener(t *testing.T, port int, cluster string) *listenerv3.Listener {
	tp, err := anypb.New(&tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: fmt.Sprintf("0.0.0.0_%d", port),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tp}}}}}}
}

// sniffedListener is an outbound listener for a port without a declared
// protocol, as the translator emits it: an HTTP chain (the port's RDS
// table) and a TCP chain to tcpCluster.
func sniffedListener(t *testing.T, port int, tcpCluster string) *listenerv3.Listener {
	l := xdstest.HTTPListener(port)
	l.FilterChains[0].Name = "http"
	l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1", "h2c"}}
	tcp := tcpListener(t, port, tcpCluster).FilterChains[0]
	tcp.Name = "tcp"
	l.FilterChains = append(l.FilterChains, tcp)
	return l
}

// helperProxy runs a capture-mode proxy configured from the environment.
func helperProxy() {
	f, err := os.OpenFile(os.Getenv("WEFT_ACCESS"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	p, err := proxy.New(proxy.Options{ControlPlane: os.Getenv("WEFT_CP"), Namespace: ns, Workload: os.Getenv("WEFT_WORKLOAD"),
		Capture: true, AccessLog: f, Services: strings.Fields(os.Getenv("WEFT_SERVICES")),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, DrainTimeout: time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	select {
	case <-p.Ready():
		fmt.Println("ready")
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "proxy:", err)
		os.Exit(1)
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "proxy: not ready")
		os.Exit(1)
	}
	<-errc
}

func helperClient(target string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(target)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, b)
}

// captureHelpers re-execute this test binary inside the test's namespaces.
var captureHelpers = netnstest.Helpers{Env: captureHelperEnv}

// TestCaptureMode joins two network namespaces with a veth pair, applies
// the capture rules in both, and runs a capture-mode proxy (gid 1337) in
// each: an unmodified client calling the server by IP goes through the
// client's outbound proxy (routed by the original destination) and the
// server's inbound proxy (to 127.0.0.1:8080), as both access logs show.
func TestCaptureMode(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore")
	cp := xdstest.Start(t)
	// The proxies reach the control plane over a unix socket: it is
	// visible from every network namespace.
	sock := filepath.Join(t.TempDir(), "xds.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), cp.Cache, nil))
	go func() { _ = gs.Serve(ul) }()
	t.Cleanup(gs.Stop)

	pair := netnstest.NewPair(t, "wp", "10.214.0")
	cli, srv := pair.A, pair.B

	const cApp = "outbound|8080||app.default.svc.cluster.local"
	const cTCP = "outbound|7000||tcpapp.default.svc.cluster.local"
	passthrough := &clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
	cp.Set(t, xdstest.NodeID("client-v1", ns), &xdstest.Resources{
		Listeners: []types.Resource{xdstest.HTTPListener(8080), tcpListener(t, 7000, cTCP), sniffedListener(t, 7002, cTCP), virtualOutbound(t, "PassthroughCluster")},
		Routes: []types.Resource{xdstest.RouteConfig(8080, "10.214.0.2", xdstest.ToCluster("app", cApp)),
			xdstest.RouteConfig(7002, "10.214.0.2", xdstest.ToCluster("app", cApp))},
		Clusters:  []types.Resource{xdstest.EDSCluster(cApp), xdstest.EDSCluster(cTCP), passthrough},
		Endpoints: []types.Resource{xdstest.Endpoints(cApp, "server-v1", "10.214.0.2:8080"), xdstest.Endpoints(cTCP, "server-v1", "10.214.0.2:7000")},
	})
	cp.Set(t, xdstest.NodeID("server-v1", ns), &xdstest.Resources{Listeners: []types.Resource{}, Clusters: []types.Resource{}})

	captureHelpers.Start(t, srv, "app", 0)
	if got := captureHelpers.Exec(t, cli, "client", "WEFT_TARGET=http://10.214.0.2:8080/direct"); !strings.HasPrefix(got, "200 app got /direct") {
		t.Fatalf("direct call before capture: %q", got)
	}
	captureHelpers.Exec(t, cli, "apply")
	captureHelpers.Exec(t, srv, "apply")
	dir := t.TempDir()
	cliLog, srvLog := filepath.Join(dir, "client.log"), filepath.Join(dir, "server.log")
	captureHelpers.Start(t, cli, "proxy", 1337, "WEFT_CP=unix://"+sock, "WEFT_WORKLOAD=client-v1", "WEFT_ACCESS="+cliLog)
	captureHelpers.Start(t, srv, "proxy", 1337, "WEFT_CP=unix://"+sock, "WEFT_WORKLOAD=server-v1", "WEFT_ACCESS="+srvLog, "WEFT_SERVICES=app:8080/http")

	got := captureHelpers.Exec(t, cli, "client", "WEFT_TARGET=http://10.214.0.2:8080/captured")
	if !strings.HasPrefix(got, "200 app got /captured host=10.214.0.2:8080") {
		t.Fatalf("captured call: %q", got)
	}
	// Not a mesh service: ALLOW_ANY passes it through to the original
	// destination, and the server side still captures it.
	if got := captureHelpers.Exec(t, cli, "client", "WEFT_TARGET=http://10.214.0.2:9090/unknown"); !strings.HasPrefix(got, "200 app got /unknown") {
		t.Fatalf("passthrough call: %q", got)
	}
	// Opaque TCP with a server-first protocol: the mesh TCP service's
	// listener sends it to its cluster without waiting for client bytes;
	// an unknown port is sniffed and passed through (ALLOW_ANY). The
	// server sidecar takes both in by their original destination port.
	// 7002 has no declared protocol: HTTP takes the port's route table (to
	// the app on 8080), opaque bytes the TCP chain (the banner service on
	// 7000), a server-first client after the sniffing timeout.
	if got := captureHelpers.Exec(t, cli, "client", "WEFT_TARGET=http://10.214.0.2:7002/sniffed"); !strings.HasPrefix(got, "200 app got /sniffed") {
		t.Fatalf("HTTP on a sniffed port: %q", got)
	}
	if got, want := captureHelpers.Exec(t, cli, "tcpclient", "WEFT_TARGET=10.214.0.2:7002"), "banner 127.0.0.1:7000\necho \x00opaque bytes\n"; got != want {
		t.Errorf("opaque TCP on a sniffed port: got %q, want %q", got, want)
	}
	for _, port := range []string{"7000", "7001"} {
		want := "banner 127.0.0.1:" + port + "\necho \x00opaque bytes\n"
		if got := captureHelpers.Exec(t, cli, "tcpclient", "WEFT_TARGET=10.214.0.2:"+port); got != want {
			t.Errorf("captured TCP to port %s: got %q, want %q", port, got, want)
		}
	}
	// waitLog polls an access log until it has every wanted substring.
	waitLog := func(p string, want ...string) {
		t.Helper()
		var b []byte
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			b, _ = os.ReadFile(p)
			missing := false
			for _, w := range want {
				missing = missing || !strings.Contains(string(b), w)
			}
			if !missing {
				return
			}
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s lacks %s:\n%s", filepath.Base(p), w, b)
			}
		}
	}
	waitLog(cliLog, `"path":"/captured"`, `"upstream_cluster":"`+cApp+`"`, `"upstream_host":"10.214.0.2:8080"`,
		`"upstream_host":"10.214.0.2:9090","upstream_cluster":"PassthroughCluster"`,
		// TCP connections are logged when they close.
		`"protocol":"tcp","response_code":0,"response_flags":"-","bytes_received":14,"bytes_sent":41`,
		`"upstream_host":"10.214.0.2:7000","upstream_cluster":"`+cTCP+`"`,
		`"upstream_host":"10.214.0.2:7001","upstream_cluster":"PassthroughCluster"`)
	waitLog(srvLog, `"upstream_host":"127.0.0.1:9090"`, `"path":"/captured"`, `"upstream_host":"127.0.0.1:8080"`,
		`"upstream_host":"127.0.0.1:7000","upstream_cluster":"inbound|7000||"`, `"upstream_host":"127.0.0.1:7001"`)
}
