package otelals

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	otellogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	// Istio lists this formatter in `formatters` for %REQ_WITHOUT_QUERY%,
	// which is built in here; registered so configs that name it decode.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
)

// Name is the Envoy access logger this package executes.
const Name = "envoy.access_loggers.open_telemetry"

// Resolver returns a HOST:PORT endpoint of an xDS cluster ("" unknown).
type Resolver func(cluster string) string

// FromXDS compiles an OpenTelemetryAccessLogConfig: the collector is the
// gRPC service's cluster (an endpoint picked by resolve, else the
// HOST:PORT an Istio outbound|PORT||HOST name carries), log_name (the
// top-level field, else common_config's), body and attributes (string
// values as Envoy format strings; other AnyValue kinds are refused),
// filter_state_objects_to_log, buffer_flush_interval and
// buffer_size_bytes, disable_builtin_labels and resource_attributes.
func FromXDS(c *otellogv3.OpenTelemetryAccessLogConfig, resolve Resolver) (*Config, error) {
	cc := c.GetCommonConfig()
	gs := c.GetGrpcService()
	if gs == nil {
		gs = cc.GetGrpcService()
	}
	if c.GetHttpService() != nil {
		return nil, fmt.Errorf("%s: http_service is not supported (OTLP/gRPC only)", Name)
	}
	eg := gs.GetEnvoyGrpc()
	if eg == nil || eg.GetClusterName() == "" {
		return nil, fmt.Errorf("%s: grpc_service: want envoy_grpc with a cluster_name", Name)
	}
	cfg := &Config{Addr: address(eg.GetClusterName(), eg.GetAuthority(), resolve), Authority: eg.GetAuthority(),
		LogName: c.GetLogName(), FilterState: c.GetFilterStateObjectsToLog()}
	if cfg.LogName == "" {
		cfg.LogName = cc.GetLogName()
	}
	if len(cfg.FilterState) == 0 {
		cfg.FilterState = cc.GetFilterStateObjectsToLog()
	}
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%s: cluster %q has no endpoint", Name, eg.GetClusterName())
	}
	if d := c.GetBufferFlushInterval(); d != nil {
		cfg.FlushInterval = d.AsDuration()
	} else if d := cc.GetBufferFlushInterval(); d != nil {
		cfg.FlushInterval = d.AsDuration()
	}
	if n := c.GetBufferSizeBytes(); n != nil {
		cfg.BufferBytes = int(n.GetValue())
	} else if n := cc.GetBufferSizeBytes(); n != nil {
		cfg.BufferBytes = int(n.GetValue())
	}
	if b := c.GetBody(); b != nil {
		s, ok := b.GetValue().(*commonpb.AnyValue_StringValue)
		if !ok {
			return nil, fmt.Errorf("%s: body: only a string_value format is supported", Name)
		}
		f, err := Compile(s.StringValue)
		if err != nil {
			return nil, fmt.Errorf("%s: body: %w", Name, err)
		}
		cfg.Body = f
	}
	for _, kv := range c.GetAttributes().GetValues() {
		s, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue)
		if !ok {
			return nil, fmt.Errorf("%s: attribute %q: only string_value formats are supported", Name, kv.GetKey())
		}
		f, err := Compile(s.StringValue)
		if err != nil {
			return nil, fmt.Errorf("%s: attribute %q: %w", Name, kv.GetKey(), err)
		}
		cfg.Attributes = append(cfg.Attributes, Attr{Key: kv.GetKey(), Value: f})
	}
	cfg.Builtin = !c.GetDisableBuiltinLabels()
	cfg.Resource = c.GetResourceAttributes().GetValues()
	var key strings.Builder
	fmt.Fprintf(&key, "%s\x00%s\x00%v\x00%d\x00%s\x00%v", cfg.Addr, cfg.Authority, cfg.FlushInterval, cfg.BufferBytes, cfg.LogName, cfg.Builtin)
	for _, kv := range cfg.Resource {
		fmt.Fprintf(&key, "\x00%s=%s", kv.GetKey(), kv.GetValue().String())
	}
	cfg.key = key.String()
	return cfg, nil
}

// address resolves the collector: an endpoint of the cluster, else the
// HOST:PORT in an Istio cluster name (outbound|PORT||HOST).
func address(cluster, authority string, resolve Resolver) string {
	if resolve != nil {
		if a := resolve(cluster); a != "" {
			return a
		}
	}
	if parts := strings.Split(cluster, "|"); len(parts) == 4 && parts[3] != "" {
		if _, err := strconv.Atoi(parts[1]); err == nil {
			return net.JoinHostPort(parts[3], parts[1])
		}
	}
	if _, _, err := net.SplitHostPort(authority); err == nil {
		return authority
	}
	return ""
}
