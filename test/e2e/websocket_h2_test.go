package e2e

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
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestWebSocketOverH2Upgrade: Istio's DestinationRule
// `connectionPool.http.h2UpgradePolicy: UPGRADE` makes the sidecar-to-sidecar
// hop HTTP/2. A real WebSocket client (coder/websocket) talks HTTP/1.1 to
// its sidecar, which carries the upgrade as an RFC 8441 extended CONNECT
// stream to the server's sidecar, which turns it back into an HTTP/1.1
// Upgrade to a real WebSocket echo server. Messages echo both ways, the
// client's close handshake reaches the server and comes back, and the
// server sidecar's access log shows the hop was HTTP/2. Once in
// plaintext, once with the mesh's mutual TLS (PeerAuthentication STRICT,
// the sidecars' workload certificates from the control plane's CA).
func TestWebSocketOverH2Upgrade(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	for _, mtls := range []bool{false, true} {
		name := "plaintext"
		if mtls {
			name = "mutual-tls"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			webSocketOverH2(t, mtls)
		})
	}
}

func webSocketOverH2(t *testing.T, mtls bool) {
	bin := weft.Binary(t)

	closed := make(chan websocket.StatusCode, 4) // close codes the echo server saw
	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			fmt.Fprintf(w, "plain %s", r.Proto)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				closed <- websocket.CloseStatus(err)
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}))

	dataDir := t.TempDir()
	cpArgs := []string{"--data-dir", dataDir, "--xds-address", "127.0.0.1:0",
		"--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms"}
	if mtls {
		cpArgs = append(cpArgs, "--ca-address", "127.0.0.1:0")
	}
	cp := harness.StartControlPlane(t, bin, cpArgs...)
	xds := cp.ListenAddress(t, "xDS server")
	c := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=" + cp.URL}}
	config := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wsecho, namespace: default}
spec:
  host: wsecho.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE}
`
	if mtls {
		config += "---\n" + peerAuthn("STRICT")
	}
	f := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(f, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("apply", "-f", f)

	var client proxyAddrs
	var server, clientProxy *harness.Process
	if mtls {
		caAddr := cp.ListenAddress(t, "CA")
		_, server = startMeshedProxy(t, dataDir, xds, caAddr, "wsecho", "--app-port", strconv.Itoa(appPort), "--service", "wsecho:8080/http")
		client, clientProxy = startMeshedProxy(t, dataDir, xds, caAddr, "wsclient")
	} else {
		_, server = startAppSidecar(t, bin, xds, "wsecho", appPort)
		client, clientProxy = startAppSidecar(t, bin, xds, "wsclient", serveApp(t, http.NotFoundHandler()))
	}

	// Requests through the client sidecar reach the app, and the server
	// sidecar receives them over HTTP/2 (the DestinationRule is applied).
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", client.Outbound)
		},
	}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("http://wsecho:8080/plain")
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode == 200 && inboundH2(server.Stdout(), "/plain") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTP/2 hop between the sidecars: %v %q\nclient sidecar:\n%s\nserver sidecar:\n%s",
				err, body, clientProxy.Stderr(), server.Stdout()+server.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "ws://wsecho:8080/ws", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("WebSocket handshake through two sidecars over HTTP/2: %v (status %d)\nclient sidecar:\n%s\nserver sidecar:\n%s",
			err, status, clientProxy.Stdout()+clientProxy.Stderr(), server.Stdout()+server.Stderr())
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	for i, msg := range []string{"hello", strings.Repeat("x", 70000), "third"} {
		typ := websocket.MessageText
		if i == 1 {
			typ = websocket.MessageBinary
		}
		if err := ws.Write(ctx, typ, []byte(msg)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		gotTyp, got, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if gotTyp != typ || string(got) != "echo: "+msg {
			t.Fatalf("echo %d: type %v, %d bytes %.40q", i, gotTyp, len(got), got)
		}
	}
	// The close handshake crosses both sidecars: the server sees the
	// client's code, and Close returns once the server's close frame came
	// back.
	if err := ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close handshake: %v", err)
	}
	select {
	case code := <-closed:
		if code != websocket.StatusNormalClosure {
			t.Fatalf("echo server saw close code %d, want %d", code, websocket.StatusNormalClosure)
		}
	case <-ctx.Done():
		t.Fatal("echo server never saw the close")
	}

	// Both sidecars log the upgrade as they log HTTP/1.1 WebSockets (101),
	// the server's as received over HTTP/2.
	for what, p := range map[string]*harness.Process{"client": clientProxy, "server": server} {
		var e map[string]any
		deadline := time.Now().Add(10 * time.Second)
		for e = accessEntry(p.Stdout(), "/ws"); e == nil && time.Now().Before(deadline); e = accessEntry(p.Stdout(), "/ws") {
			time.Sleep(50 * time.Millisecond)
		}
		if e == nil {
			t.Fatalf("%s sidecar logged no /ws request:\n%s", what, p.Stdout())
		}
		if e["response_code"] != float64(101) || e["method"] != "GET" {
			t.Errorf("%s sidecar access log: %v", what, e)
		}
		if what == "server" && e["protocol"] != "HTTP/2.0" {
			t.Errorf("server sidecar received the WebSocket over %v, want HTTP/2.0", e["protocol"])
		}
		if peer, _ := e["downstream_peer_uri_san"].(string); what == "server" && mtls != strings.HasPrefix(peer, "spiffe://") {
			t.Errorf("server sidecar's downstream peer %q (mutual TLS %v)", peer, mtls)
		}
	}
}

// accessEntry returns the last access log entry (JSON lines in out) for
// path, or nil.
func accessEntry(out, path string) map[string]any {
	var found map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if json.Unmarshal(sc.Bytes(), &e) == nil && e["path"] == path {
			found = e
		}
	}
	return found
}

// inboundH2 reports whether the access log out has an inbound request for
// path received over HTTP/2.
func inboundH2(out, path string) bool {
	e := accessEntry(out, path)
	return e != nil && e["protocol"] == "HTTP/2.0" && e["direction"] == "inbound"
}
