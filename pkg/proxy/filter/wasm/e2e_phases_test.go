package wasm

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	translatewasm "github.com/weftmesh/weft/pkg/xds/translate/wasm"
)

// wasmHTTPFilter is an envoy.filters.http.wasm entry with the built
// example module by file name (four ~2 MB Go modules inline would pass the
// xDS client's 4 MiB gRPC message limit) and a string configuration.
func wasmHTTPFilter(t *testing.T, name, module, cfg string) *hcmv3.HttpFilter {
	t.Helper()
	example(t, module)
	c, err := anypb.New(wrapperspb.String(cfg))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(buildDir, module+".wasm")
	a, err := anypb.New(&wasmhttpv3.Wasm{Config: &wasmv3.PluginConfig{Name: name, Configuration: c,
		Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{Code: &corev3.AsyncDataSource{
			Specifier: &corev3.AsyncDataSource_Local{Local: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: file}}}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.HttpFilter{Name: FilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

func staticCluster(name, addr string) *clusterv3.Cluster {
	host, ps, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(ps)
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}}}}}}
}

// TestPhasesEndToEnd runs the callout, body, response and tick example
// plugins in a real proxy over xDS: the callout goes to an auth service
// through the proxy's cluster by name, bodies are rewritten both ways,
// response headers changed, the log phase and the timer feed metrics
// scraped from the proxy's Prometheus endpoint, and removing the plugins
// stops the timer.
func TestPhasesEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-User", "alice")
	}))
	t.Cleanup(auth.Close)
	const authCluster = "outbound|9000||auth.default.svc.cluster.local"
	filters := []*hcmv3.HttpFilter{
		wasmHTTPFilter(t, "callout", "go-callout", authCluster),
		wasmHTTPFilter(t, "body", "go-body", "hello=HELLO"),
		wasmHTTPFilter(t, "response", "go-response", "e2e"),
		wasmHTTPFilter(t, "tick", "go-tick", "20"),
		{Name: translatewasm.RouterName},
	}
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p, set := startProxy(t, e, filters, []types.Resource{staticCluster(authCluster, strings.TrimPrefix(auth.URL, "http://"))},
		func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Internal", "secret")
			w.Header().Set("X-Tick", r.Header.Get("X-Tick-Count"))
			_, _ = io.WriteString(w, "user="+r.Header.Get("X-Auth-User")+" body="+string(b)+" hello")
		})
	in := "http://" + p.Addresses().Inbound
	post := func(auth, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("POST", in+"/p", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, _ := post("Bearer good", "x")
		if resp.Header.Get("X-Wasm-Response") == "e2e" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("config not applied: %d %v", resp.StatusCode, resp.Header)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, body := post("Bearer good", "hello app")
	if resp.StatusCode != 200 || body != "user=alice body=HELLO app HELLO" || resp.Header.Get("X-Internal") != "" ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Errorf("allowed: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := post("", "hello"); resp.StatusCode != 403 || body != "who are you\n" || resp.Header.Get(DetailsHeader) != "auth_denied" {
		t.Errorf("denied: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := post("Bearer good", strings.Repeat("x", 1<<20+1)); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("body over the 1 MiB buffer: %d", resp.StatusCode)
	}
	// Metrics from the log phase and the timer, on 15090. The 403 and 413
	// were answered by plugins before the response plugin: it logs the
	// warm-up and the allowed request only.
	for {
		prom := scrape(t, "http://"+p.Addresses().Metrics+"/stats/prometheus")
		ticks := metricValue(prom, "wasm_go_tick_ticks_total")
		if strings.Contains(prom, "# TYPE wasm_go_response_duration_ms histogram\n") && metricValue(prom, "wasm_go_response_duration_ms_count") >= 2 && ticks >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics missing (ticks %d):\n%s", ticks, prom[strings.Index(prom, "# TYPE wasm"):])
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, _ = post("Bearer good", "")
	if n, _ := strconv.Atoi(resp.Header.Get("X-Tick")); n < 3 {
		t.Errorf("x-tick-count seen by the app: %q", resp.Header.Get("X-Tick"))
	}

	// Removing the plugins closes them: the timer stops.
	set([]*hcmv3.HttpFilter{{Name: translatewasm.RouterName}})
	for {
		e.mu.Lock()
		n := len(e.plugins)
		e.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d plugins still open after their removal", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, _ := e.Metric("wasm_go_tick_ticks_total")
	time.Sleep(200 * time.Millisecond) // ten tick periods
	if after, _ := e.Metric("wasm_go_tick_ticks_total"); after > before+1 {
		t.Errorf("ticks went on after removal: %d → %d", before, after)
	}
	if resp, body := post("", "hello"); resp.StatusCode != 200 || body != "user= body=hello hello" {
		t.Errorf("without plugins: %d %q", resp.StatusCode, body)
	}
}

// metricValue returns the value of an unlabelled sample, -1 if absent.
func metricValue(prom, name string) int64 {
	for _, l := range strings.Split(prom, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
