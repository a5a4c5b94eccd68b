package translate

import (
	"net"
	"sort"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	statsv1 "istio.io/api/envoy/extensions/stats"
	meshv1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	telemetry "istio.io/api/telemetry/v1alpha1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/gatewayapi"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
)

// Envoy extension names used for telemetry.
const (
	FileAccessLog       = "envoy.access_loggers.file"
	CELAccessLogFilter  = "envoy.access_loggers.extension_filters.cel"
	ZipkinTracer        = "envoy.tracers.zipkin"
	OpenTelemetryTracer = "envoy.tracers.opentelemetry"
)

// TelemetryMode is the side of the traffic a Telemetry rule applies to.
type TelemetryMode int

// Modes: CLIENT is outbound (and gateway) listeners, SERVER is
// virtualInbound.
const (
	ModeClient TelemetryMode = iota
	ModeServer
)

// TracingPolicy is the effective tracing of one proxy side, after Istio's
// Telemetry resolution.
type TracingPolicy struct {
	// Provider is the mesh extension provider spans go to (nil: none, so
	// no tracing is configured).
	Provider *meshv1.MeshConfig_ExtensionProvider
	// Sampling is the random sampling percentage (0–100).
	Sampling float64
	// DisableReporting keeps propagation and sampling but sends nothing.
	DisableReporting bool
	// CustomTags are sorted by name.
	CustomTags map[string]*telemetry.Tracing_CustomTag
}

// AccessLogPolicy is the effective access logging of one proxy side; nil
// from ResolveAccessLogging means no Telemetry or mesh setting applies.
type AccessLogPolicy struct {
	Disabled  bool
	Providers []*meshv1.MeshConfig_ExtensionProvider // file and OpenTelemetry providers; empty: stdout
	Filter    string                                 // CEL expression, e.g. response.code >= 400
}

// TelemetryScope is what SelectTelemetry needs to know about the proxy
// besides its labels: whether it is an endpoint of a service host (for
// targetRefs of kind Service and ServiceEntry) and the domain suffix
// that completes a Service name (NAME.NS.svc.SUFFIX).
type TelemetryScope struct {
	Serves       func(host string) bool
	DomainSuffix string
}

// SelectTelemetry returns the Telemetry resources that apply to p, least
// specific first, as Istio: the root namespace's (no selector or
// targetRefs), p's namespace's (no selector or targetRefs), then every
// workload-level one, oldest first so that a newer one overrides: a
// selector in p's namespace matching p's labels, or targetRefs naming a
// Gateway (gateway.networking.k8s.io, p labelled
// gateway.networking.k8s.io/gateway-name=NAME in the policy's namespace,
// or an endpoint of the Service its spec.addresses names),
// a GatewayClass (policy in a root namespace, p a proxy of a Gateway of
// that class), a Service or a ServiceEntry (policy's namespace) that p is
// an endpoint of. Istio attaches Service and ServiceEntry targets to
// waypoints only; weft has no waypoints and applies them to the sidecars
// behind the service. Within the namespace levels the oldest wins.
func SelectTelemetry(configs []*config.Resource, p *model.Proxy, roots map[string]bool, scope TelemetryScope) []*telemetry.Telemetry {
	var cfgs []*config.Resource
	for _, c := range configs {
		if _, ok := c.Spec.(*telemetry.Telemetry); ok {
			cfgs = append(cfgs, c)
		}
	}
	sort.SliceStable(cfgs, func(i, j int) bool {
		a, c := cfgs[i], cfgs[j]
		if !a.Meta.CreationTimestamp.Equal(c.Meta.CreationTimestamp) {
			return a.Meta.CreationTimestamp.Before(c.Meta.CreationTimestamp)
		}
		if nsOf(a) != nsOf(c) {
			return nsOf(a) < nsOf(c)
		}
		return a.Meta.Name < c.Meta.Name
	})
	var root, ns *telemetry.Telemetry
	var workload []*telemetry.Telemetry
	for _, c := range cfgs {
		t := c.Spec.(*telemetry.Telemetry)
		refs := t.GetTargetRefs()
		if r := t.GetTargetRef(); r != nil && len(refs) == 0 {
			refs = []*typev1beta1.PolicyTargetReference{r}
		}
		sel := t.GetSelector().GetMatchLabels()
		switch {
		case len(refs) > 0:
			if telemetryTargets(c, refs, configs, p, roots, scope) {
				workload = append(workload, t)
			}
		case len(sel) > 0:
			if nsOf(c) == p.Namespace && labelsMatch(sel, p.Labels) {
				workload = append(workload, t)
			}
		case roots[nsOf(c)]:
			if root == nil {
				root = t
			}
		case nsOf(c) == p.Namespace:
			if ns == nil {
				ns = t
			}
		}
	}
	var out []*telemetry.Telemetry
	for _, t := range []*telemetry.Telemetry{root, ns} {
		if t != nil {
			out = append(out, t)
		}
	}
	return append(out, workload...)
}

