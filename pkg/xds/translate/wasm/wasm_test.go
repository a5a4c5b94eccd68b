package wasm

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

func decode(t *testing.T, y string) []*config.Resource {
	t.Helper()
	if y == "" {
		return nil
	}
	rs, err := config.Decode("test.yaml", []byte(y))
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return rs
}

func wasmOf(t *testing.T, f *hcmv3.HttpFilter) *wasmhttpv3.Wasm {
	t.Helper()
	var w wasmhttpv3.Wasm
	if err := f.GetTypedConfig().UnmarshalTo(&w); err != nil {
		t.Fatalf("%s: %v", f.GetName(), err)
	}
	return &w
}

// desc summarizes a chain as "name" or "wasm:<plugin name>".
func desc(t *testing.T, fs []*hcmv3.HttpFilter) string {
	var out []string
	for _, f := range fs {
		if IsWasm(f) {
			out = append(out, "wasm:"+wasmOf(t, f).GetConfig().GetName())
			continue
		}
		out = append(out, f.GetName())
	}
	return strings.Join(out, ",")
}

const plugins = `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: stats, namespace: default}
spec:
  url: file:///opt/stats.wasm
  phase: STATS
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: authn-low, namespace: default}
spec:
  url: file:///opt/a.wasm
  phase: AUTHN
  priority: 1
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: authn-high, namespace: istio-system}
spec:
  url: https://example.com/b.wasm
  sha256: abc123
  phase: AUTHN
  priority: 10
  failStrategy: FAIL_OPEN
  pluginConfig: {header: x-test, value: v}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: plain, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  url: file:///opt/plain.wasm
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: other-app, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  url: file:///opt/x.wasm
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: other-ns, namespace: prod}
spec:
  url: file:///opt/x.wasm
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: client, namespace: default}
spec:
  url: file:///opt/client.wasm
  match: [{mode: CLIENT}]
`

func seed(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "testdata", "fixed", "envoy-filter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(b), "metadata:\n", "metadata:\n  namespace: default\n", 1)
}

