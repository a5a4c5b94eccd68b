package analyze

import (
	"fmt"
	"sort"
	"strings"

	meshv1 "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	gw "github.com/weftmesh/weft/pkg/config/gatewayapi"
	"github.com/weftmesh/weft/pkg/telemetry/expr"
	"github.com/weftmesh/weft/pkg/telemetry/logformat"
)

// Telemetry findings.
const (
	CodeTelemetryTargetNotFound = "WEFT0116" // a Telemetry targetRef names a Gateway, GatewayClass, Service or ServiceEntry that does not exist
	CodeTelemetryTCPAttribute   = "WEFT0117" // a tag UPSERT on a TCP metric reads request/response attributes (always "unknown")
	CodeTelemetryProvider       = "WEFT0118" // a Telemetry tracing/accessLogging provider is not in the mesh config or not usable for it
	CodeOtelLogFormat           = "WEFT0130" // an envoyOtelAls provider's logFormat has a command operator weft proxy cannot render
)

// telemetries checks Telemetry targetRefs against the resources and
// hosts known, and tag UPSERTs on TCP metrics.
func (a *analyzer) telemetries() {
	for _, r := range a.rs {
		t, ok := r.Spec.(*telemetry.Telemetry)
		if !ok {
			continue
		}
		if ref := t.GetTargetRef(); ref != nil {
			a.checkTelemetryTarget(r, "spec.targetRef", ref)
		}
		for i, ref := range t.GetTargetRefs() {
			a.checkTelemetryTarget(r, fmt.Sprintf("spec.targetRefs[%d]", i), ref)
		}
		for i, m := range t.GetMetrics() {
			for j, o := range m.GetOverrides() {
				if !tcpMetric(o.GetMatch().GetMetric()) {
					continue
				}
				for tag, to := range o.GetTagOverrides() {
					if to.GetOperation() != telemetry.MetricsOverrides_TagOverride_UPSERT {
						continue
					}
					p, err := expr.Compile(to.GetValue())
					if err != nil {
						continue // a validation error
					}
					for _, at := range p.Attributes() {
						if strings.HasPrefix(at, "request.") || strings.HasPrefix(at, "response.") {
							a.report(r, Warning, CodeTelemetryTCPAttribute, fmt.Sprintf("spec.metrics[%d].overrides[%d].tagOverrides[%s].value", i, j, tag),
								"%s is a TCP metric: %s is absent on TCP connections, so the tag is \"unknown\" unless the expression handles it", o.GetMatch().GetMetric(), at)
							break
						}
					}
				}
			}
		}
	}
}

func tcpMetric(m telemetry.MetricSelector_IstioMetric) bool {
	switch m {
	case telemetry.MetricSelector_TCP_OPENED_CONNECTIONS, telemetry.MetricSelector_TCP_CLOSED_CONNECTIONS,
		telemetry.MetricSelector_TCP_SENT_BYTES, telemetry.MetricSelector_TCP_RECEIVED_BYTES:
		return true
	}
	return false
}

func (a *analyzer) checkTelemetryTarget(r *config.Resource, path string, ref *typev1beta1.PolicyTargetReference) {
	ns, name := r.Meta.Namespace, ref.GetName()
	if ref.GetNamespace() != "" && ref.GetNamespace() != ns {
		return // a validation error
	}
	exists := func(kind string) bool {
		for _, x := range a.rs {
			if x.Kind == kind && x.Meta.Name == name && (kind == config.KindGatewayClass || x.Meta.Namespace == ns) {
				return true
			}
		}
		return false
	}
	switch ref.GetKind() {
	case "Gateway":
		if !exists(config.KindKubernetesGateway) {
			a.report(r, Warning, CodeTelemetryTargetNotFound, path, "Gateway %s/%s (gateway.networking.k8s.io) not found: the policy applies only to proxies labelled gateway.networking.k8s.io/gateway-name=%s", ns, name, name)
		}
	case "GatewayClass":
		if !exists(config.KindGatewayClass) && !gw.OurClass(name, nil) {
			a.report(r, Warning, CodeTelemetryTargetNotFound, path, "GatewayClass %q not found", name)
		}
	case "ServiceEntry":
		if !exists(config.KindServiceEntry) {
			a.report(r, Warning, CodeTelemetryTargetNotFound, path, "ServiceEntry %s/%s not found: the policy applies to no workload", ns, name)
		}
	case "Service":
		fq := name + "." + ns + ".svc." + a.o.domain
		if a.hostKnown(fq) {
			return
		}
		if a.o.registry {
			a.report(r, Warning, CodeTelemetryTargetNotFound, path, "Service %s/%s (%s) is not in the registry: the policy applies to no workload", ns, name, fq)
		} else {
			a.report(r, Info, CodeTelemetryTargetNotFound, path, "Service %s/%s (%s) is not known here; fine if it is a Kubernetes service (pass known hosts to check)", ns, name, fq)
		}
	}
}

