package e2e

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestWasmPluginOCI: WasmPlugins with oci:// URLs served by a real
// registry (go-containerregistry's, on 127.0.0.1, images pushed with its
// client): the seed's header plugin as Istio's OCI wasm artifact and as a
// Docker image with plugin.wasm reaches live traffic through `weft proxy`;
// deleting the WasmPlugin removes it.
func TestWasmPluginOCI(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	bin := weft.Binary(t)
	mod, err := os.ReadFile(asHeaderModule(t))
	if err != nil {
		t.Fatal(err)
	}

	var manifestGets atomic.Int64
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	regSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			manifestGets.Add(1)
		}
		reg.ServeHTTP(w, r)
	})}
	regLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = regSrv.Serve(regLis) }()
	t.Cleanup(func() { regSrv.Close() })
	host := regLis.Addr().String()
	push := func(repoTag string, img v1.Image) {
		t.Helper()
		ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	artifact, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(mod, "application/vnd.module.wasm.content.layer.v1+wasm")})
	if err != nil {
		t.Fatal(err)
	}
	push("plugins/header:v1", artifact)
	layer, err := crane.Layer(map[string][]byte{"plugin.wasm": mod})
	if err != nil {
		t.Fatal(err)
	}
	dockerImg, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	push("plugins/header-docker:v1", dockerImg)

	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "x-my-header=%q", r.Header.Get("X-My-Header"))
	}))

	cp := harness.StartControlPlane(t, bin, "--data-dir", t.TempDir(), "--xds-address", "127.0.0.1:0",
		"--monitoring-address", "127.0.0.1:0", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	c := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=" + cp.URL}}
	addrs, proxy := startAppSidecar(t, bin, xds, "web", appPort)
	eventually := func(what string, want func(code int, body string) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var last string
		for {
			code, _, body, err := wasmGet(addrs.Inbound)
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
	withHeader := func(code int, body string) bool { return code == 200 && body == `x-my-header="Hello from WASM!"` }
	without := func(code int, body string) bool { return code == 200 && body == `x-my-header=""` }
	apply := func(yaml string) {
		t.Helper()
		f := filepath.Join(t.TempDir(), "wp.yaml")
		if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c.ok("apply", "-f", f)
	}
	plugin := func(url, policy string) string {
		return "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: header-oci}\nspec:\n  selector:\n    matchLabels: {app: web}\n  url: " +
			url + "\n  imagePullPolicy: " + policy + "\n"
	}
	eventually("app reachable through the sidecar", without)

	apply(plugin("oci://"+host+"/plugins/header:v1", "IfNotPresent"))
	eventually("WasmPlugin oci:// (wasm artifact) adds x-my-header", withHeader)
	if manifestGets.Load() == 0 {
		t.Error("the proxy never asked the registry for the manifest")
	}
	c.ok("delete", "wasmplugin", "header-oci")
	eventually("header gone after deleting the WasmPlugin", without)

	apply(plugin("oci://"+host+"/plugins/header-docker:v1", "Always"))
	eventually("WasmPlugin oci:// (Docker image with plugin.wasm) adds x-my-header", withHeader)
	c.ok("delete", "wasmplugin", "header-oci")
	eventually("header gone after deleting the second WasmPlugin", without)
}
