package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	wasmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/wasm/v3"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testRegistry is go-containerregistry's registry behind a Distribution
// token server: every /v2/ request needs the bearer token /token hands out
// for service "weft-test".
type testRegistry struct {
	host      string
	manifests atomic.Int64 // manifest GETs
	tokens    atomic.Int64
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			if r.URL.Query().Get("service") != "weft-test" || !strings.HasPrefix(r.URL.Query().Get("scope"), "repository:plugins/") {
				http.Error(w, "bad token request "+r.URL.RawQuery, http.StatusBadRequest)
				return
			}
			tr.tokens.Add(1)
			_, _ = io.WriteString(w, `{"token":"pull-token"}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer pull-token" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="weft-test",scope="repository:plugins/x:pull"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			tr.manifests.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

// push writes img as REPO:TAG with go-containerregistry's client (which
// does the token flow itself) and returns the manifest's hex sha256.
func (tr *testRegistry) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(tr.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.Hex
}

// wasmArtifact is Istio's OCI artifact format: one layer of media type
// application/vnd.module.wasm.content.layer.v1+wasm holding the module.
func wasmArtifact(t *testing.T, module []byte) v1.Image {
	t.Helper()
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: static.NewLayer(module, types.MediaType(WasmLayerMediaType))})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, "application/vnd.module.wasm.config.v1+json")
}

// dockerImage is Istio's Docker image format: one layer with plugin.wasm.
func dockerImage(t *testing.T, files map[string][]byte) v1.Image {
	t.Helper()
	l, err := crane.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func ociVM(policy, version string) *wasmv3.VmConfig {
	vm := &wasmv3.VmConfig{}
	if policy != "" || version != "" {
		vm.EnvironmentVariables = &wasmv3.EnvironmentVariables{KeyValues: map[string]string{PullPolicyEnv: policy, ResourceVersionEnv: version}}
	}
	return vm
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestFetchOCI(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t)
	e, err := NewEngine(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	ctx := context.Background()
	modA := []byte("\x00asm\x01\x00\x00\x00module-a")
	modB := []byte("\x00asm\x01\x00\x00\x00module-b")
	artifactSum := tr.push(t, "plugins/header:v1", wasmArtifact(t, modA))
	tr.push(t, "plugins/docker:v1", dockerImage(t, map[string][]byte{"plugin.wasm": modB, "README": []byte("x")}))
	tr.push(t, "plugins/empty:v1", dockerImage(t, map[string][]byte{"other.wasm": modB}))
	base := "oci://" + tr.host + "/plugins/"

	for _, tc := range []struct {
		name, url, sum string
		want           []byte
		wantErr        string
	}{
		{name: "OCI wasm artifact", url: base + "header:v1", want: modA},
		{name: "Docker image with plugin.wasm", url: base + "docker:v1", want: modB},
		{name: "by digest", url: base + "header@sha256:" + artifactSum, want: modA},
		{name: "sha256 of the manifest", url: base + "header:v1", sum: artifactSum, want: modA},
		{name: "sha256 of the module", url: base + "header:v1", sum: hexSum(modA), want: modA},
		{name: "wrong sha256", url: base + "header:v1", sum: hexSum(modB), wantErr: "sha256 mismatch"},
		{name: "wrong digest", url: base + "header@sha256:" + hexSum(modB), wantErr: "MANIFEST_UNKNOWN"},
		{name: "no plugin.wasm", url: base + "empty:v1", wantErr: "layer has no plugin.wasm"},
		{name: "unknown tag", url: base + "header:v9", wantErr: "404"},
		{name: "not a reference", url: "oci://" + tr.host, wantErr: "want oci://REGISTRY/REPOSITORY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.fetchOCI(ctx, tc.url, tc.sum, ociVM("", ""))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(tc.want) {
				t.Errorf("module = %q, want %q", got, tc.want)
			}
		})
	}
	if tr.tokens.Load() == 0 {
		t.Error("the pulls never asked the token server")
	}

	// Pull policies: the tag moves to a new module.
	url := base + "moving:v1"
	tr.push(t, "plugins/moving:v1", wasmArtifact(t, modA))
	for _, step := range []struct {
		name, policy, version string
		push                  []byte
		want                  string
		pulls                 int64 // manifest GETs this step
	}{
		{name: "first pull", policy: "IfNotPresent", want: string(modA), pulls: 1},
		{name: "IfNotPresent keeps the cached module", policy: "IfNotPresent", push: modB, want: string(modA), pulls: 0},
		{name: "Always pulls for a new resource version", policy: "Always", version: "2", want: string(modB), pulls: 1},
		{name: "Always, same resource version: cached", policy: "Always", version: "2", want: string(modB), pulls: 0},
		{name: "Always, next resource version", policy: "Always", version: "3", push: modA, want: string(modA), pulls: 1},
	} {
		if step.push != nil {
			tr.push(t, "plugins/moving:v1", wasmArtifact(t, step.push))
		}
		before := tr.manifests.Load()
		got, err := e.fetchOCI(ctx, url, "", ociVM(step.policy, step.version))
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if string(got) != step.want {
			t.Errorf("%s: module %q, want %q", step.name, got, step.want)
		}
		if n := tr.manifests.Load() - before; n != step.pulls {
			t.Errorf("%s: %d manifest requests, want %d", step.name, n, step.pulls)
		}
	}
}

// A WasmPlugin oci:// module reaches the engine through the xDS config
// (remote http_uri oci://), as the control plane sends it.
func TestPluginFromOCIConfig(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t)
	e, err := NewEngine(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	tr.push(t, "plugins/bad:v1", wasmArtifact(t, []byte("not wasm")))
	pc := &wasmv3.PluginConfig{Name: "p", Vm: &wasmv3.PluginConfig_VmConfig{VmConfig: &wasmv3.VmConfig{
		Code: &corev3.AsyncDataSource{Specifier: &corev3.AsyncDataSource_Remote{Remote: &corev3.RemoteDataSource{
			HttpUri: &corev3.HttpUri{Uri: "oci://" + tr.host + "/plugins/bad:v1"}}}}}}}
	// The bytes arrive from the registry and reach the compiler, which
	// refuses them: the error is the compiler's, not a fetch error.
	_, err = e.PluginFromConfig(context.Background(), pc)
	if err == nil || strings.Contains(err.Error(), "oci://") {
		t.Fatalf("err = %v, want a compile error for the pulled bytes", err)
	}
	if tr.manifests.Load() != 1 {
		t.Errorf("%d manifest requests, want 1", tr.manifests.Load())
	}
}

func TestParseOCIRef(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want OCIRef
	}{
		{"oci://ghcr.io/org/plugin:1.0", OCIRef{"ghcr.io", "org/plugin", "1.0", ""}},
		{"oci://127.0.0.1:5000/a/b", OCIRef{"127.0.0.1:5000", "a/b", "latest", ""}},
		{"oci://docker.io/nginx:1", OCIRef{"registry-1.docker.io", "library/nginx", "1", ""}},
		{"oci://r.example/x@sha256:" + strings.Repeat("a", 64), OCIRef{"r.example", "x", "", "sha256:" + strings.Repeat("a", 64)}},
	} {
		got, err := ParseOCIRef(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseOCIRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	if _, c := parseChallenge(`Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"`); c["scope"] != "repository:a/b:pull,push" || c["service"] != "reg" {
		t.Errorf("parseChallenge: %v", c)
	}
}

// With WithModuleCacheDir, a new engine (a restarted proxy) finds an
// IfNotPresent module on disk without asking the registry; Always pulls.
func TestFetchOCIDiskCache(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t)
	dir := t.TempDir()
	mod := []byte("\x00asm\x01\x00\x00\x00cached")
	sum := tr.push(t, "plugins/cached:v1", wasmArtifact(t, mod))
	url := "oci://" + tr.host + "/plugins/cached:v1"
	for i, tc := range []struct {
		policy string
		pulls  int64
	}{{"IfNotPresent", 1}, {"IfNotPresent", 0}, {"Always", 1}} {
		e, err := NewEngine(context.Background(), slog.New(slog.DiscardHandler), WithModuleCacheDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		before := tr.manifests.Load()
		got, err := e.fetchOCI(context.Background(), url, sum, ociVM(tc.policy, "1"))
		e.Close(context.Background())
		if err != nil || string(got) != string(mod) {
			t.Fatalf("engine %d (%s): %q, %v", i, tc.policy, got, err)
		}
		if n := tr.manifests.Load() - before; n != tc.pulls {
			t.Errorf("engine %d (%s): %d manifest requests, want %d", i, tc.policy, n, tc.pulls)
		}
	}
}