// telemetryProviders checks Telemetry tracing and access logging provider
// names against the mesh config's extensionProviders (only with a mesh
// config): unknown names and kinds weft does not apply there.
func (a *analyzer) telemetryProviders() {
	find := func(name string) (kind string, ok bool) {
		for _, p := range a.o.mesh.GetExtensionProviders() {
			if p.GetName() != name {
				continue
			}
			switch {
			case p.GetZipkin() != nil:
				return "zipkin", true
			case p.GetOpentelemetry() != nil:
				return "opentelemetry", true
			case p.GetEnvoyFileAccessLog() != nil:
				return "envoyFileAccessLog", true
			case p.GetEnvoyOtelAls() != nil:
				return "envoyOtelAls", true
			}
			return "other", true
		}
		return "", false
	}
	for _, r := range a.rs {
		t, ok := r.Spec.(*telemetry.Telemetry)
		if !ok {
			continue
		}
		for i, tr := range t.GetTracing() {
			for j, p := range tr.GetProviders() {
				path := fmt.Sprintf("spec.tracing[%d].providers[%d].name", i, j)
				switch kind, ok := find(p.GetName()); {
				case !ok:
					a.report(r, Warning, CodeTelemetryProvider, path, "tracing provider %q is not in the mesh config's extensionProviders: no spans are reported", p.GetName())
				case kind != "zipkin" && kind != "opentelemetry":
					a.report(r, Warning, CodeTelemetryProvider, path, "provider %q is not a zipkin or opentelemetry provider: weft reports no spans to it", p.GetName())
				}
			}
		}
		for i, al := range t.GetAccessLogging() {
			for j, p := range al.GetProviders() {
				path := fmt.Sprintf("spec.accessLogging[%d].providers[%d].name", i, j)
				switch kind, ok := find(p.GetName()); {
				case !ok && p.GetName() == "envoy":
				case !ok:
					a.report(r, Warning, CodeTelemetryProvider, path, "access log provider %q is not in the mesh config's extensionProviders", p.GetName())
				case kind != "envoyFileAccessLog" && kind != "envoyOtelAls":
					a.report(r, Warning, CodeTelemetryProvider, path, "access log provider %q is not an envoyFileAccessLog or envoyOtelAls provider: weft does not apply it", p.GetName())
				case kind == "envoyOtelAls":
					if err := otelLogFormatError(a.o.mesh, p.GetName()); err != nil {
						a.report(r, Warning, CodeOtelLogFormat, path, "envoyOtelAls provider %q: %v: weft proxies refuse (NACK) the listeners that log to it", p.GetName(), err)
					}
				}
			}
		}
	}
}

// otelLogFormatError compiles the logFormat text and labels of the
// envoyOtelAls provider name as weft proxy will (nil when they compile).
func otelLogFormatError(mesh *meshv1.MeshConfig, name string) error {
	for _, p := range mesh.GetExtensionProviders() {
		o := p.GetEnvoyOtelAls()
		if p.GetName() != name || o == nil {
			continue
		}
		if t := o.GetLogFormat().GetText(); t != "" {
			if _, err := logformat.Compile(t); err != nil {
				return fmt.Errorf("logFormat.text: %w", err)
			}
		}
		labels := o.GetLogFormat().GetLabels().GetFields()
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, err := logformat.Compile(labels[k].GetStringValue()); err != nil {
				return fmt.Errorf("logFormat.labels.%s: %w", k, err)
			}
		}
	}
	return nil
}
