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
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// peerAuthn is the seed's default-mtls PeerAuthentication, mesh-wide in the
// root namespace.
func peerAuthn(mode string) string {
	return "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default-mtls\n  namespace: weft-system\nspec:\n  mtls:\n    mode: " + mode + "\n"
}

type proxyAddrs struct {
	Outbound, Inbound, Metrics, Admin string
}

// plainGet sends one plaintext HTTP/1.1 request straight to addr.
func plainGet(addr string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestMutualTLS runs a control plane with the CA, a server and a client
// sidecar with workload certificates, and the seed's STRICT
// PeerAuthentication: meshed traffic is mutual TLS, plaintext is refused;
// PERMISSIVE takes both.
func TestMutualTLS(t *testing.T) {
	harness.SkipShort(t)
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from server")
	})}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(lis) }()
	t.Cleanup(func() { app.Close() })
	appPort := lis.Addr().(*net.TCPAddr).Port

	dataDir, configDir := t.TempDir(), t.TempDir()
	paFile := filepath.Join(configDir, "peer-authentication.yaml")
	if err := os.WriteFile(paFile, []byte(peerAuthn("STRICT")), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	caAddr := cp.ListenAddress(t, "CA")

	server, serverProc := startMeshedProxy(t, dataDir, xds, caAddr, "server",
		"--app-port", strconv.Itoa(appPort), "--service", "server:8080/http", "--labels", "app=server,version=v2", "--cluster-id", "east")
	client, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client")
	// An opaque TCP service (echo) behind its own sidecar.
	echo := echotest.Start(t, echotest.Bytes)
	db, _ := startMeshedProxy(t, dataDir, xds, caAddr, "db",
		"--app-port", strconv.Itoa(echo.Addr().(*net.TCPAddr).Port), "--service", "db:9000/tcp")
	// A gRPC service (the standard health service) behind its own sidecar.
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(gs.Stop)
	greeter, _ := startMeshedProxy(t, dataDir, xds, caAddr, "greeter",
		"--app-port", strconv.Itoa(gl.Addr().(*net.TCPAddr).Port), "--service", "greeter:9090/grpc")
	u, _ := url.Parse("http://" + client.Outbound)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	meshed := func() (int, string) {
		resp, err := hc.Get("http://server:8080/")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// STRICT: the meshed client succeeds over mutual TLS ...
	eventually("meshed request through the sidecars", func() bool { s, _ := meshed(); return s == 200 })
	if s, body := meshed(); s != 200 || body != "hello from server" {
		t.Fatalf("meshed: %d %q", s, body)
	}
	// Opaque TCP through a CONNECT tunnel: client sidecar → mTLS → db sidecar.
	eventually("TCP echo through the sidecars", func() bool { return tcpEcho(client.Outbound, "db:9000") == nil })
	dbMetrics := func() string {
		resp, err := http.Get("http://" + db.Metrics + "/stats/prometheus")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if m := dbMetrics(); !hasLine(m, "istio_tcp_connections_opened_total{", `connection_security_policy="mutual_tls"`) {
		t.Errorf("db sidecar: no mutual_tls TCP connection:\n%s", grepLines(m, "istio_tcp"))
	}
	t.Logf("db sidecar TCP metrics:\n%s", grepLines(dbMetrics(), "istio_tcp_connections_opened_total{"))
	if err := tcpEchoDirect(db.Inbound); err == nil {
		t.Errorf("STRICT: plaintext TCP to the db sidecar echoed, want refused")
	}
	// ... and a plaintext client without a sidecar is refused.
	if s, err := plainGet(server.Inbound); err == nil {
		t.Fatalf("STRICT: plaintext request got %d, want the connection refused", s)
	}
	metrics := func() string {
		resp, err := http.Get("http://" + server.Metrics + "/stats/prometheus")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	mtlsLine := `connection_security_policy="mutual_tls"`
	if m := metrics(); !hasLine(m, "istio_requests_total{", mtlsLine, `reporter="destination"`) {
		t.Errorf("server sidecar metrics have no mutual_tls request:\n%s", grepLines(m, "istio_requests_total"))
	}
	if !strings.Contains(serverProc.Stdout(), `"downstream_peer_uri_san":"spiffe://cluster.local/ns/default/sa/client"`) {
		t.Errorf("server access log has no client SPIFFE ID:\n%s", serverProc.Stdout())
	}

	t.Logf("STRICT: server sidecar metrics:\n%s", grepLines(metrics(), "istio_requests_total{"))
	t.Run("istio standard labels", func(t *testing.T) {
		scrape := func(addr string) string {
			resp, err := http.Get("http://" + addr + "/stats/prometheus")
			if err != nil {
				return ""
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
		const clientID, serverID = "spiffe://cluster.local/ns/default/sa/client", "spiffe://cluster.local/ns/default/sa/server"
		// Both reporters of one mTLS HTTP hop: principals from the
		// certificates, the peer's workload labels from the metadata
		// exchange (the client learns the server's version and cluster
		// from the response).
		hop := map[string]string{"source_workload": "client", "source_workload_namespace": "default", "source_principal": clientID,
			"source_app": "client", "source_version": "unknown", "source_canonical_service": "client", "source_canonical_revision": "latest",
			"source_cluster": "Kubernetes", "destination_workload": "server", "destination_workload_namespace": "default",
			"destination_principal": serverID, "destination_app": "server", "destination_version": "v2",
			"destination_service": "server.default.svc.cluster.local", "destination_service_name": "server",
			"destination_service_namespace": "default", "destination_canonical_service": "server", "destination_canonical_revision": "v2",
			"destination_cluster": "east", "request_protocol": "http", "response_code": "200", "grpc_response_status": "", "response_flags": "-"}
		for _, side := range []struct{ reporter, csp, addr string }{
			{"source", "unknown", client.Metrics}, {"destination", "mutual_tls", server.Metrics},
		} {
			want := map[string]string{"reporter": side.reporter, "connection_security_policy": side.csp}
			for k, v := range hop {
				want[k] = v
			}
			if m := scrape(side.addr); !hasSeries(m, "istio_requests_total", want) {
				t.Errorf("%s reporter lacks %v:\n%s", side.reporter, want, grepLines(m, "istio_requests_total{"))
			}
		}
		// Opaque TCP over mTLS: principals and the namespace from the
		// certificate; no response_code on TCP series, as in Istio.
		tcp := map[string]string{"reporter": "destination", "source_principal": clientID, "source_workload_namespace": "default",
			"destination_principal": "spiffe://cluster.local/ns/default/sa/db", "destination_workload": "db", "destination_app": "db",
			"destination_canonical_service": "db", "request_protocol": "tcp", "connection_security_policy": "mutual_tls"}
		if m := dbMetrics(); !hasSeries(m, "istio_tcp_connections_opened_total", tcp) || strings.Contains(grepLines(m, "istio_tcp"), "response_code=") {
			t.Errorf("db sidecar TCP series lack %v (or have response_code):\n%s", tcp, grepLines(m, "istio_tcp_connections_opened_total{"))
		}
		// A real gRPC call through both sidecars: grpc_response_status on
		// both reporters, 0 for SERVING and 5 for an unknown service.
		conn, err := grpc.NewClient(client.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("greeter:9090"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := healthpb.NewHealthClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		eventually("gRPC call through the sidecars", func() bool {
			r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
		})
		if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
			t.Fatalf("unknown service: %v, want NotFound", err)
		}
		for _, c := range []struct{ reporter, addr, code string }{
			{"source", client.Metrics, "0"}, {"source", client.Metrics, "5"},
			{"destination", greeter.Metrics, "0"}, {"destination", greeter.Metrics, "5"},
		} {
			want := map[string]string{"reporter": c.reporter, "request_protocol": "grpc", "grpc_response_status": c.code, "response_code": "200",
				"source_principal": clientID, "destination_principal": "spiffe://cluster.local/ns/default/sa/greeter",
				"source_workload": "client", "destination_workload": "greeter", "destination_canonical_service": "greeter"}
			if m := scrape(c.addr); !hasSeries(m, "istio_requests_total", want) {
				t.Errorf("%s reporter lacks %v:\n%s", c.reporter, want, grepLines(m, "istio_requests_total{"))
			}
		}
	})
	// PERMISSIVE: both.
	if err := os.WriteFile(paFile, []byte(peerAuthn("PERMISSIVE")), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually("plaintext accepted under PERMISSIVE", func() bool { s, err := plainGet(server.Inbound); return err == nil && s == 200 })
	if s, body := meshed(); s != 200 || body != "hello from server" {
		t.Fatalf("PERMISSIVE meshed: %d %q", s, body)
	}
	m := metrics()
	if !hasLine(m, "istio_requests_total{", `connection_security_policy="none"`, `reporter="destination"`) ||
		!hasLine(m, "istio_requests_total{", mtlsLine, `reporter="destination"`) {
		t.Errorf("PERMISSIVE: want both none and mutual_tls requests:\n%s", grepLines(m, "istio_requests_total"))
	}

	// The peer's SPIFFE ID is the RBAC source principal: only the client's
	// service account is allowed, so plaintext (no principal) gets 403.
	authz := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client"]}}]
`
	if err := os.WriteFile(filepath.Join(configDir, "authz.yaml"), []byte(authz), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually("plaintext denied by principal policy", func() bool { s, err := plainGet(server.Inbound); return err == nil && s == 403 })
	if s, body := meshed(); s != 200 {
		t.Fatalf("principal policy: meshed client got %d %q, want 200", s, body)
	}
}

// tcpEcho opens a CONNECT tunnel to target through an outbound listener
// and checks that a line comes back.
func tcpEcho(outbound, target string) error {
	c, err := net.DialTimeout("tcp", outbound, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("CONNECT: %d", resp.StatusCode)
	}
	return echoLine(c, br)
}

// tcpEchoDirect sends a line in plaintext straight to addr.
func tcpEchoDirect(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	return echoLine(c, bufio.NewReader(c))
}

func echoLine(c net.Conn, br *bufio.Reader) error {
	if _, err := io.WriteString(c, "hello mesh\n"); err != nil {
		return err
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "hello mesh\n" {
		return fmt.Errorf("echo: %q", line)
	}
	return nil
}

// hasLine reports whether a line of s contains every one of subs.
func hasLine(s string, subs ...string) bool {
	for _, l := range strings.Split(s, "\n") {
		ok := true
		for _, sub := range subs {
			ok = ok && strings.Contains(l, sub)
		}
		if ok {
			return true
		}
	}
	return false
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
