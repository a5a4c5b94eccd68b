package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// buildWasmExample builds examples/wasm/NAME (Go, wasip1 c-shared) into dir.
func buildWasmExample(t *testing.T, dir, name string) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./"+name)
	cmd.Dir = filepath.Join(root, "examples", "wasm")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	return out
}

// wasmGet sends one request straight to the sidecar's inbound listener and
// returns the status, the X-Weft-Wasm-Details header and the body.
func wasmGet(addr string) (int, string, string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Weft-Wasm-Details"), string(b), nil
}

// TestWasmPlugins is the acceptance flow with real processes: a
// control plane, a `weft proxy` sidecar in front of an app that echoes
// x-my-header, and plugins applied and deleted with the weft CLI while the
// proxy keeps running.
func TestWasmPlugins(t *testing.T) {
	harness.SkipShort(t)
	bin := weft.Binary(t)
	modDir := t.TempDir()
	header := buildWasmExample(t, modDir, "go-header")
	trap := buildWasmExample(t, modDir, "go-trap")
	deny := buildWasmExample(t, modDir, "go-deny")
	seedModule := asHeaderModule(t)

	// The app reports the header it received.
	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "x-my-header=%q", r.Header.Get("X-My-Header"))
	}))

	cp := harness.StartControlPlane(t, bin, "--data-dir", t.TempDir(), "--xds-address", "127.0.0.1:0",
		"--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	c := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=" + cp.URL}}

	addrs, proxy := startAppSidecar(t, bin, xds, "web", appPort)

	apply := func(name, yaml string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), name+".yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ok("apply", "-f", f)
	}
	// eventually polls the inbound listener until want accepts the answer.
	eventually := func(what string, want func(code int, details, body string) bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var last string
		for {
			code, details, body, err := wasmGet(addrs.Inbound)
			if err == nil && want(code, details, body) {
				return
			}
			last = fmt.Sprintf("%d %q %q %v", code, details, body, err)
			if proxy.Exited() {
				t.Fatalf("%s: proxy exited:\n%s", what, proxy.Stderr())
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out, last answer %s\nproxy log:\n%s", what, last, proxy.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	withHeader := func(code int, _, body string) bool {
		return code == 200 && body == `x-my-header="Hello from WASM!"`
	}
	without := func(code int, _, body string) bool { return code == 200 && body == `x-my-header=""` }

	eventually("app reachable through the sidecar", without)

	// 1. The seed's EnvoyFilter, corrected: patch: (not patches:), served at
	// v1alpha3, operation INSERT_FIRST (Istio has no ADD_AFTER, and
	// apply rejects ADD for HTTP_FILTER), the module inline.
	mod, err := os.ReadFile(seedModule)
	if err != nil {
		t.Fatal(err)
	}
	apply("seed", `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata:
  name: custom-header-filter
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.http_connection_manager
    patch:
      operation: INSERT_FIRST
      value:
        name: my-wasm-extension
        typed_config:
          "@type": type.googleapis.com/istio.wasm.v1.WASM
          wasm_binary:
            inline_bytes: `+base64.StdEncoding.EncodeToString(mod)+"\n")
	eventually("seed EnvoyFilter adds x-my-header", withHeader)
	c.ok("delete", "envoyfilter", "custom-header-filter")
	eventually("header gone after delete", without)

	// 2. WasmPlugin with file://.
	wasmPlugin := func(name, url, extra string) string {
		return "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: " + name +
			"\nspec:\n  selector:\n    matchLabels: {app: web}\n  url: " + url + "\n" + extra
	}
	apply("file", wasmPlugin("header", "file://"+header, ""))
	eventually("WasmPlugin file:// adds x-my-header", withHeader)
	c.ok("delete", "wasmplugin", "header")
	eventually("header gone after deleting the WasmPlugin", without)

	// 3. WasmPlugin with http:// and sha256 from a test HTTP server.
	hdrBytes, err := os.ReadFile(header)
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int64
	modSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		_, _ = w.Write(hdrBytes)
	})}
	modLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = modSrv.Serve(modLis) }()
	t.Cleanup(func() { modSrv.Close() })
	sum := sha256.Sum256(hdrBytes)
	modURL := "http://" + modLis.Addr().String() + "/go-header.wasm"
	apply("http", wasmPlugin("header-http", modURL, "  sha256: "+hex.EncodeToString(sum[:])+"\n"))
	eventually("WasmPlugin http:// + sha256 adds x-my-header", withHeader)
	if fetches.Load() == 0 {
		t.Errorf("the proxy never fetched %s", modURL)
	}

	// A wrong sha256 is refused: the proxy NACKs, proxy-status says why,
	// and the previous config keeps serving.
	bad := strings.Repeat("ab", 32)
	apply("http-bad", wasmPlugin("header-http", modURL+"?v=2", "  sha256: "+bad+"\n"))
	deadline := time.Now().Add(20 * time.Second)
	for {
		out := c.ok("proxy-status")
		if strings.Contains(out, "NACKED") && strings.Contains(out, "sha256 mismatch") {
			t.Logf("proxy-status after a wrong sha256:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy-status does not report the sha256 mismatch:\n%s\nproxy log:\n%s", out, proxy.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _, body, err := wasmGet(addrs.Inbound); err != nil || !withHeader(code, "", body) {
		t.Errorf("after a refused update the old config should keep serving: %d %q %v", code, body, err)
	}
	c.ok("delete", "wasmplugin", "header-http")
	eventually("header gone after deleting the http WasmPlugin", without)

	// 4. A trapping plugin: fail-open passes traffic, fail-closed answers
	// 503 with the wasm_fail_stream flag; the proxy keeps running.
	apply("trap-open", wasmPlugin("trap", "file://"+trap, "  failStrategy: FAIL_OPEN\n"))
	// The fail-open trap is invisible in the answer, so wait for the
	// fail-closed version and then go back to check fail-open.
	apply("trap-closed", wasmPlugin("trap", "file://"+trap, "  failStrategy: FAIL_CLOSE\n"))
	eventually("fail-closed trap answers 503 wasm_fail_stream", func(code int, details, body string) bool {
		return code == 503 && details == "wasm_fail_stream"
	})
	apply("trap-open", wasmPlugin("trap", "file://"+trap, "  failStrategy: FAIL_OPEN\n"))
	eventually("fail-open trap passes traffic", without)
	for i := 0; i < 20; i++ {
		if code, _, body, err := wasmGet(addrs.Inbound); err != nil || !without(code, "", body) {
			t.Fatalf("fail-open request %d: %d %q %v", i, code, body, err)
		}
	}
	c.ok("delete", "wasmplugin", "trap")
	eventually("trap plugin gone", without)

	// 5. The deny plugin answers 403 to requests without x-allowed and
	// counts them in a plugin metric, scraped from the proxy's Prometheus
	// endpoint (15090) as Prometheus would.
	apply("deny", wasmPlugin("deny", "file://"+deny, ""))
	eventually("deny plugin answers 403", func(code int, _, body string) bool { return code == 403 && body == "denied by wasm\n" })
	deadline = time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addrs.Metrics + "/stats/prometheus")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		prom := string(b)
		if strings.Contains(prom, "# TYPE wasm_go_deny_denied_total counter\n") && !strings.Contains(prom, "wasm_go_deny_denied_total 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/stats/prometheus has no wasm_go_deny_denied_total > 0:\n%s", prom)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if proxy.Exited() {
		t.Fatalf("proxy exited:\n%s", proxy.Stderr())
	}
}

// asHeaderModule returns the AssemblyScript build of the seed's plugin,
// examples/wasm/assemblyscript/build/header.wasm (`make wasm-examples`
// rebuilds it with npm; the committed build is the fallback).
func asHeaderModule(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "examples", "wasm", "assemblyscript", "build", "header.wasm")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("AssemblyScript module: %v (run make wasm-examples)", err)
	}
	return p
}