// telemetryTargets reports whether one of refs (of Telemetry c) selects p.
func telemetryTargets(c *config.Resource, refs []*typev1beta1.PolicyTargetReference, configs []*config.Resource, p *model.Proxy, roots map[string]bool, scope TelemetryScope) bool {
	pns := nsOf(c)
	for _, ref := range refs {
		// Workload-level policies come from the workload's namespace
		// (GatewayClass policies from a root namespace).
		if ref.GetNamespace() != "" && ref.GetNamespace() != pns {
			continue
		}
		g, k, name := ref.GetGroup(), ref.GetKind(), ref.GetName()
		switch {
		case k == "Gateway" && g == config.GroupGatewayAPI:
			if pns == p.Namespace && name != "" && p.Labels[envoyfilter.GatewayNameLabel] == name {
				return true
			}
			// Istio's manual deployment: the endpoints of the Service the
			// Gateway's spec.addresses names.
			if s := gatewaySpecOf(configs, pns, name); s != nil && scope.Serves != nil {
				for _, a := range s.Addresses {
					if gatewayapi.Deref(a.Type, "IPAddress") == "Hostname" && scope.Serves(a.Value) {
						return true
					}
				}
			}
		case k == "GatewayClass" && g == config.GroupGatewayAPI:
			if gw := p.Labels[envoyfilter.GatewayNameLabel]; roots[pns] && gw != "" {
				if s := gatewaySpecOf(configs, p.Namespace, gw); s != nil && s.GatewayClassName == name {
					return true
				}
			}
		case k == "Service" && (g == "" || g == "core"):
			if pns == p.Namespace && scope.Serves != nil && scope.Serves(name+"."+pns+".svc."+scope.DomainSuffix) {
				return true
			}
		case k == "ServiceEntry" && g == "networking.istio.io":
			if pns == p.Namespace && serviceEntrySelects(configs, pns, name, p, scope) {
				return true
			}
		}
	}
	return false
}

// gatewaySpecOf returns the spec of Gateway API Gateway ns/name (nil when
// there is none).
func gatewaySpecOf(configs []*config.Resource, ns, name string) *gatewayapi.GatewaySpec {
	for _, c := range configs {
		if c.Kind != config.KindKubernetesGateway || nsOf(c) != ns || c.Meta.Name != name {
			continue
		}
		var s gatewayapi.GatewaySpec
		if gatewayapi.Spec(c.Spec, &s) == nil {
			return &s
		}
	}
	return nil
}

// serviceEntrySelects reports whether p is behind ServiceEntry ns/name: an
// endpoint of one of its hosts, or matched by its workloadSelector.
func serviceEntrySelects(configs []*config.Resource, ns, name string, p *model.Proxy, scope TelemetryScope) bool {
	for _, c := range configs {
		se, ok := c.Spec.(*networking.ServiceEntry)
		if !ok || nsOf(c) != ns || c.Meta.Name != name {
			continue
		}
		if sel := se.GetWorkloadSelector().GetLabels(); len(sel) > 0 && labelsMatch(sel, p.Labels) {
			return true
		}
		for _, h := range se.GetHosts() {
			if scope.Serves != nil && scope.Serves(h) {
				return true
			}
		}
	}
	return false
}

