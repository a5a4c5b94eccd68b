package validation

import (
	"net/url"
	"regexp"

	extensions "istio.io/api/extensions/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

var sha256RE = regexp.MustCompile(`^[a-f0-9]{64}$`)

func (v *validator) wasmPlugin(wp *extensions.WasmPlugin) {
	v.checkSelector("spec.selector", wp.GetSelector())
	if wp.GetSelector() != nil && (wp.GetTargetRef() != nil || len(wp.GetTargetRefs()) > 0) {
		v.errorf("spec.targetRef", "selector and targetRef(s) are mutually exclusive")
	}
	if wp.GetUrl() == "" {
		v.errorf("spec.url", "url is required")
	} else if u, err := url.Parse(wp.GetUrl()); err != nil {
		v.errorf("spec.url", "invalid url %q: %v", wp.GetUrl(), err)
	} else {
		switch u.Scheme {
		case "file", "http", "https", "oci":
		case "":
			// Istio treats a scheme-less URL as an OCI image reference.
		default:
			v.errorf("spec.url", "url scheme %q is not supported (use file, http, https or oci)", u.Scheme)
		}
		if u.Scheme == "http" {
			v.warnf("spec.url", "module fetched over plain http; set sha256 to verify it")
		}
	}
	if s := wp.GetSha256(); s != "" && !sha256RE.MatchString(s) {
		v.errorf("spec.sha256", "sha256 must be 64 lower-case hex characters, got %q", s)
	}
	for i, e := range wp.GetVmConfig().GetEnv() {
		p := idx("spec.vmConfig.env", i)
		if e.GetName() == "" {
			v.errorf(p+".name", "env name is required")
		}
		if e.GetValueFrom() == extensions.EnvValueSource_HOST && e.GetValue() != "" {
			v.errorf(p+".value", "value must be empty when valueFrom is HOST")
		}
	}
	for i, m := range wp.GetMatch() {
		for j, ps := range m.GetPorts() {
			v.checkPort(idx(idx("spec.match", i)+".ports", j)+".number", ps.GetNumber())
		}
	}
}

func (v *validator) telemetry(t *telemetry.Telemetry) {
	v.checkSelector("spec.selector", t.GetSelector())
	if t.GetSelector() != nil && (t.GetTargetRef() != nil || len(t.GetTargetRefs()) > 0) {
		v.errorf("spec.targetRef", "selector and targetRef(s) are mutually exclusive")
	}
	for i, tr := range t.GetTracing() {
		p := idx("spec.tracing", i)
		if sp := tr.GetRandomSamplingPercentage(); sp != nil {
			v.checkPercent(p+".randomSamplingPercentage", sp.GetValue())
		}
		for j, pr := range tr.GetProviders() {
			if pr.GetName() == "" {
				v.errorf(idx(p+".providers", j)+".name", "provider name is required")
			}
		}
		for name, tag := range tr.GetCustomTags() {
			if tag.GetType() == nil {
				v.errorf(key(p+".customTags", name), "custom tag needs literal, environment, header or formatter")
			}
		}
	}
	for i, m := range t.GetMetrics() {
		p := idx("spec.metrics", i)
		for j, pr := range m.GetProviders() {
			if pr.GetName() == "" {
				v.errorf(idx(p+".providers", j)+".name", "provider name is required")
			}
		}
		if m.GetReportingInterval() != nil {
			v.checkDuration(p+".reportingInterval", m.GetReportingInterval())
		}
		for j, o := range m.GetOverrides() {
			for tag, to := range o.GetTagOverrides() {
				if to.GetOperation() == telemetry.MetricsOverrides_TagOverride_UPSERT && to.GetValue() == "" {
					v.errorf(key(idx(p+".overrides", j)+".tagOverrides", tag)+".value", "UPSERT needs a value")
				}
			}
		}
	}
	for i, a := range t.GetAccessLogging() {
		p := idx("spec.accessLogging", i)
		for j, pr := range a.GetProviders() {
			if pr.GetName() == "" {
				v.errorf(idx(p+".providers", j)+".name", "provider name is required")
			}
		}
	}
}
