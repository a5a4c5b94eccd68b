package translate

import (
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/xds/model"
)

const telemetryMesh = `extensionProviders:
- {name: zipkin, zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}}
- {name: otel, opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}}
- {name: file, envoyFileAccessLog: {path: /var/log/access.log}}
`

func decodeTelemetry(t *testing.T, y string) []*config.Resource {
	t.Helper()
	rs, errs := config.DecodeAll("telemetry.yaml", []byte(y))
	if len(errs.Errors()) > 0 {
		t.Fatal(errs)
	}
	// Creation order follows document order (oldest first).
	for i, r := range rs {
		r.Meta.CreationTimestamp = time.Unix(int64(1000+i), 0)
	}
	return rs
}

func TestResolveTracing(t *testing.T) {
	mesh, err := meshconfig.Parse("mesh.yaml", []byte(telemetryMesh))
	if err != nil {
		t.Fatal(err)
	}
	proxy := &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "reviews"}}
	roots := map[string]bool{"weft-system": true, "istio-system": true}
	root := `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: istio-system}
spec:
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 10, customTags: {a: {literal: {value: root}}}}]
`
	cases := []struct {
		name     string
		yaml     string
		mode     TelemetryMode
		provider string // "" = no tracing
		sampling float64
		disabled bool
		tagA     string
	}{
		{name: "nothing configured: no tracing", provider: ""},
		{name: "mesh-wide rule", yaml: root, provider: "zipkin", sampling: 10, tagA: "root"},
		{name: "namespace overrides sampling, keeps provider; tags merge", yaml: root + `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: bookinfo}
spec:
  tracing: [{randomSamplingPercentage: 50, customTags: {a: {literal: {value: ns}}}}]
`, provider: "zipkin", sampling: 50, tagA: "ns"},
		{name: "other namespace ignored", yaml: root + `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: other}
spec:
  tracing: [{randomSamplingPercentage: 50}]
`, provider: "zipkin", sampling: 10, tagA: "root"},
		{name: "workload selector wins", yaml: root + `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: bookinfo}
spec:
  tracing: [{randomSamplingPercentage: 50}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wl, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing: [{providers: [{name: otel}], disableSpanReporting: true}]
`, provider: "otel", sampling: 50, disabled: true, tagA: "root"},
		{name: "selector not matching", yaml: root + `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wl, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: ratings}}
  tracing: [{providers: [{name: otel}]}]
`, provider: "zipkin", sampling: 10, tagA: "root"},
		{name: "match mode SERVER skipped on the client side", yaml: root + `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wl, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 100}]
`, mode: ModeClient, provider: "zipkin", sampling: 10, tagA: "root"},
		{name: "match mode SERVER applies on the server side", yaml: root + `---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wl, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing: [{match: {mode: SERVER}, randomSamplingPercentage: 100}]
`, mode: ModeServer, provider: "zipkin", sampling: 100, tagA: "root"},
		{name: "unknown provider: no tracing", yaml: `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: weft-system}
spec:
  tracing: [{providers: [{name: jaeger}]}]
`, provider: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cfgs []*config.Resource
			if tc.yaml != "" {
				cfgs = decodeTelemetry(t, tc.yaml)
			}
			pol := ResolveTracing(mesh, cfgs, proxy, roots, tc.mode)
			if tc.provider == "" {
				if pol != nil {
					t.Fatalf("got tracing %+v, want none", pol)
				}
				return
			}
			if pol == nil || pol.Provider.GetName() != tc.provider || pol.Sampling != tc.sampling || pol.DisableReporting != tc.disabled ||
				pol.CustomTags["a"].GetLiteral().GetValue() != tc.tagA {
				t.Fatalf("got %+v, want provider %s sampling %g disabled %v tag a=%s", pol, tc.provider, tc.sampling, tc.disabled, tc.tagA)
			}
		})
	}
}

func TestResolveAccessLogging(t *testing.T) {
	mesh, err := meshconfig.Parse("mesh.yaml", []byte(telemetryMesh))
	if err != nil {
		t.Fatal(err)
	}
	proxy := &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "reviews"}}
	roots := map[string]bool{"weft-system": true}
	if ResolveAccessLogging(mesh, nil, proxy, roots, ModeClient) != nil {
		t.Fatal("access logging configured without any rule")
	}
	cfgs := decodeTelemetry(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: weft-system}
spec:
  accessLogging: [{providers: [{name: file}], filter: {expression: "response.code >= 400"}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wl, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging: [{match: {mode: CLIENT}, disabled: true}]
`)
	srv := ResolveAccessLogging(mesh, cfgs, proxy, roots, ModeServer)
	if srv == nil || srv.Disabled || srv.Filter != "response.code >= 400" || len(srv.Providers) != 1 ||
		srv.Providers[0].GetEnvoyFileAccessLog().GetPath() != "/var/log/access.log" {
		t.Fatalf("server side %+v", srv)
	}
	cli := ResolveAccessLogging(mesh, cfgs, proxy, roots, ModeClient)
	if cli == nil || !cli.Disabled {
		t.Fatalf("client side %+v, want disabled", cli)
	}
	al := hcmAccessLog(cli)
	if len(al) != 1 || al[0].GetFilter().GetRuntimeFilter().GetPercentSampled().GetNumerator() != 0 ||
		!strings.Contains(al[0].GetFilter().String(), "weft.access_log.disabled") {
		t.Fatalf("disabled access log %v", al)
	}
}
