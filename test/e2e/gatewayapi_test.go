package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/test/e2e/harness"
)

const gatewayAPIConfig = `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gw, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 8000, protocol: HTTP, hostname: bookinfo.example.com}
  - name: https
    port: 8443
    protocol: HTTPS
    hostname: bookinfo.example.com
    tls: {certificateRefs: [{kind: Secret, name: bookinfo-cert}]}
  - {name: grpc, port: 9000, protocol: HTTP, hostname: grpc.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: default}
spec:
  parentRefs: [{name: bookinfo-gw, sectionName: grpc}]
  rules:
  - matches:
    - method: {service: grpc.testing.TestService, method: UnaryCall}
      headers: [{name: x-canary, value: "true"}]
    backendRefs: [{name: greeter-v2, port: 8080}]
  - backendRefs: [{name: greeter, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: productpage, namespace: default}
spec:
  parentRefs: [{name: bookinfo-gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /productpage}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-gateway, value: gateway-api}]
        remove: [x-drop-me]
    backendRefs:
    - {name: productpage, port: 8080, weight: 90}
    - {name: productpage-v2, port: 8080, weight: 10}
`

// The GAMMA route: calls to the reviews Service from any sidecar go to
// reviews-v2, except for x-user: jason, who keeps reviews.
const gammaRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-user, value: jason}]}]
    backendRefs: [{name: reviews, port: 8080}]
  - backendRefs: [{name: reviews-v2, port: 8080}]
