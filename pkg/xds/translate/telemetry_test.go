package translate

import (
	"fmt"
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
			pol := ResolveTracing(mesh, SelectTelemetry(cfgs, proxy, roots, TelemetryScope{}), tc.mode)
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
	if ResolveAccessLogging(mesh, SelectTelemetry(nil, proxy, roots, TelemetryScope{}), ModeClient) != nil {
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
	srv := ResolveAccessLogging(mesh, SelectTelemetry(cfgs, proxy, roots, TelemetryScope{}), ModeServer)
	if srv == nil || srv.Disabled || srv.Filter != "response.code >= 400" || len(srv.Providers) != 1 ||
		srv.Providers[0].GetEnvoyFileAccessLog().GetPath() != "/var/log/access.log" {
		t.Fatalf("server side %+v", srv)
	}
	cli := ResolveAccessLogging(mesh, SelectTelemetry(cfgs, proxy, roots, TelemetryScope{}), ModeClient)
	if cli == nil || !cli.Disabled {
		t.Fatalf("client side %+v, want disabled", cli)
	}
	al := hcmAccessLog(cli)
	if len(al) != 1 || al[0].GetFilter().GetRuntimeFilter().GetPercentSampled().GetNumerator() != 0 ||
		!strings.Contains(al[0].GetFilter().String(), "weft.access_log.disabled") {
		t.Fatalf("disabled access log %v", al)
	}
}

// targetRefs select workloads as Istio's policy attachment does (Service
// and ServiceEntry: the sidecars behind them), at workload precedence.
func TestSelectTelemetryTargetRefs(t *testing.T) {
	roots := map[string]bool{"weft-system": true}
	cfgs := decodeTelemetry(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: weft-system}
spec:
  tracing: [{randomSamplingPercentage: 1}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: bookinfo}
spec:
  tracing: [{randomSamplingPercentage: 2}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: by-service, namespace: bookinfo}
spec:
  targetRefs: [{kind: Service, group: "", name: reviews}]
  tracing: [{randomSamplingPercentage: 3}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: by-gateway, namespace: bookinfo}
spec:
  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: ingress}
  tracing: [{randomSamplingPercentage: 4}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: by-class, namespace: weft-system}
spec:
  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio}]
  tracing: [{randomSamplingPercentage: 5}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: bookinfo}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: by-se, namespace: bookinfo}
spec:
  targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: legacy}]
  tracing: [{randomSamplingPercentage: 6}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: bookinfo}
spec:
  hosts: [legacy.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: legacy}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: manual, namespace: bookinfo}
spec:
  gatewayClassName: istio
  addresses: [{type: Hostname, value: edge.bookinfo.svc.cluster.local}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: by-manual-gateway, namespace: bookinfo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: manual}]
  tracing: [{randomSamplingPercentage: 8}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: other-ns-service, namespace: other}
spec:
  targetRefs: [{kind: Service, name: reviews}]
  tracing: [{randomSamplingPercentage: 7}]
`)
	serves := func(hosts ...string) TelemetryScope {
		return TelemetryScope{DomainSuffix: "cluster.local", Serves: func(h string) bool {
			for _, x := range hosts {
				if x == h {
					return true
				}
			}
			return false
		}}
	}
	cases := []struct {
		name     string
		proxy    *model.Proxy
		scope    TelemetryScope
		sampling float64
	}{
		{"behind the Service: workload level wins", &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "reviews"}},
			serves("reviews.bookinfo.svc.cluster.local"), 3},
		{"not behind it: namespace level", &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "ratings"}},
			serves("ratings.bookinfo.svc.cluster.local"), 2},
		{"same Service name in another namespace does not match", &model.Proxy{Namespace: "other", Labels: map[string]string{"app": "reviews"}},
			serves("reviews.other.svc.cluster.local"), 7},
		{"Gateway by gateway-name label; the newer GatewayClass policy overrides", &model.Proxy{Namespace: "bookinfo",
			Labels: map[string]string{"gateway.networking.k8s.io/gateway-name": "ingress"}}, serves(), 5},
		{"Gateway by its spec.addresses Service (manual deployment)", &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "edge"}},
			serves("edge.bookinfo.svc.cluster.local"), 8},
		{"ServiceEntry workloadSelector", &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "legacy"}}, serves(), 6},
		{"ServiceEntry host endpoint", &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "x"}}, serves("legacy.example.com"), 6},
		{"root namespace only", &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "reviews"}}, serves("reviews.bookinfo.svc.cluster.local"), 1},
	}
	mesh, err := meshconfig.Parse("mesh.yaml", []byte(telemetryMesh+"defaultProviders: {tracing: [zipkin]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := ResolveTracing(mesh, SelectTelemetry(cfgs, tc.proxy, roots, tc.scope), ModeClient)
			if pol == nil || pol.Sampling != tc.sampling {
				t.Fatalf("tracing %+v, want sampling %g", pol, tc.sampling)
			}
		})
	}
}

func TestResolveMetricsUpsert(t *testing.T) {
	cfgs := decodeTelemetry(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: weft-system}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides:
        request_host: {value: request.host}
        request_protocol: {operation: REMOVE}
    - match: {metric: TCP_SENT_BYTES, mode: SERVER}
      disabled: true
  - providers: [{name: stackdriver}]
    overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: wl, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {value: "'h'"}
`)
	proxy := &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "reviews"}}
	tms := SelectTelemetry(cfgs, proxy, map[string]bool{"weft-system": true}, TelemetryScope{})
	got := map[TelemetryMode]string{}
	for _, mode := range []TelemetryMode{ModeClient, ModeServer} {
		var b strings.Builder
		for _, m := range ResolveMetrics(tms, mode).GetMetrics() {
			fmt.Fprintf(&b, "%s drop=%v remove=%v dims=%v; ", m.GetName(), m.GetDrop(), m.GetTagsToRemove(), m.GetDimensions())
		}
		got[mode] = b.String()
	}
	if want := "requests_total drop=false remove=[] dims=map[request_host:request.host request_protocol:'h']; "; got[ModeClient] != want {
		t.Errorf("client:\n got %s\nwant %s", got[ModeClient], want)
	}
	if want := "requests_total drop=false remove=[request_protocol] dims=map[request_host:request.host]; tcp_sent_bytes_total drop=true remove=[] dims=map[]; "; got[ModeServer] != want {
		t.Errorf("server:\n got %s\nwant %s", got[ModeServer], want)
	}
}

