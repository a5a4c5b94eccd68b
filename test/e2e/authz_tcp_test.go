package e2e

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms")
	xds, caAddr := cp.ListenAddress(t, "xDS server"), cp.ListenAddress(t, "CA")
	db, dbProc := startMeshedProxy(t, dataDir, xds, caAddr, "db", "--app-port", echoPort, "--service", "db:9000/tcp")
	clientA, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client-a")
	clientB, _ := startMeshedProxy(t, dataDir, xds, caAddr, "client-b")

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
	wait("client-a denied by the widened DENY rule", func() bool { return tcpEcho(clientA.Outbound, "db:9000") != nil })
	wait("the access log names the DENY policy", func() bool {
		return strings.Contains(dbProc.Stdout(), `"connection_termination_details":"rbac_access_denied_matched_policy[ns[default]-policy[db-deny-a-get]-rule[0]]"`)
	})
	drain()
	if err := tcpEcho(clientA.Outbound, "db:9000"); err == nil {
		t.Errorf("client-a echoed under the DENY policy")
	}
	if n := drain(); n != 0 {
		t.Errorf("denied connections reached the app %d times", n)
	}
	// A plaintext client without a sidecar never gets that far (STRICT).
	if err := tcpEchoDirect(db.Inbound); err == nil {
		t.Errorf("plaintext echoed")
	}
}
