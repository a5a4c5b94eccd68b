package meshconfig

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestExtAuthzProviders(t *testing.T) {
	m, err := Parse("mesh.yaml", []byte(`extensionProviders:
- name: http
  envoyExtAuthzHttp:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 2s
    statusOnError: "503"
    includeHeadersInCheck: [x-old]
    headersToUpstreamOnAllow: [x-a]
- name: grpc
  envoyExtAuthzGrpc: {service: ext-authz.foo.svc.cluster.local, port: 9000, failOpen: true}
- name: zipkin
  zipkin: {service: z, port: 9411}
`))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ExtAuthz(m, "http")
	if err != nil {
		t.Fatal(err)
	}
	if h.GRPC || h.Namespace != "foo" || h.Host != "ext-authz.foo.svc.cluster.local" || h.Timeout != 2*time.Second ||
		h.StatusOnError != 503 || h.Cluster() != "outbound|8000||ext-authz.foo.svc.cluster.local" || h.RequestHeaders[0] != "x-old" {
		t.Errorf("http provider: %+v", h)
	}
	g, err := ExtAuthz(m, "grpc")
	if err != nil {
		t.Fatal(err)
	}
	if !g.GRPC || !g.FailOpen || g.Timeout != DefaultExtAuthzTimeout || g.Port != 9000 {
		t.Errorf("grpc provider: %+v", g)
	}
	if _, err := ExtAuthz(m, "missing"); !errors.Is(err, ErrProviderNotFound) {
		t.Errorf("missing: %v", err)
	}
	if _, err := ExtAuthz(m, "zipkin"); err == nil || !strings.Contains(err.Error(), "not an ext_authz provider") {
		t.Errorf("zipkin as ext_authz: %v", err)
	}
}

func TestExtAuthzProviderErrors(t *testing.T) {
	for _, tt := range []struct{ doc, want string }{
		{"- name: a\n  envoyExtAuthzHttp: {port: 80}", "extensionProviders[0] (a): envoyExtAuthzHttp.service is required"},
		{"- name: a\n  envoyExtAuthzGrpc: {service: x, port: 0}", "envoyExtAuthzGrpc.port 0"},
		{"- name: a\n  envoyExtAuthzHttp: {service: x, port: 80, statusOnError: nope}", "statusOnError \"nope\""},
		{"- name: a\n  envoyExtAuthzHttp: {service: x, port: 80, pathPrefix: check}", "pathPrefix \"check\" must start with /"},
		{"- name: a\n  envoyExtAuthzHttp: {service: x, port: 80, includeRequestBodyInCheck: {allowPartialMessage: true}}", "maxRequestBytes must be positive"},
		{"- name: a\n  envoyExtAuthzHttp: {service: x, port: 80}\n- name: a\n  envoyExtAuthzGrpc: {service: x, port: 81}", "extensionProviders[1].name \"a\": duplicate"},
	} {
		_, err := Parse("mesh.yaml", []byte("extensionProviders:\n"+tt.doc+"\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "mesh.yaml") {
			t.Errorf("%s:\n got %v\nwant %q", tt.doc, err, tt.want)
		}
	}
}
