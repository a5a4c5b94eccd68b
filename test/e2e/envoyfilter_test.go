package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestEnvoyFilterPatchesLiveTraffic: a control plane and a `weft proxy`
// sidecar in front of an app. An EnvoyFilter that MERGEs the inbound
// virtual host (request_headers_to_add) and route (timeout) changes what
// live requests see; `weft proxy-status` lists the patch the proxy does not
// execute (a redis_proxy network filter); deleting the EnvoyFilter reverts
// all of it without restarting the proxy.
func TestEnvoyFilterPatchesLiveTraffic(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	bin := weft.Binary(t)

	// The app echoes x-envoyfilter; /slow answers after 3 s.
	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "x-envoyfilter=%q", r.Header.Get("X-Envoyfilter"))
	}))

	cp := harness.StartControlPlane(t, bin, "--data-dir", t.TempDir(), "--xds-address", "127.0.0.1:0",
		"--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	c := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=" + cp.URL}}

	addrs, proxy := startAppSidecar(t, bin, xds, "shop", appPort)

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (int, string, error) {
		resp, err := client.Get("http://" + addrs.Inbound + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	eventually := func(what, path string, want func(code int, body string) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var last string
		for {
			code, body, err := get(path)
			if err == nil && want(code, body) {
				return
			}
			last = fmt.Sprintf("%d %q %v", code, body, err)
			if proxy.Exited() {
				t.Fatalf("%s: proxy exited:\n%s", what, proxy.Stderr())
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out, last answer %s\nproxy log:\n%s", what, last, proxy.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	plain := func(code int, body string) bool { return code == 200 && body == `x-envoyfilter=""` }
	patched := func(code int, body string) bool { return code == 200 && body == `x-envoyfilter="on"` }
	eventually("app reachable through the sidecar", "/", plain)
	eventually("slow answer without a route timeout", "/slow", plain)

	f := filepath.Join(t.TempDir(), "ef.yaml")
	if err := os.WriteFile(f, []byte(`apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: shop-tuning, namespace: default}
spec:
  workloadSelector: {labels: {app: shop}}
  configPatches:
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: MERGE
      value:
        request_headers_to_add: [{header: {key: x-envoyfilter, value: "on"}}]
  - applyTo: HTTP_ROUTE
    match: {context: SIDECAR_INBOUND}
    patch: {operation: MERGE, value: {route: {timeout: 0.5s}}}
  - applyTo: NETWORK_FILTER
    match: {context: SIDECAR_INBOUND, listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.network.redis_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy
          stat_prefix: redis
          settings: {op_timeout: 1s}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("apply", "-f", f)
	eventually("VIRTUAL_HOST MERGE adds the request header", "/", patched)
	eventually("HTTP_ROUTE MERGE times the slow request out", "/slow", func(code int, _ string) bool { return code == http.StatusGatewayTimeout })

	want := "EnvoyFilter default/shop-tuning: network filter envoy.filters.network.redis_proxy is not executed by weft proxy"
	deadline := time.Now().Add(30 * time.Second)
	for out := ""; !strings.Contains(out, want); {
		if time.Now().After(deadline) {
			t.Fatalf("proxy-status lacks %q:\n%s", want, out)
		}
		time.Sleep(100 * time.Millisecond)
		out = c.ok("proxy-status")
		if strings.Contains(out, want) && !strings.Contains(out, "\nWARN sidecar~") {
			t.Fatalf("proxy-status warning is not on a WARN line:\n%s", out)
		}
	}
	if out := c.ok("analyze", "-f", f); !strings.Contains(out, "[WEFT0109]") || !strings.Contains(out, "redis_proxy is not executed by weft proxy") {
		t.Errorf("weft analyze does not report the redis_proxy filter:\n%s", out)
	}

	c.ok("delete", "envoyfilter", "shop-tuning")
	eventually("header gone after delete", "/", plain)
	eventually("timeout gone after delete", "/slow", plain)
	for out := c.ok("proxy-status"); strings.Contains(out, "redis_proxy"); out = c.ok("proxy-status") {
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("proxy-status still warns after the delete:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
