package analyze

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/meshconfig"
)

func TestTelemetryTargets(t *testing.T) {
	rs := decode(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: apps}
spec:
  targetRefs:
  - {kind: Service, group: "", name: web}
  - {kind: Service, group: "", name: gone}
  - {kind: ServiceEntry, group: networking.istio.io, name: legacy}
  - {kind: ServiceEntry, group: networking.istio.io, name: nope}
  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}
  - {kind: Gateway, group: gateway.networking.k8s.io, name: other-gw}
  - {kind: GatewayClass, group: gateway.networking.k8s.io, name: istio}
  - {kind: GatewayClass, group: gateway.networking.k8s.io, name: custom}
  metrics:
  - overrides:
    - match: {metric: TCP_OPENED_CONNECTIONS}
      tagOverrides:
        host: {value: request.host}
        port: {value: string(destination.port)}
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        host: {value: request.host}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: apps}
spec:
  hosts: [legacy.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
`)
	var got []string
	for _, m := range Analyze(rs, WithKnownHosts("web.apps.svc.cluster.local")) {
		if m.Code == CodeTelemetryTargetNotFound || m.Code == CodeTelemetryTCPAttribute {
			got = append(got, m.String())
		}
	}
	want := []string{
		`Warning [WEFT0116] Telemetry apps/t: spec.targetRefs[1]: Service apps/gone (gone.apps.svc.cluster.local) is not in the registry`,
		`Warning [WEFT0116] Telemetry apps/t: spec.targetRefs[3]: ServiceEntry apps/nope not found`,
		`Warning [WEFT0116] Telemetry apps/t: spec.targetRefs[5]: Gateway apps/other-gw (gateway.networking.k8s.io) not found`,
		`Warning [WEFT0116] Telemetry apps/t: spec.targetRefs[7]: GatewayClass "custom" not found`,
		`Warning [WEFT0117] Telemetry apps/t: spec.metrics[0].overrides[0].tagOverrides[host].value: TCP_OPENED_CONNECTIONS is a TCP metric: request.host is absent`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("message %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}

// Without a registry an unknown Service is only Info.
func TestTelemetryTargetNoRegistry(t *testing.T) {
	msgs := Analyze(decode(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: apps}
spec:
  targetRefs: [{kind: Service, group: "", name: web}]
`))
	if len(msgs) != 1 || !strings.Contains(msgs[0].String(), "Info [WEFT0116] Telemetry apps/t: spec.targetRefs[0]: Service apps/web (web.apps.svc.cluster.local) is not known here") {
		t.Errorf("messages %v", msgs)
	}
}

func TestTelemetryProviders(t *testing.T) {
	rs := decode(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: t, namespace: weft-system}
spec:
  tracing:
  - providers: [{name: zipkin}]
  - providers: [{name: jaeger}]
  - providers: [{name: file}]
  accessLogging:
  - providers: [{name: envoy}, {name: file}, {name: otel-als}, {name: http-als}, {name: nope}]
  - providers: [{name: otel-bad}]
`)
	mesh, err := meshconfig.Parse("mesh.yaml", []byte(`extensionProviders:
- {name: zipkin, zipkin: {service: zipkin.weft-system.svc.cluster.local, port: 9411}}
- {name: file, envoyFileAccessLog: {path: /dev/stdout}}
- {name: otel-als, envoyOtelAls: {service: otel.weft-system.svc.cluster.local, port: 4317}}
- {name: http-als, envoyHttpAls: {service: als.weft-system.svc.cluster.local, port: 9000}}
- name: otel-bad
  envoyOtelAls:
    service: otel.weft-system.svc.cluster.local
    port: 4317
    logFormat: {text: "%RESPONSE_CODE%", labels: {ok: "%PROTOCOL%", peer: "%UPSTREAM_PEER_SUBJECT%"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if msgs := Analyze(rs); len(msgs) != 0 {
		t.Fatalf("without mesh config: %v", msgs)
	}
	var got []string
	for _, m := range Analyze(rs, WithMeshConfig(mesh)) {
		got = append(got, m.String())
	}
	want := []string{
		`Warning [WEFT0118] Telemetry weft-system/t: spec.tracing[1].providers[0].name: tracing provider "jaeger" is not in the mesh config's extensionProviders`,
		`Warning [WEFT0118] Telemetry weft-system/t: spec.tracing[2].providers[0].name: provider "file" is not a zipkin or opentelemetry provider`,
		`Warning [WEFT0118] Telemetry weft-system/t: spec.accessLogging[0].providers[3].name: access log provider "http-als" is not an envoyFileAccessLog or envoyOtelAls provider`,
		`Warning [WEFT0118] Telemetry weft-system/t: spec.accessLogging[0].providers[4].name: access log provider "nope" is not in the mesh config's extensionProviders`,
		`Warning [WEFT0130] Telemetry weft-system/t: spec.accessLogging[1].providers[0].name: envoyOtelAls provider "otel-bad": logFormat.labels.peer: format "%UPSTREAM_PEER_SUBJECT%": unknown command operator %UPSTREAM_PEER_SUBJECT%: weft proxies refuse (NACK)`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d messages, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("message %d:\n got %s\nwant %s", i, got[i], want[i])
		}
	}
}
