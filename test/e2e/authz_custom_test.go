package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// The authorizers behave like Istio's ext-authz sample: "x-ext-authz:
// allow" passes with x-ext-authz-check-result: allowed, anything else is
// 403 with a body naming the authorizer.
const (
	httpDenyBody = "denied by the HTTP ext_authz for not found header `x-ext-authz: allow` in the request"
	grpcDenyBody = "denied by the gRPC ext_authz for not found header `x-ext-authz: allow` in the request"
)

type grpcExtAuthz struct {
	authv3.UnimplementedAuthorizationServer
	hits *atomic.Int64
}

func (g grpcExtAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	g.hits.Add(1)
	if req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-ext-authz"] == "allow" {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-ext-authz-check-result", Value: "allowed by grpc"}}}}}}, nil
	}
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-ext-authz-check-result", Value: "denied by grpc"}}},
			Body:    grpcDenyBody}}}, nil
}

func listenLocal(t *testing.T) (net.Listener, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis, strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)
}

// TestAuthzCustomExtAuthz is Istio's ext-authz task with weft processes:
// a control plane with the CA, STRICT mTLS and a mesh config with HTTP and
// gRPC ext_authz providers; the server, the client and each authorizer
// behind its own sidecar, so checks travel over mutual TLS through the
// server sidecar's outbound|PORT||HOST cluster. Requests with
// "x-ext-authz: allow" pass, others get the authorizer's 403; paths the
// CUSTOM rule does not match never reach the authorizer; a DENY policy wins
// for its match; an authorizer that is down gives 403 unless failOpen.
func TestAuthzCustomExtAuthz(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	// The application echoes what the authorizer added upstream.
	appLis, appPort := listenLocal(t)
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app %s result=%q", r.URL.Path, r.Header.Get("x-ext-authz-check-result"))
	})}
	go func() { _ = app.Serve(appLis) }()
	t.Cleanup(func() { app.Close() })

	var httpHits, grpcHits atomic.Int64
	httpLis, httpPort := listenLocal(t)
	httpAuthz := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpHits.Add(1)
		if r.Header.Get("x-ext-authz") == "allow" {
			w.Header().Set("x-ext-authz-check-result", "allowed by http")
			return
		}
		w.Header().Set("x-ext-authz-check-result", "denied by http")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, httpDenyBody)
	})}
	go func() { _ = httpAuthz.Serve(httpLis) }()
	t.Cleanup(func() { httpAuthz.Close() })
	grpcLis, grpcPort := listenLocal(t)
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, grpcExtAuthz{hits: &grpcHits})
	go func() { _ = gs.Serve(grpcLis) }()
	t.Cleanup(gs.Stop)

	dataDir, configDir := t.TempDir(), t.TempDir()
	write := func(name, content string) {
		t.Helper()
		writeAtomic(t, filepath.Join(configDir, name), content)
	}
	write("peer-authentication.yaml", peerAuthn("STRICT"))
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(meshFile, []byte(`extensionProviders:
- name: authz-http
  envoyExtAuthzHttp:
    service: ext-authz-http.default.svc.cluster.local
    port: 8000
    timeout: 10s
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
- name: authz-http-failopen
  envoyExtAuthzHttp:
    service: ext-authz-http.default.svc.cluster.local
    port: 8000
    timeout: 10s
    failOpen: true
    includeRequestHeadersInCheck: ["x-ext-authz"]
- name: authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz-grpc.default.svc.cluster.local
    port: 9000
    timeout: 10s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	policies := func(provider string) string {
		return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: CUSTOM
  provider: {name: ` + provider + `}
  rules:
  - to: [{operation: {paths: ["/headers", "/headers/*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/headers/admin"]}}]
`
	}
	write("authz.yaml", policies("authz-http"))
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir, "--mesh-config", meshFile,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms")
	xds, caAddr := cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA")

	_, serverProc := startMeshedProxy(t, dataDir, xds, caAddr, "server", "--app-port", appPort, "--service", "server:8080/http")
	authzHTTP, _ := startMeshedProxy(t, dataDir, xds, caAddr, "ext-authz-http", "--app-port", httpPort, "--service", "ext-authz-http:8000/http")
	startMeshedProxy(t, dataDir, xds, caAddr, "ext-authz-grpc", "--app-port", grpcPort, "--service", "ext-authz-grpc:9000/grpc")
	client, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client")

	u, _ := url.Parse("http://" + client.Outbound)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 20 * time.Second}
	type answer struct {
		code         int
		body, result string
	}
	get := func(path, extAuthz string) answer {
		req, _ := http.NewRequest(http.MethodGet, "http://server:8080"+path, nil)
		if extAuthz != "" {
			req.Header.Set("x-ext-authz", extAuthz)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return answer{body: err.Error()}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, string(b), resp.Header.Get("x-ext-authz-check-result")}
	}
	wait := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\nserver sidecar log:\n%s", what, serverProc.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	wait("the HTTP authorizer's denial", func() bool { a := get("/headers", "deny"); return a.code == 403 && a.body == httpDenyBody })

	type step struct {
		path, extAuthz string
		want           answer
		checked        bool // the authorizer is asked
	}
	run := func(name string, hits *atomic.Int64, steps []step) {
		t.Helper()
		for _, s := range steps {
			before := hits.Load()
			got := get(s.path, s.extAuthz)
			if got != s.want {
				t.Errorf("%s: GET %s (x-ext-authz: %q) = %+v, want %+v", name, s.path, s.extAuthz, got, s.want)
			}
			if asked := hits.Load() > before; asked != s.checked {
				t.Errorf("%s: GET %s: authorizer asked=%v, want %v", name, s.path, asked, s.checked)
			}
		}
	}
	run("http provider", &httpHits, []step{
		{"/headers", "allow", answer{200, `app /headers result="allowed by http"`, ""}, true},
		{"/headers", "deny", answer{403, httpDenyBody, "denied by http"}, true},
		{"/headers/x", "", answer{403, httpDenyBody, "denied by http"}, true},
		{"/ip", "deny", answer{200, `app /ip result=""`, ""}, false},
		{"/headers/admin", "allow", answer{403, "RBAC: access denied", ""}, true}, // CUSTOM passes, DENY wins
	})
	wait("the access log records the ext_authz denial", func() bool {
		return hasLine(serverProc.Stdout(), `"response_code":403`, `"response_flags":"UAEX"`, `"response_code_details":"ext_authz_denied"`, `"path":"/headers"`)
	})
	// Bytes the inbound sniffer does not take for HTTP (a lowercase method a
	// lenient application server still parses) must not reach the app
	// around the HTTP filters.
	before := httpHits.Load()
	if got, _ := rawTunnel(client.Outbound, "server:8080", "get /headers HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n"); strings.Contains(got, "app /headers") {
		t.Errorf("opaque bytes to the HTTP port reached the app around ext_authz: %q", got)
	}
	if httpHits.Load() != before {
		t.Errorf("opaque connection was checked as HTTP")
	}
	// The check crossed the mesh over mutual TLS: the authorizer's sidecar
	// reports mutual_tls requests.
	m := scrape(t, authzHTTP.Metrics)
	if !hasLine(m, "istio_requests_total{", `reporter="destination"`, `connection_security_policy="mutual_tls"`) {
		t.Errorf("ext-authz-http sidecar saw no mutual_tls check requests:\n%s", grepLines(m, "istio_requests_total{"))
	}

	write("authz.yaml", policies("authz-grpc"))
	wait("the gRPC authorizer's denial", func() bool { a := get("/headers", "deny"); return a.code == 403 && a.body == grpcDenyBody })
	run("grpc provider", &grpcHits, []step{
		{"/headers", "allow", answer{200, `app /headers result="allowed by grpc"`, ""}, true},
		{"/headers", "deny", answer{403, grpcDenyBody, "denied by grpc"}, true},
		{"/ip", "deny", answer{200, `app /ip result=""`, ""}, false},
		{"/headers/admin", "allow", answer{403, "RBAC: access denied", ""}, true},
	})

	// The HTTP authorizer goes down (its sidecar answers 503): checks fail,
	// 403 without failOpen, allowed with it.
	write("authz.yaml", policies("authz-http"))
	wait("the HTTP provider again", func() bool { a := get("/headers", "deny"); return a.code == 403 && a.body == httpDenyBody })
	httpAuthz.Close()
	wait("403 with the authorizer down", func() bool { a := get("/headers", "allow"); return a.code == 403 && a.body == "" })
	if a := get("/ip", ""); a.code != 200 {
		t.Errorf("authorizer down: unchecked path /ip = %+v, want 200", a)
	}
	write("authz.yaml", policies("authz-http-failopen"))
	wait("failOpen lets requests through", func() bool { a := get("/headers", "deny"); return a.code == 200 })
	if a := get("/headers/admin", "allow"); a.code != 403 || a.body != "RBAC: access denied" {
		t.Errorf("failOpen: DENY policy must still apply: %+v", a)
	}
}

// rawTunnel sends raw bytes to target through a CONNECT tunnel of the
// outbound listener and returns what comes back before the connection
// closes (at most 3 s).
func rawTunnel(outbound, target, payload string) (string, error) {
	c, err := net.DialTimeout("tcp", outbound, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("CONNECT: %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, payload); err != nil {
		return "", err
	}
	b, err := io.ReadAll(br)
	return string(b), err
}
