package tracing

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Resolver returns a HOST:PORT for a cluster name, or "" when the cluster
// is unknown or has no endpoint.
type Resolver func(cluster string) string

// FromHCM compiles an HTTP connection manager's tracing field. A nil
// field returns (nil, nil): no tracing. serviceName is the local service
// reported in spans unless the provider names one. The collector address
// is resolve(cluster); when the cluster is unknown it falls back to the
// HOST:PORT of an Istio cluster name (outbound|PORT||HOST) or the
// collector hostname, so a collector outside the registry still works.
func FromHCM(t *hcmv3.HttpConnectionManager_Tracing, serviceName string, resolve Resolver) (*Config, error) {
	if t == nil {
		return nil, nil
	}
	cfg := &Config{ServiceName: serviceName, SamplePerMillion: 1_000_000, ForcePerMillion: 1_000_000, MaxPathTagLength: 256}
	if p := t.GetRandomSampling(); p != nil {
		cfg.SamplePerMillion = percentToPerMillion(p.GetValue())
	}
	if p := t.GetClientSampling(); p != nil {
		cfg.ForcePerMillion = percentToPerMillion(p.GetValue())
	}
	if p := t.GetOverallSampling(); p != nil {
		o := percentToPerMillion(p.GetValue())
		cfg.SamplePerMillion = uint32(uint64(cfg.SamplePerMillion) * uint64(o) / 1_000_000)
	}
	if n := t.GetMaxPathTagLength(); n != nil {
		cfg.MaxPathTagLength = int(n.GetValue())
	}
	for _, ct := range t.GetCustomTags() {
		tag := CustomTag{Name: ct.GetTag()}
		switch {
		case ct.GetLiteral() != nil:
			tag.Literal = ct.GetLiteral().GetValue()
		case ct.GetEnvironment() != nil:
			tag.Literal = os.Getenv(ct.GetEnvironment().GetName())
			if tag.Literal == "" {
				tag.Literal = ct.GetEnvironment().GetDefaultValue()
			}
		case ct.GetRequestHeader() != nil:
			tag.Header = http.CanonicalHeaderKey(ct.GetRequestHeader().GetName())
			tag.Default = ct.GetRequestHeader().GetDefaultValue()
		default:
			return nil, fmt.Errorf("tracing: custom tag %q: only literal, environment and request_header are supported", ct.GetTag())
		}
		cfg.Tags = append(cfg.Tags, tag)
	}
	prov := t.GetProvider()
	if prov == nil || prov.GetTypedConfig() == nil {
		// Sampling and propagation without export.
		cfg.NoReport = true
		return cfg, nil
	}
	tc := prov.GetTypedConfig()
	zc, oc := &tracev3.ZipkinConfig{}, &tracev3.OpenTelemetryConfig{}
	switch {
	case tc.MessageIs(zc):
		if err := tc.UnmarshalTo(zc); err != nil {
			return nil, fmt.Errorf("tracing: provider %q: %w", prov.GetName(), err)
		}
		if zc.GetCollectorEndpointVersion() != tracev3.ZipkinConfig_HTTP_JSON {
			return nil, fmt.Errorf("tracing: provider %q: only collector_endpoint_version HTTP_JSON is supported", prov.GetName())
		}
		cfg.Provider, cfg.Path, cfg.Host = Zipkin, zc.GetCollectorEndpoint(), zc.GetCollectorHostname()
		cfg.Addr = address(zc.GetCollectorCluster(), zc.GetCollectorHostname(), resolve)
	case tc.MessageIs(oc):
		if err := tc.UnmarshalTo(oc); err != nil {
			return nil, fmt.Errorf("tracing: provider %q: %w", prov.GetName(), err)
		}
		if n := oc.GetServiceName(); n != "" {
			cfg.ServiceName = n
		}
		switch {
		case oc.GetGrpcService() != nil:
			gs := oc.GetGrpcService()
			cfg.Provider = OTLPGRPC
			cfg.Addr = address(gs.GetEnvoyGrpc().GetClusterName(), gs.GetEnvoyGrpc().GetAuthority(), resolve)
			if cfg.Addr == "" && gs.GetGoogleGrpc() != nil {
				cfg.Addr = strings.TrimPrefix(gs.GetGoogleGrpc().GetTargetUri(), "dns:///")
			}
		case oc.GetHttpService() != nil:
			hu := oc.GetHttpService().GetHttpUri()
			cfg.Provider, cfg.Path = OTLPHTTP, "/v1/traces"
			var host string
			if u, err := url.Parse(hu.GetUri()); err == nil {
				host = u.Host
				if u.Path != "" {
					cfg.Path = u.Path
				}
			}
			cfg.Addr = address(hu.GetCluster(), host, resolve)
		default:
			return nil, fmt.Errorf("tracing: provider %q: OpenTelemetry needs grpc_service or http_service", prov.GetName())
		}
	default:
		return nil, fmt.Errorf("tracing: provider %q: type %s not supported (Zipkin and OpenTelemetry are)", prov.GetName(), tc.GetTypeUrl())
	}
	if cfg.Addr == "" {
		return nil, fmt.Errorf("tracing: provider %q: no collector address", prov.GetName())
	}
	return cfg, nil
}

func percentToPerMillion(p float64) uint32 {
	switch {
	case p <= 0:
		return 0
	case p >= 100:
		return 1_000_000
	}
	return uint32(p * 10_000)
}

// address resolves a collector: the cluster's endpoint, else the HOST:PORT
// in an Istio cluster name, else host when it has a port.
func address(cluster, host string, resolve Resolver) string {
	if cluster != "" && resolve != nil {
		if a := resolve(cluster); a != "" {
			return a
		}
	}
	if parts := strings.Split(cluster, "|"); len(parts) == 4 && parts[3] != "" {
		if _, err := strconv.Atoi(parts[1]); err == nil {
			return net.JoinHostPort(parts[3], parts[1])
		}
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return ""
}
