package meshconfig

import (
	"strings"
	"testing"
)

func TestParseOverDefaults(t *testing.T) {
	m, err := Parse("mesh.yaml", []byte(`
rootNamespace: istio-system
extensionProviders:
- name: zipkin
  zipkin:
    service: 127.0.0.1
    port: 9411
- name: ext-authz-http
  envoyExtAuthzHttp:
    service: authz.default.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
defaultProviders:
  tracing: [zipkin]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := RootNamespace(m); got != "istio-system" {
		t.Errorf("root namespace = %q", got)
	}
	if m.TrustDomain != "cluster.local" {
		t.Errorf("trust domain default lost: %q", m.TrustDomain)
	}
	if s := m.GetDefaultConfig().GetTracing().GetSampling(); s != 1.0 {
		t.Errorf("default sampling = %v, want 1", s)
	}
	if p := Provider(m, "zipkin"); p.GetZipkin().GetPort() != 9411 {
		t.Errorf("zipkin provider = %v", p)
	}
	if p := Provider(m, "ext-authz-http"); p.GetEnvoyExtAuthzHttp().GetService() != "authz.default.svc.cluster.local" {
		t.Errorf("ext authz provider = %v", p)
	}
	if Provider(m, "nope") != nil {
		t.Error("unknown provider found")
	}
	if got := m.GetDefaultProviders().GetTracing(); len(got) != 1 || got[0] != "zipkin" {
		t.Errorf("default tracing providers = %v", got)
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	_, err := Parse("mesh.yaml", []byte("rootNamespace: x\nextensionProviders:\n- name: z\n  zipkn:\n    port: 1\n"))
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"mesh.yaml:4", "extensionProviders[0]", `"zipkn"`, `did you mean "zipkin"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := Parse("m.yaml", []byte("defaultConfig:\n  tracing:\n    sampling: lots\n")); err == nil || !strings.Contains(err.Error(), "m.yaml:3") {
		t.Errorf("bad sampling: %v", err)
	}
}

func TestLoadEmptyIsDefault(t *testing.T) {
	m, err := Load("")
	if err != nil || RootNamespace(m) != DefaultRootNamespace || m.GetDefaultConfig().GetTracing().GetSampling() != 1 {
		t.Fatalf("Load(\"\") = %v, %v", m, err)
	}
	if _, err := Load("/nonexistent/mesh.yaml"); err == nil {
		t.Fatal("missing file: want error")
	}
}