func modeApplies(m telemetry.WorkloadMode, mode TelemetryMode) bool {
	switch m {
	case telemetry.WorkloadMode_CLIENT:
		return mode == ModeClient
	case telemetry.WorkloadMode_SERVER:
		return mode == ModeServer
	}
	return true
}

// ResolveTracing computes p's tracing for one side: mesh defaults
// (defaultConfig.tracing: sampling, default 1 %; zipkin.address;
// defaultProviders.tracing) overridden field by field by the Telemetry
// tracing rules of the root namespace, the namespace and the workload (in
// that order; a rule whose match.mode excludes the side is skipped;
// custom tags merge by name). It returns nil when no provider results.
func ResolveTracing(mesh *meshv1.MeshConfig, tms []*telemetry.Telemetry, mode TelemetryMode) *TracingPolicy {
	pol := &TracingPolicy{Sampling: 1, CustomTags: map[string]*telemetry.Tracing_CustomTag{}}
	if t := mesh.GetDefaultConfig().GetTracing(); t != nil && t.GetSampling() > 0 {
		pol.Sampling = t.GetSampling()
	}
	var providerName string
	if names := mesh.GetDefaultProviders().GetTracing(); len(names) > 0 {
		providerName = names[0]
	}
	touched := false
	for _, tm := range tms {
		for _, tr := range tm.GetTracing() {
			if !modeApplies(tr.GetMatch().GetMode(), mode) {
				continue
			}
			touched = true
			if len(tr.GetProviders()) > 0 {
				providerName = tr.GetProviders()[0].GetName()
			}
			if v := tr.GetRandomSamplingPercentage(); v != nil {
				pol.Sampling = v.GetValue()
			}
			if v := tr.GetDisableSpanReporting(); v != nil {
				pol.DisableReporting = v.GetValue()
			}
			for k, v := range tr.GetCustomTags() {
				pol.CustomTags[k] = v
			}
		}
	}
	if providerName != "" {
		pol.Provider = providerLookup(mesh, providerName)
	}
	if pol.Provider == nil && !touched {
		// Istio's legacy mesh setting: defaultConfig.tracing.zipkin.address.
		if addr := mesh.GetDefaultConfig().GetTracing().GetZipkin().GetAddress(); addr != "" && mesh.GetEnableTracing() {
			host, port, err := net.SplitHostPort(addr)
			if n, perr := strconv.Atoi(port); err == nil && perr == nil {
				pol.Provider = &meshv1.MeshConfig_ExtensionProvider{Name: "zipkin", Provider: &meshv1.MeshConfig_ExtensionProvider_Zipkin{
					Zipkin: &meshv1.MeshConfig_ExtensionProvider_ZipkinTracingProvider{Service: host, Port: uint32(n)}}}
			}
		}
	}
	if pol.Provider == nil {
		return nil
	}
	return pol
}

func providerLookup(mesh *meshv1.MeshConfig, name string) *meshv1.MeshConfig_ExtensionProvider {
	for _, p := range mesh.GetExtensionProviders() {
		if p.GetName() == name {
			return p
		}
	}
	return nil
}

