package translate

import (
	"sort"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpclogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otellogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	reqwoqv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
	otlpcommon "go.opentelemetry.io/proto/otlp/common/v1"
	meshv1 "istio.io/api/mesh/v1alpha1"
)

// OpenTelemetryAccessLog is Envoy's OpenTelemetry (OTLP/gRPC) access
// logger, Istio's envoyOtelAls provider.
const OpenTelemetryAccessLog = "envoy.access_loggers.open_telemetry"

// Istio's defaults for envoyOtelAls.
const (
	// OtelAccessLogName is the log_name when the provider sets none.
	OtelAccessLogName = "otel_envoy_accesslog"
	// EnvoyTextLogFormat is Istio's default text access log format (the
	// LogRecord body when logFormat.text is empty).
	EnvoyTextLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
		`%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% ` +
		`"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
		`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
		`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% ` +
		`%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ` +
		`%REQUESTED_SERVER_NAME% %ROUTE_NAME%` + "\n"
)

// otelFilterStateObjects are the filter state objects Istio asks the
// OpenTelemetry access logger to add as attributes: the peers the
// metadata exchange found (new and pre-1.24 keys).
var otelFilterStateObjects = []string{"upstream_peer", "downstream_peer",
	"wasm.upstream_peer", "wasm.upstream_peer_id", "wasm.downstream_peer", "wasm.downstream_peer_id"}

// otelAccessLog is Istio's access logger for an envoyOtelAls provider:
// OTLP/gRPC to the provider's outbound|PORT||SERVICE cluster, log_name
// (default otel_envoy_accesslog), body from logFormat.text (Istio's text
// format when empty), attributes from logFormat.labels sorted by key,
// Envoy's built-in resource labels off, the peers' filter state logged.
func otelAccessLog(o *meshv1.MeshConfig_ExtensionProvider_EnvoyOpenTelemetryLogProvider) *accesslogv3.AccessLog {
	cl, host := providerCluster(o.GetService(), o.GetPort())
	name := o.GetLogName()
	if name == "" {
		name = OtelAccessLogName
	}
	body := o.GetLogFormat().GetText()
	if body == "" {
		body = EnvoyTextLogFormat
	}
	cfg := &otellogv3.OpenTelemetryAccessLogConfig{
		CommonConfig: &grpclogv3.CommonGrpcAccessLogConfig{
			LogName: name,
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: cl, Authority: host}}},
			TransportApiVersion:     corev3.ApiVersion_V3,
			FilterStateObjectsToLog: otelFilterStateObjects,
		},
		DisableBuiltinLabels: true,
		Body:                 &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: body}},
	}
	needsReqWithoutQuery := strings.Contains(body, "%REQ_WITHOUT_QUERY")
	if labels := o.GetLogFormat().GetLabels().GetFields(); len(labels) > 0 {
		keys := make([]string, 0, len(labels))
		for k := range labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		cfg.Attributes = &otlpcommon.KeyValueList{}
		for _, k := range keys {
			cfg.Attributes.Values = append(cfg.Attributes.Values, &otlpcommon.KeyValue{Key: k,
				Value: &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: labels[k].GetStringValue()}}})
			needsReqWithoutQuery = needsReqWithoutQuery || strings.Contains(labels[k].GetStringValue(), "%REQ_WITHOUT_QUERY")
		}
	}
	if needsReqWithoutQuery { // as Istio: the formatter extension that operator needs
		cfg.Formatters = []*corev3.TypedExtensionConfig{{Name: "envoy.formatter.req_without_query", TypedConfig: mustAny(&reqwoqv3.ReqWithoutQuery{})}}
	}
	return &accesslogv3.AccessLog{Name: OpenTelemetryAccessLog, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(cfg)}}
}
