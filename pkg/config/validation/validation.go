// Package validation checks Istio resources against Istio's rules, beyond
// what the schema alone enforces, and reports every problem with its field
// path (and line, for resources decoded from text). It is pure: no I/O
// besides ReadSources, no global state.
package validation

import (
	extensions "istio.io/api/extensions/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	networkingv1beta1 "istio.io/api/networking/v1beta1"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	"github.com/weftmesh/weft/pkg/config"
)

// Validate checks one resource and returns its errors and warnings.
func Validate(r *config.Resource) config.ErrorList {
	if r == nil || r.Spec == nil {
		return nil
	}
	v := &validator{r: r}
	v.checkLabels("metadata.labels", r.Meta.Labels)
	for k := range r.Meta.Annotations {
		if msg := labelKeyError(k); msg != "" {
			v.errorf(key("metadata.annotations", k), "invalid annotation key %q: %s", k, msg)
		}
	}
	if r.Kind == config.KindGatewayClass || r.Kind == config.KindKubernetesGateway || r.Kind == config.KindHTTPRoute || r.Kind == config.KindGRPCRoute || r.Kind == config.KindTLSRoute || r.Kind == config.KindTCPRoute || r.Kind == config.KindReferenceGrant {
		v.gatewayAPI()
		return v.errs
	}
	switch spec := r.Spec.(type) {
	case *networking.VirtualService:
		v.virtualService(spec)
	case *networking.DestinationRule:
		v.destinationRule(spec)
	case *networking.Gateway:
		v.gateway(spec)
	case *networking.ServiceEntry:
		v.serviceEntry(spec)
	case *networking.WorkloadEntry:
		v.workloadEntry("spec", spec, false)
	case *networking.WorkloadGroup:
		v.workloadGroup(spec)
	case *networking.Sidecar:
		v.sidecar(spec)
	case *networking.EnvoyFilter:
		v.envoyFilter(spec)
	case *security.PeerAuthentication:
		v.peerAuthentication(spec)
	case *security.RequestAuthentication:
		v.requestAuthentication(spec)
	case *security.AuthorizationPolicy:
		v.authorizationPolicy(spec)
	case *telemetry.Telemetry:
		v.telemetry(spec)
	case *extensions.WasmPlugin:
		v.wasmPlugin(spec)
	case *networkingv1beta1.ProxyConfig:
		v.checkSelector("spec.selector", spec.GetSelector())
		if c := spec.GetConcurrency(); c != nil && c.GetValue() < 0 {
			v.errorf("spec.concurrency", "concurrency must not be negative (0 means one worker per core)")
		}
	}
	return v.errs
}

// validator collects the problems of one resource.
type validator struct {
	r    *config.Resource
	errs config.ErrorList
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, v.r.FieldError(path, false, format, args...))
}

func (v *validator) warnf(path, format string, args ...any) {
	v.errs = append(v.errs, v.r.FieldError(path, true, format, args...))
}