// ResolveAccessLogging computes p's access logging for one side, as
// ResolveTracing does: mesh accessLogFile / defaultProviders.accessLogging,
// then Telemetry accessLogging rules (root, namespace, workload; the more
// specific rule's providers, disabled and filter replace the others).
// nil means nothing configures access logging (the proxy keeps its own
// default).
func ResolveAccessLogging(mesh *meshv1.MeshConfig, tms []*telemetry.Telemetry, mode TelemetryMode) *AccessLogPolicy {
	var pol *AccessLogPolicy
	var names []string
	if f := mesh.GetAccessLogFile(); f != "" {
		pol = &AccessLogPolicy{Providers: []*meshv1.MeshConfig_ExtensionProvider{{Name: "envoy", Provider: &meshv1.MeshConfig_ExtensionProvider_EnvoyFileAccessLog{
			EnvoyFileAccessLog: &meshv1.MeshConfig_ExtensionProvider_EnvoyFileAccessLogProvider{Path: f}}}}}
	}
	if d := mesh.GetDefaultProviders().GetAccessLogging(); len(d) > 0 {
		names = d
		pol = &AccessLogPolicy{}
	}
	for _, tm := range tms {
		for _, al := range tm.GetAccessLogging() {
			if !modeApplies(al.GetMatch().GetMode(), mode) {
				continue
			}
			if pol == nil {
				pol = &AccessLogPolicy{}
			}
			if len(al.GetProviders()) > 0 {
				names = names[:0:0]
				for _, pr := range al.GetProviders() {
					names = append(names, pr.GetName())
				}
				pol.Providers = nil
			}
			if v := al.GetDisabled(); v != nil {
				pol.Disabled = v.GetValue()
			}
			if f := al.GetFilter(); f != nil {
				pol.Filter = f.GetExpression()
			}
		}
	}
	if pol == nil {
		return nil
	}
	for _, n := range names {
		if pr := providerLookup(mesh, n); pr != nil && (pr.GetEnvoyFileAccessLog() != nil || pr.GetEnvoyOtelAls() != nil) {
			pol.Providers = append(pol.Providers, pr)
		}
	}
	return pol
}

// applyTelemetry sets the HCM `tracing` and `access_log` fields of every
// HTTP connection manager the proxy got (and `access_log` of every
// tcp_proxy, as Istio): virtualInbound's chains with the
// SERVER side, every other listener (outbound, gateway) with the CLIENT
// side.
func (b *builder) applyTelemetry() {
	var tr [2]*hcmv3.HttpConnectionManager_Tracing
	var al [2][]*accesslogv3.AccessLog
	var mt [2]*statsv1.PluginConfig
	tms := SelectTelemetry(b.in.Configs, b.p, b.root, TelemetryScope{Serves: b.proxyServes, DomainSuffix: b.suffix})
	for _, mode := range []TelemetryMode{ModeClient, ModeServer} {
		mt[mode] = ResolveMetrics(tms, mode)
		if pol := ResolveTracing(b.in.Mesh, tms, mode); pol != nil {
			tr[mode] = b.hcmTracing(pol)
		}
		if pol := ResolveAccessLogging(b.in.Mesh, tms, mode); pol != nil {
			al[mode] = hcmAccessLog(pol)
		}
	}
	if tr[0] == nil && tr[1] == nil && al[0] == nil && al[1] == nil && mt[0] == nil && mt[1] == nil {
		return
	}
	for name, v := range b.listeners {
		l, ok := v.(*listenerv3.Listener)
		if !ok {
			continue
		}
		mode := ModeClient
		if name == VirtualInbound {
			mode = ModeServer
		}
		chains := l.GetFilterChains()
		if l.GetDefaultFilterChain() != nil {
			chains = append(append([]*listenerv3.FilterChain(nil), chains...), l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			if mt[mode] != nil {
				if fs := withNetworkStatsFilter(fc.GetFilters(), mt[mode]); fs != nil {
					fc.Filters = fs
				}
			}
			for _, f := range fc.GetFilters() {
				if f.GetName() == TCPProxyFilter && f.GetTypedConfig() != nil && al[mode] != nil {
					tp := &tcpv3.TcpProxy{}
					if err := f.GetTypedConfig().UnmarshalTo(tp); err == nil {
						tp.AccessLog = al[mode]
						f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tp)}
					}
					continue
				}
				if f.GetName() != HCMFilter || f.GetTypedConfig() == nil {
					continue
				}
				h := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
					continue
				}
				h.Tracing = tr[mode]
				h.AccessLog = al[mode]
				if mt[mode] != nil {
					h.HttpFilters = withStatsFilter(h.HttpFilters, mt[mode])
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
			}
		}
	}
}

// providerCluster is Istio's cluster name for an extension provider's
// service ("outbound|PORT||HOST"; a "ns/host" service drops the ns).
func providerCluster(service string, port uint32) (string, string) {
	if _, h, ok := strings.Cut(service, "/"); ok {
		service = h
	}
	return "outbound|" + strconv.Itoa(int(port)) + "||" + service, service
}