`

// TestGatewayAPI runs Gateway API configuration through the real pieces:
// `weft control-plane` reading a Gateway and HTTPRoutes from its config
// directory, `weft proxy --gateway` selected by the
// gateway.networking.k8s.io/gateway-name label, and sidecars in front of
// test apps. The ingress routes /productpage by path prefix, sets a
// request header and splits 90/10 between two Services, on an HTTP and an
// HTTPS listener (its certificateRef served from --credentials-dir); a
// GRPCRoute sends a real gRPC client's calls by method and header; then a GAMMA
// HTTPRoute (parentRef: the reviews Service) changes where a client
// sidecar sends reviews traffic.
func TestGatewayAPI(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	app := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s x-gateway=%s x-drop-me=%s", name, r.URL.Path, r.Header.Get("X-Gateway"), r.Header.Get("X-Drop-Me"))
		})
	}
	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "gateway.yaml"), []byte(gatewayAPIConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	// The HTTPS listener's certificateRef, served from --credentials-dir.
	credDir := t.TempDir()
	pki := newTestPKI(t, "bookinfo-ca")
	certPEM, keyPEM := pki.issue(t, "bookinfo.example.com", false)
	if err := os.MkdirAll(filepath.Join(credDir, "bookinfo-cert"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(credDir, "bookinfo-cert", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--credentials-dir", credDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	m := regexp.MustCompile(`xDS server listening.*?address=([0-9.]+:[0-9]+)`).FindStringSubmatch(cp.Stderr())
	if m == nil {
		t.Fatalf("control plane log names no xDS address:\n%s", cp.Stderr())
	}
	xds := m[1]
	bin := weft.Binary(t)
	for _, name := range []string{"productpage", "productpage-v2", "reviews", "reviews-v2"} {
		startAppSidecar(t, bin, xds, name, serveApp(t, app(name)))
	}

	// gRPC backends: sidecars declaring their service as grpc.
	for _, name := range []string{"greeter", "greeter-v2"} {
		ready := filepath.Join(t.TempDir(), name+".json")
		p := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", name+"-v1",
			"--labels", "app="+name, "--app-port", strconv.Itoa(startGreeter(t, name)), "--service", name+":8080/grpc",
			"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
			"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
		harness.WaitForFile(t, ready, 30*time.Second, p)
	}

	front, frontTLS, frontGRPC := harness.FreeAddr(t), harness.FreeAddr(t), harness.FreeAddr(t)
	gwReady := filepath.Join(t.TempDir(), "gw.json")
	gw := harness.Start(t, bin, nil, "proxy", "--gateway", "--gateway-address", "8000="+front, "--gateway-address", "8443="+frontTLS,
		"--gateway-address", "9000="+frontGRPC,
		"--control-plane", xds, "--namespace", "default", "--workload", "bookinfo-gw-istio",
		"--labels", "gateway.networking.k8s.io/gateway-name=bookinfo-gw",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", gwReady)
	harness.WaitForFile(t, gwReady, 30*time.Second, gw)

	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(host, path string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+front+path, nil)
		req.Host = host
		req.Header.Set("X-Drop-Me", "1")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := get("bookinfo.example.com", "/productpage")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway never routed /productpage: %d %q %v\ngateway log:\n%s", code, body, err, gw.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Path prefix semantics (whole path elements) and the listener's hostname.
	for _, tc := range []struct {
		host, path string
		code       int
	}{
		{"bookinfo.example.com", "/productpage/reviews", 200},
		{"bookinfo.example.com", "/productpagex", 404},
		{"bookinfo.example.com", "/", 404},
		{"other.example.com", "/productpage", 404},
	} {
		if code, body, err := get(tc.host, tc.path); err != nil || code != tc.code {
			t.Errorf("Host %s %s: %d %q %v; want %d", tc.host, tc.path, code, body, err, tc.code)
		}
	}

	// The HTTPS listener: TLS with the certificateRef's certificate, the
	// same route.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.pem)
	tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "bookinfo.example.com"}}}
	deadline = time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "https://"+frontTLS+"/productpage", nil)
		req.Host = "bookinfo.example.com"
		resp, err := tc.Do(req)
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), "x-gateway=gateway-api") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS listener: %v %q\ngateway log:\n%s", err, body, gw.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The GRPCRoute: a real gRPC client (h2c) through the gateway; the
	// method plus x-canary header goes to greeter-v2, the rest to greeter.
	conn, err := grpc.NewClient(frontGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tsc := testgrpc.NewTestServiceClient(conn)
	call := func(canary bool) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if canary {
			ctx = metadata.AppendToOutgoingContext(ctx, "x-canary", "true")
		}
		r, err := tsc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return r.GetHostname(), err
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		got, err := call(false)
		if err == nil && got == "greeter" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GRPCRoute: %q %v\ngateway log:\n%s", got, err, gw.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 10; i++ {
		if got, err := call(true); err != nil || got != "greeter-v2" {
			t.Fatalf("GRPCRoute with x-canary: %q %v, want greeter-v2", got, err)
		}
		if got, err := call(false); err != nil || got != "greeter" {
			t.Fatalf("GRPCRoute without x-canary: %q %v, want greeter", got, err)
		}
	}

	// The 90/10 split, and the header modifier on every request.
	const n = 300
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		code, body, err := get("bookinfo.example.com", "/productpage")
		if err != nil || code != 200 {
			t.Fatalf("request %d: %d %q %v", i, code, body, err)
		}
		if !strings.Contains(body, "x-gateway=gateway-api x-drop-me=") || strings.HasSuffix(body, "x-drop-me=1") {
			t.Fatalf("request headers not modified: %q", body)
		}
		counts[strings.Fields(body)[0]]++
	}
	v2 := float64(counts["productpage-v2"]) / n
	t.Logf("split over %d requests: %v (productpage-v2 %.1f%%, want 10%% ± 7%%)", n, counts, 100*v2)
	if counts["productpage"]+counts["productpage-v2"] != n || v2 < 0.03 || v2 > 0.17 {
		t.Errorf("split %v: productpage-v2 got %.1f%%, want 10%% ± 7%%", counts, 100*v2)
	}

	// GAMMA: a client sidecar calling the reviews Service.
	ready := filepath.Join(t.TempDir(), "client.json")
	client := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", "default", "--workload", "client",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	var addrs struct{ Outbound string }
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, client)), &addrs); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://" + addrs.Outbound)
	mc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u)}, Timeout: 5 * time.Second}
	reviews := func(user string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://reviews.default.svc.cluster.local:8080/reviews/1", nil)
		if user != "" {
			req.Header.Set("X-User", user)
		}
		resp, err := mc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d %q", resp.StatusCode, b)
		}
		return strings.Fields(string(b))[0], nil
	}
	waitFor := func(what, user, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := reviews(user)
			if err == nil && got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %q %v, want %q\nclient log:\n%s", what, got, err, want, client.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("before the GAMMA route", "", "reviews")
	if err := os.WriteFile(filepath.Join(configDir, "gamma.yaml"), []byte(gammaRoute), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("after the GAMMA route", "", "reviews-v2")
	for i := 0; i < 20; i++ {
		if got, err := reviews(""); err != nil || got != "reviews-v2" {
			t.Fatalf("GAMMA route request %d: %q %v", i, got, err)
		}
		if got, err := reviews("jason"); err != nil || got != "reviews" {
			t.Fatalf("GAMMA route, x-user jason, request %d: %q %v", i, got, err)
		}
	}
}