func TestApply(t *testing.T) {
	proxy := &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "reviews"}}
	base := []*hcmv3.HttpFilter{{Name: "envoy.filters.http.jwt_authn"}, {Name: "envoy.filters.http.rbac"}, {Name: "istio.stats"}, {Name: RouterName}}
	inline := base64.StdEncoding.EncodeToString([]byte("\x00asm\x01\x00\x00\x00"))
	ef := func(ctx, op, sub, extra string) string {
		subYAML := ""
		if sub != "" {
			subYAML = "\n            subFilter: {name: " + sub + "}"
		}
		return `
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef, namespace: default}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: ` + ctx + `
      listener:
        filterChain:
          filter:
            name: envoy.http_connection_manager` + subYAML + `
    patch:
      operation: ` + op + `
      value:
        name: my-ext
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
          config:
            fail_open: true
            configuration: {"@type": type.googleapis.com/google.protobuf.StringValue, value: cfg}
            vm_config:
              code: {local: {inline_bytes: "` + inline + `"}}` + extra
	}
	tests := []struct {
		name    string
		plugins string
		efs     string
		dir     Direction
		want    string
		wantErr string
	}{
		{"no resources", "", "", Inbound, "envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, ""},
		{"plugins by phase and priority", plugins, "", Inbound,
			"wasm:istio-system.authn-high,wasm:default.authn-low,envoy.filters.http.jwt_authn,envoy.filters.http.rbac,wasm:default.stats,istio.stats,wasm:default.plain," + RouterName, ""},
		{"outbound gets CLIENT plugins only", plugins, "", Outbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats,wasm:default.client," + RouterName, ""},
		{"seed EnvoyFilter (patch:) inbound", "", "SEED", Inbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats,wasm:my-wasm-extension," + RouterName, ""},
		{"seed EnvoyFilter not outbound", "", "SEED", Outbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, ""},
		{"insert first", "", ef("ANY", "INSERT_FIRST", "", ""), Outbound,
			"wasm:my-ext,envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, ""},
		{"insert after rbac", "", ef("SIDECAR_INBOUND", "INSERT_AFTER", "envoy.filters.http.rbac", ""), Inbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,wasm:my-ext,istio.stats," + RouterName, ""},
		{"insert before missing anchor is a no-op", "", ef("ANY", "INSERT_BEFORE", "nope", ""), Inbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, ""},
		{"remove", "", ef("ANY", "REMOVE", "istio.stats", ""), Inbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac," + RouterName, ""},
		{"context mismatch", "", ef("SIDECAR_OUTBOUND", "INSERT_FIRST", "", ""), Inbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, ""},
		{"bad url scheme", `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: ftp, namespace: default}
spec: {url: ftp://example.com/y.wasm}
`, "", Inbound, "envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, "only file://, http(s):// and oci://"},
		{"oci with a pull secret", `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: private, namespace: default}
spec: {url: "oci://ghcr.io/x/y:1", imagePullSecret: creds}
`, "", Inbound, "envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, "imagePullSecret"},
		{"http without sha256", `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: nosum, namespace: default}
spec: {url: "http://h/x.wasm"}
`, "", Inbound, "envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, "sha256 is required"},
		{"bad typed config", "", ef("ANY", "INSERT_FIRST", "", "\n            bogus_field: 1"), Inbound,
			"envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats," + RouterName, "typed_config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			efs := tt.efs
			if efs == "SEED" {
				efs = seed(t)
			}
			got, err := Apply(base, decode(t, tt.plugins), decode(t, efs), proxy, tt.dir, "")
			if tt.wantErr == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if d := desc(t, got); d != tt.want {
				t.Fatalf("chain:\n got %s\nwant %s", d, tt.want)
			}
			if desc(t, base) != "envoy.filters.http.jwt_authn,envoy.filters.http.rbac,istio.stats,"+RouterName {
				t.Fatal("input chain modified")
			}
		})
	}
}

func TestTranslateFields(t *testing.T) {
	proxy := &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "reviews"}}
	fs, err := Translate(decode(t, plugins), decode(t, seed(t)), proxy)
	if err != nil {
		t.Fatal(err)
	}
	if d := desc(t, fs); d != "wasm:istio-system.authn-high,wasm:default.authn-low,wasm:default.stats,wasm:default.plain,wasm:my-wasm-extension" {
		t.Fatalf("got %s", d)
	}
	for _, f := range fs {
		if f.GetName() != FilterName {
			t.Errorf("filter name %q, want %q", f.GetName(), FilterName)
		}
	}
	hi := wasmOf(t, fs[0]).GetConfig()
	if !hi.GetFailOpen() || hi.GetVmConfig().GetCode().GetRemote().GetSha256() != "abc123" ||
		hi.GetVmConfig().GetCode().GetRemote().GetHttpUri().GetUri() != "https://example.com/b.wasm" {
		t.Errorf("authn-high: %v", hi)
	}
	var sv wrapperspb.StringValue
	if err := hi.GetConfiguration().UnmarshalTo(&sv); err != nil || !strings.Contains(sv.GetValue(), `"header":"x-test"`) {
		t.Errorf("configuration = %q, %v", sv.GetValue(), err)
	}
	low := wasmOf(t, fs[1]).GetConfig()
	if low.GetFailOpen() || low.GetVmConfig().GetCode().GetLocal().GetFilename() != "/opt/a.wasm" {
		t.Errorf("authn-low: %v", low)
	}
	seedCfg := wasmOf(t, fs[4]).GetConfig()
	if !strings.HasPrefix(seedCfg.GetVmConfig().GetCode().GetLocal().GetInlineString(), "<binary-content") {
		t.Errorf("seed: %v", seedCfg)
	}
	// A proxy in another namespace without labels sees only root plugins.
	fs, err = Translate(decode(t, plugins), nil, &model.Proxy{Namespace: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if d := desc(t, fs); d != "wasm:istio-system.authn-high,wasm:prod.other-ns" {
		t.Fatalf("prod: %s", d)
	}
	// With another root namespace, istio-system plugins are not mesh-wide.
	got, err := Apply(nil, decode(t, plugins), nil, &model.Proxy{Namespace: "prod"}, Inbound, "mesh-root")
	if err != nil {
		t.Fatal(err)
	}
	if d := desc(t, got); d != "wasm:prod.other-ns" {
		t.Fatalf("mesh-root: %s", d)
	}
}

// An oci:// WasmPlugin becomes a remote data source the proxy pulls
// (pkg/proxy/filter/wasm/oci.go), with the pull policy and resource
// version in the VM environment.
func TestTranslateOCI(t *testing.T) {
	rs := decode(t, `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: oci, namespace: default, resourceVersion: "42"}
spec:
  url: oci://ghcr.io/org/header:v1
  imagePullPolicy: Always
  sha256: `+strings.Repeat("b", 64)+`
`)
	fs, err := Translate(rs, nil, &model.Proxy{Namespace: "default"})
	if err != nil || len(fs) != 1 {
		t.Fatalf("Translate: %v, %d filters", err, len(fs))
	}
	vm := wasmOf(t, fs[0]).GetConfig().GetVmConfig()
	r := vm.GetCode().GetRemote()
	if r.GetHttpUri().GetUri() != "oci://ghcr.io/org/header:v1" || r.GetSha256() != strings.Repeat("b", 64) ||
		r.GetHttpUri().GetCluster() != "outbound|443||ghcr.io" {
		t.Errorf("remote = %v", r)
	}
	env := vm.GetEnvironmentVariables().GetKeyValues()
	if env[PullPolicyEnv] != "Always" || env[ResourceVersionEnv] != rs[0].Meta.ResourceVersion {
		t.Errorf("environment = %v (resource version %q)", env, rs[0].Meta.ResourceVersion)
	}
	if err := fs[0].Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// Istio reads a URL without scheme as an OCI image.
	fs, err = Translate(decode(t, `
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: bare, namespace: default}
spec: {url: "ghcr.io/org/header:v2"}
`), nil, &model.Proxy{Namespace: "default"})
	if err != nil || len(fs) != 1 {
		t.Fatalf("Translate bare: %v, %d filters", err, len(fs))
	}
	if u := wasmOf(t, fs[0]).GetConfig().GetVmConfig().GetCode().GetRemote().GetHttpUri().GetUri(); u != "oci://ghcr.io/org/header:v2" {
		t.Errorf("bare url → %q", u)
	}
}