func (b *builder) hcmTracing(pol *TracingPolicy) *hcmv3.HttpConnectionManager_Tracing {
	t := &hcmv3.HttpConnectionManager_Tracing{
		ClientSampling:  &typev3.Percent{Value: 100},
		RandomSampling:  &typev3.Percent{Value: pol.Sampling},
		OverallSampling: &typev3.Percent{Value: 100},
	}
	names := make([]string, 0, len(pol.CustomTags))
	for k := range pol.CustomTags {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		ct := pol.CustomTags[k]
		tag := &tracingtypev3.CustomTag{Tag: k}
		switch {
		case ct.GetLiteral() != nil:
			tag.Type = &tracingtypev3.CustomTag_Literal_{Literal: &tracingtypev3.CustomTag_Literal{Value: ct.GetLiteral().GetValue()}}
		case ct.GetEnvironment() != nil:
			tag.Type = &tracingtypev3.CustomTag_Environment_{Environment: &tracingtypev3.CustomTag_Environment{
				Name: ct.GetEnvironment().GetName(), DefaultValue: ct.GetEnvironment().GetDefaultValue()}}
		case ct.GetHeader() != nil:
			tag.Type = &tracingtypev3.CustomTag_RequestHeader{RequestHeader: &tracingtypev3.CustomTag_Header{
				Name: ct.GetHeader().GetName(), DefaultValue: ct.GetHeader().GetDefaultValue()}}
		default:
			continue // formatter tags are not supported
		}
		t.CustomTags = append(t.CustomTags, tag)
	}
	if pol.DisableReporting {
		return t // no provider: sample and propagate, report nothing
	}
	pr := pol.Provider
	switch {
	case pr.GetZipkin() != nil:
		z := pr.GetZipkin()
		cl, host := providerCluster(z.GetService(), z.GetPort())
		path := z.GetPath()
		if path == "" {
			path = "/api/v2/spans"
		}
		if n := z.GetMaxTagLength(); n > 0 {
			t.MaxPathTagLength = wrapperspb.UInt32(n)
		}
		t.Provider = &tracev3.Tracing_Http{Name: ZipkinTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.ZipkinConfig{
			CollectorCluster: cl, CollectorEndpoint: path, CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			TraceId_128Bit: !z.GetEnable_64BitTraceId(), SharedSpanContext: wrapperspb.Bool(false), CollectorHostname: host,
		})}}
	case pr.GetOpentelemetry() != nil:
		o := pr.GetOpentelemetry()
		cl, host := providerCluster(o.GetService(), o.GetPort())
		oc := &tracev3.OpenTelemetryConfig{ServiceName: b.serviceName()}
		if hs := o.GetHttp(); hs != nil {
			path := hs.GetPath()
			if path == "" {
				path = "/v1/traces"
			}
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			timeout := hs.GetTimeout()
			if timeout == nil {
				timeout = durationpb.New(5e9)
			}
			oc.HttpService = &corev3.HttpService{HttpUri: &corev3.HttpUri{
				Uri: "http://" + net.JoinHostPort(host, strconv.Itoa(int(o.GetPort()))) + path, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cl},
				Timeout: timeout}}
		} else {
			oc.GrpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: cl, Authority: host}}}
		}
		if n := o.GetMaxTagLength(); n > 0 {
			t.MaxPathTagLength = wrapperspb.UInt32(n)
		}
		t.Provider = &tracev3.Tracing_Http{Name: OpenTelemetryTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(oc)}}
	default:
		return nil // provider kind not supported for tracing (e.g. an access log provider)
	}
	return t
}

// serviceName is Istio's default tracing service name: APP.NAMESPACE.
func (b *builder) serviceName() string {
	app := b.p.Labels["app"]
	if app == "" {
		app = b.p.Labels["app.kubernetes.io/name"]
	}
	if app == "" {
		app = b.p.Workload
	}
	return app + "." + b.p.Namespace
}