// GRPC_REQUEST_MESSAGES / GRPC_RESPONSE_MESSAGES become Istio's
// request_messages_total / response_messages_total; ALL_METRICS covers
// them too.
func TestResolveMetricsGRPCMessages(t *testing.T) {
	cfgs := decodeTelemetry(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: weft-system}
spec:
  metrics:
  - overrides:
    - match: {metric: GRPC_RESPONSE_MESSAGES, mode: SERVER}
      disabled: true
    - match: {metric: GRPC_REQUEST_MESSAGES}
      tagOverrides:
        rpc: {value: request.url_path}
    - match: {metric: ALL_METRICS, mode: CLIENT}
      tagOverrides:
        source_app: {operation: REMOVE}
`)
	proxy := &model.Proxy{Namespace: "bookinfo", Labels: map[string]string{"app": "reviews"}}
	tms := SelectTelemetry(cfgs, proxy, map[string]bool{"weft-system": true}, TelemetryScope{})
	got := map[TelemetryMode]string{}
	for _, mode := range []TelemetryMode{ModeClient, ModeServer} {
		var b strings.Builder
		for _, m := range ResolveMetrics(tms, mode).GetMetrics() {
			if strings.Contains(m.GetName(), "messages") {
				fmt.Fprintf(&b, "%s drop=%v remove=%v dims=%v; ", m.GetName(), m.GetDrop(), m.GetTagsToRemove(), m.GetDimensions())
			}
		}
		got[mode] = b.String()
	}
	if want := "request_messages_total drop=false remove=[source_app] dims=map[rpc:request.url_path]; response_messages_total drop=false remove=[source_app] dims=map[]; "; got[ModeClient] != want {
		t.Errorf("client:\n got %s\nwant %s", got[ModeClient], want)
	}
	if want := "request_messages_total drop=false remove=[] dims=map[rpc:request.url_path]; response_messages_total drop=true remove=[] dims=map[]; "; got[ModeServer] != want {
		t.Errorf("server:\n got %s\nwant %s", got[ModeServer], want)
	}
}

// metrics reportingInterval: the most specific Telemetry's wins, becomes
// tcp_reporting_duration on both sides, alone or with overrides; rules
// for other providers do not count.
func TestResolveMetricsReportingInterval(t *testing.T) {
	cfgs := decodeTelemetry(t, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: weft-system}
spec:
  metrics:
  - reportingInterval: 30s
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: shop}
spec:
  metrics:
  - reportingInterval: 2s
    overrides:
    - match: {metric: TCP_SENT_BYTES}
      disabled: true
  - providers: [{name: stackdriver}]
    reportingInterval: 1s
`)
	root := map[string]bool{"weft-system": true}
	for _, tc := range []struct {
		ns   string
		want time.Duration
		n    int // metric overrides
	}{{"other", 30 * time.Second, 0}, {"shop", 2 * time.Second, 1}} {
		tms := SelectTelemetry(cfgs, &model.Proxy{Namespace: tc.ns}, root, TelemetryScope{})
		for _, mode := range []TelemetryMode{ModeClient, ModeServer} {
			pc := ResolveMetrics(tms, mode)
			if got := pc.GetTcpReportingDuration().AsDuration(); got != tc.want || len(pc.GetMetrics()) != tc.n {
				t.Errorf("%s mode %d: interval %v with %d overrides, want %v with %d", tc.ns, mode, got, len(pc.GetMetrics()), tc.want, tc.n)
			}
		}
	}
}
