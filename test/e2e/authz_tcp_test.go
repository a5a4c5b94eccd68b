package e2e

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestAuthzTCP: AuthorizationPolicy on an opaque TCP service is enforced
// by the server sidecar when the connection is accepted (network RBAC
// after the mTLS handshake). A raw TCP echo server behind its sidecar,
// two client sidecars with different service accounts: the allowed
// principal's connection echoes, the other one is closed without reaching
// the app, and the access log says which policy closed it. A DENY rule
// with an HTTP-only field (methods) ignores that field on TCP (Istio's
// semantics), so it denies the allowed principal too.
func TestAuthzTCP(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	echo, echoPort := listenLocal(t)
	t.Cleanup(func() { echo.Close() })
	accepted := make(chan struct{}, 100)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	// A gRPC authorizer for CUSTOM on TCP: it denies connections from
	// client-a and records the principals it is asked about.
	var asked sync.Map
	grpcLis, grpcPort := listenLocal(t)
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, tcpAuthz{asked: &asked})
	go func() { _ = gs.Serve(grpcLis) }()
	t.Cleanup(gs.Stop)
	meshFile := filepath.Join(t.TempDir(), "mesh.yaml")
	writeAtomic(t, meshFile, "extensionProviders:\n- name: authz-grpc\n  envoyExtAuthzGrpc: {service: ext-authz-grpc.default.svc.cluster.local, port: 9191, timeout: 10s}\n")

	dataDir, configDir := t.TempDir(), t.TempDir()
	writeAtomic(t, filepath.Join(configDir, "peer-authentication.yaml"), peerAuthn("STRICT"))
	writeAtomic(t, filepath.Join(configDir, "authz.yaml"), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow-a, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client-a"]}}]
    to: [{operation: {ports: ["`+echoPort+`"]}}]
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client-b"]}}]
    to: [{operation: {paths: ["/only-http"]}}]
`)
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir, "--mesh-config", meshFile,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms")
	xds, caAddr := cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA")
	db, dbProc := startMeshedProxy(t, dataDir, xds, caAddr, "db", "--app-port", echoPort, "--service", "db:9000/tcp")
	clientA, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client-a")
	clientB, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client-b")
	startMeshedProxy(t, dataDir, xds, caAddr, "ext-authz-grpc", "--app-port", grpcPort, "--service", "ext-authz-grpc:9191/grpc")

	wait := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\ndb sidecar:\n%s\n%s", what, dbProc.Stdout(), dbProc.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	drain := func() int {
		n := 0
		for {
			select {
			case <-accepted:
				n++
			default:
				return n
			}
		}
	}
	wait("client-a's echo through the sidecars", func() bool { return tcpEcho(clientA.Outbound, "db:9000") == nil })
	// client-b started after client-a: wait until it routes to db (a
	// CONNECT it has no route for yet is a 404, not an RBAC denial).
	wait("client-b's route to db", func() bool {
		err := tcpEcho(clientB.Outbound, "db:9000")
		return err == nil || !strings.Contains(err.Error(), "CONNECT: 404")
	})
	drain()
	for i := 0; i < 3; i++ {
		if err := tcpEcho(clientB.Outbound, "db:9000"); err == nil {
			t.Fatalf("client-b (no TCP-applicable ALLOW rule) echoed")
		}
	}
	if n := drain(); n != 0 {
		t.Errorf("denied connections reached the app %d times", n)
	}
	if err := tcpEcho(clientA.Outbound, "db:9000"); err != nil {
		t.Errorf("client-a after client-b's denials: %v", err)
	}
	wait("the access log entry for client-b", func() bool {
		return hasLine(dbProc.Stdout(), `"connection_termination_details":"rbac_access_denied_matched_policy[none]"`,
			`"downstream_peer_uri_san":"spiffe://cluster.local/ns/default/sa/client-b"`, `"connection_security_policy":"mutual_tls"`)
	})
	m := scrape(t, db.Metrics)
	if !hasLine(m, "istio_tcp_connections_opened_total{", `connection_security_policy="mutual_tls"`, `reporter="destination"`) {
		t.Errorf("db sidecar: no mutual_tls TCP connection reported:\n%s", grepLines(m, "istio_tcp_connections_opened_total"))
	}

	// DENY on client-a for GET: methods is HTTP only, ignored on TCP, so the
	// rule denies every connection from client-a.
	writeAtomic(t, filepath.Join(configDir, "deny.yaml"), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-deny-a-get, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/client-a"]}}]
    to: [{operation: {methods: ["GET"]}}]
`)
	wait("client-a denied by the widened DENY rule (access log names the policy)", func() bool {
		_ = tcpEcho(clientA.Outbound, "db:9000")
		return strings.Contains(dbProc.Stdout(), `"connection_termination_details":"rbac_access_denied_matched_policy[ns[default]-policy[db-deny-a-get]-rule[0]]"`)
	})
	drain()
	if err := tcpEcho(clientA.Outbound, "db:9000"); err == nil {
		t.Errorf("client-a echoed under the DENY policy")
	}
	if n := drain(); n != 0 {
		t.Errorf("denied connections reached the app %d times", n)
	}
	// CUSTOM on TCP with the gRPC provider: every connection from namespace
	// default is checked (network ext_authz through the server sidecar's
	// cluster, over mTLS to the authorizer's sidecar); the authorizer
	// refuses client-a, whom the ALLOW policy admits.
	if err := os.Remove(filepath.Join(configDir, "deny.yaml")); err != nil {
		t.Fatal(err)
	}
	wait("client-a allowed again", func() bool { return tcpEcho(clientA.Outbound, "db:9000") == nil })
	writeAtomic(t, filepath.Join(configDir, "custom.yaml"), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-ext-authz, namespace: default}
spec:
  selector: {matchLabels: {app: db}}
  action: CUSTOM
  provider: {name: authz-grpc}
  rules:
  - from: [{source: {namespaces: ["default"]}}]
`)
	wait("client-a denied by the gRPC authorizer (access log says ext_authz closed it)", func() bool {
		_ = tcpEcho(clientA.Outbound, "db:9000")
		return hasLine(dbProc.Stdout(), `"connection_termination_details":"ext_authz_denied"`, `"downstream_peer_uri_san":"spiffe://cluster.local/ns/default/sa/client-a"`)
	})
	if _, ok := asked.Load("spiffe://cluster.local/ns/default/sa/client-a"); !ok {
		t.Errorf("the authorizer was not asked about client-a's connection")
	}
	drain()
	if err := tcpEcho(clientA.Outbound, "db:9000"); err == nil {
		t.Errorf("client-a echoed though the authorizer denies it")
	}
	if n := drain(); n != 0 {
		t.Errorf("connections denied by ext_authz reached the app %d times", n)
	}

	// A plaintext client without a sidecar never gets that far (STRICT).
	if err := tcpEchoDirect(db.Inbound); err == nil {
		t.Errorf("plaintext echoed")
	}
}

// tcpAuthz is a gRPC authorizer for connections: it records the source
// principal and denies client-a.
type tcpAuthz struct {
	authv3.UnimplementedAuthorizationServer
	asked *sync.Map
}

func (a tcpAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	p := req.GetAttributes().GetSource().GetPrincipal()
	a.asked.Store(p, true)
	if strings.HasSuffix(p, "/sa/client-a") {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_PERMISSION_DENIED)}}, nil
	}
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_OK)}}, nil
}