func hcmAccessLog(pol *AccessLogPolicy) []*accesslogv3.AccessLog {
	if pol.Disabled {
		// Envoy's own way of "log nothing": a 0 % runtime filter.
		return []*accesslogv3.AccessLog{{Name: FileAccessLog,
			Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{RuntimeFilter: &accesslogv3.RuntimeFilter{
				RuntimeKey: "weft.access_log.disabled", PercentSampled: &typev3.FractionalPercent{Numerator: 0}}}},
			ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filelogv3.FileAccessLog{Path: "/dev/stdout"})}}}
	}
	fileLog := func(path string) *accesslogv3.AccessLog {
		if path == "" {
			path = "/dev/stdout"
		}
		return &accesslogv3.AccessLog{Name: FileAccessLog, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filelogv3.FileAccessLog{Path: path})}}
	}
	logs := []*accesslogv3.AccessLog{fileLog("")}
	if len(pol.Providers) > 0 {
		logs = logs[:0]
		for _, p := range pol.Providers {
			if o := p.GetEnvoyOtelAls(); o != nil {
				logs = append(logs, otelAccessLog(o))
				continue
			}
			logs = append(logs, fileLog(p.GetEnvoyFileAccessLog().GetPath()))
		}
	}
	var out []*accesslogv3.AccessLog
	for _, al := range logs {
		if pol.Filter != "" {
			al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
				Name: CELAccessLogFilter, ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: mustAny(&celv3.ExpressionFilter{Expression: pol.Filter})}}}}
		}
		out = append(out, al)
	}
	return out
}

// StatsFilter is Istio's telemetry HTTP filter; the translator emits it
// (typed config stats.PluginConfig) only to carry metrics overrides.
const StatsFilter = "istio.stats"

// istioMetricNames maps Telemetry metric selectors to Istio's metric names
// in stats.PluginConfig (without the istio_ prefix).
var istioMetricNames = map[telemetry.MetricSelector_IstioMetric]string{
	telemetry.MetricSelector_REQUEST_COUNT: "requests_total", telemetry.MetricSelector_REQUEST_DURATION: "request_duration_milliseconds",
	telemetry.MetricSelector_REQUEST_SIZE: "request_bytes", telemetry.MetricSelector_RESPONSE_SIZE: "response_bytes",
	telemetry.MetricSelector_GRPC_REQUEST_MESSAGES: "request_messages_total", telemetry.MetricSelector_GRPC_RESPONSE_MESSAGES: "response_messages_total",
	telemetry.MetricSelector_TCP_OPENED_CONNECTIONS: "tcp_connections_opened_total", telemetry.MetricSelector_TCP_CLOSED_CONNECTIONS: "tcp_connections_closed_total",
	telemetry.MetricSelector_TCP_SENT_BYTES: "tcp_sent_bytes_total", telemetry.MetricSelector_TCP_RECEIVED_BYTES: "tcp_received_bytes_total",
}

// ResolveMetrics computes p's metrics overrides for one side from the
// selected Telemetry resources (metrics[].overrides, least specific
// first): a later `disabled` replaces an earlier one; tagOverrides apply
// per metric and per tag, a later REMOVE or UPSERT replacing an earlier
// one for the same tag. The result is Istio's stats.PluginConfig: per
// metric name drop, tags_to_remove and dimensions (tag → CEL
// expression, pkg/telemetry/expr), HTTP and TCP metrics alike, and the
// most specific metrics reportingInterval as tcp_reporting_duration (how
// often open TCP connections report their bytes). nil means no override.
func ResolveMetrics(tms []*telemetry.Telemetry, mode TelemetryMode) *statsv1.PluginConfig {
	type tagOp struct {
		remove bool
		value  string
	}
	drop := map[string]bool{}
	tags := map[string]map[string]tagOp{}
	touched := false
	var interval *durationpb.Duration // the most specific reportingInterval
	for _, tm := range tms {
		for _, m := range tm.GetMetrics() {
			if !prometheusRule(m) {
				continue // overrides for another metrics provider
			}
			if ri := m.GetReportingInterval(); ri.AsDuration() > 0 { // 0: the default
				interval = ri
			}
			for _, o := range m.GetOverrides() {
				if !modeApplies(o.GetMatch().GetMode(), mode) || o.GetMatch().GetCustomMetric() != "" {
					continue
				}
				var names []string
				if n, ok := istioMetricNames[o.GetMatch().GetMetric()]; ok {
					names = []string{n}
				} else if o.GetMatch().GetMetric() == telemetry.MetricSelector_ALL_METRICS {
					for _, n := range istioMetricNames {
						names = append(names, n)
					}
				}
				for _, n := range names {
					touched = true
					if d := o.GetDisabled(); d != nil {
						drop[n] = d.GetValue()
					}
					for tag, to := range o.GetTagOverrides() {
						if tags[n] == nil {
							tags[n] = map[string]tagOp{}
						}
						tags[n][tag] = tagOp{remove: to.GetOperation() == telemetry.MetricsOverrides_TagOverride_REMOVE, value: to.GetValue()}
					}
				}
			}
		}
	}
	if !touched && interval == nil {
		return nil
	}
	names := make([]string, 0, len(istioMetricNames))
	for _, n := range istioMetricNames {
		names = append(names, n)
	}
	sort.Strings(names)
	pc := &statsv1.PluginConfig{}
	for _, n := range names {
		mc := &statsv1.MetricConfig{Name: n, Drop: drop[n]}
		for tag, op := range tags[n] {
			if op.remove {
				mc.TagsToRemove = append(mc.TagsToRemove, tag)
			} else {
				if mc.Dimensions == nil {
					mc.Dimensions = map[string]string{}
				}
				mc.Dimensions[tag] = op.value
			}
		}
		sort.Strings(mc.TagsToRemove)
		if mc.Drop || len(mc.TagsToRemove) > 0 || len(mc.Dimensions) > 0 {
			pc.Metrics = append(pc.Metrics, mc)
		}
	}
	if interval != nil {
		pc.TcpReportingDuration = durationpb.New(interval.AsDuration())
	}
	if len(pc.Metrics) == 0 && pc.TcpReportingDuration == nil {
		return nil
	}
	return pc
}

// prometheusRule reports whether a metrics rule applies to Prometheus
// (the only metrics provider weft proxy has): no providers (the default,
// prometheus) or one named prometheus.
func prometheusRule(m *telemetry.Metrics) bool {
	if len(m.GetProviders()) == 0 {
		return true
	}
	for _, p := range m.GetProviders() {
		if p.GetName() == "prometheus" {
			return true
		}
	}
	return false
}

// withNetworkStatsFilter puts an istio.stats network filter with pc
// before a tcp_proxy filter (replacing one already there), as Istio's
// TCP metrics filter; nil when fs has no tcp_proxy.
func withNetworkStatsFilter(fs []*listenerv3.Filter, pc *statsv1.PluginConfig) []*listenerv3.Filter {
	has := false
	for _, x := range fs {
		has = has || x.GetName() == TCPProxyFilter
	}
	if !has {
		return nil
	}
	out := make([]*listenerv3.Filter, 0, len(fs)+1)
	for _, x := range fs {
		switch x.GetName() {
		case StatsFilter:
			continue
		case TCPProxyFilter:
			out = append(out, &listenerv3.Filter{Name: StatsFilter, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(pc)}})
		}
		out = append(out, x)
	}
	return out
}

// withStatsFilter puts an istio.stats filter with pc before the router
// (replacing one already there).
func withStatsFilter(fs []*hcmv3.HttpFilter, pc *statsv1.PluginConfig) []*hcmv3.HttpFilter {
	f := &hcmv3.HttpFilter{Name: StatsFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(pc)}}
	out := make([]*hcmv3.HttpFilter, 0, len(fs)+1)
	for _, x := range fs {
		if x.GetName() == StatsFilter {
			continue
		}
		if x.GetName() == RouterFilter {
			out = append(out, f)
			f = nil
		}
		out = append(out, x)
	}
	if f != nil {
		out = append(out, f)
	}
	return out
}
