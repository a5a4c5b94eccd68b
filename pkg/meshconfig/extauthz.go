package meshconfig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	meshv1 "istio.io/api/mesh/v1alpha1"
)

// ErrProviderNotFound is returned by ExtAuthz for a name no
// extensionProviders entry has.
var ErrProviderNotFound = errors.New("extension provider not found")

// DefaultExtAuthzTimeout is Istio's timeout for an ext_authz check when the
// provider sets none.
const DefaultExtAuthzTimeout = 600 * time.Second

// ExtAuthzProvider is a validated envoyExtAuthzHttp or envoyExtAuthzGrpc
// extension provider, the target of AuthorizationPolicy action CUSTOM.
type ExtAuthzProvider struct {
	Name string
	// GRPC is true for envoyExtAuthzGrpc (envoy.service.auth.v3
	// Authorization/Check), false for envoyExtAuthzHttp.
	GRPC bool
	// Namespace is the optional "NS/" part of service; Host the hostname.
	Namespace, Host string
	Port            uint32
	// Timeout of one check (DefaultExtAuthzTimeout when unset).
	Timeout time.Duration
	// FailOpen allows requests when the service cannot be reached.
	FailOpen bool
	// StatusOnError is the HTTP status when the check fails and FailOpen is
	// false; 0 means Envoy's default (403).
	StatusOnError int
	// HTTP only. PathPrefix is prepended to the checked path;
	// RequestHeaders (includeRequestHeadersInCheck, else the deprecated
	// includeHeadersInCheck) are sent to the service; AdditionalHeaders are
	// added to every check; the header lists of responses pass through.
	PathPrefix                                           string
	RequestHeaders                                       []string
	AdditionalHeaders                                    map[string]string
	UpstreamOnAllow, DownstreamOnDeny, DownstreamOnAllow []string
	// Body, when set, sends up to MaxRequestBytes of the request body.
	Body *meshv1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody
}

// Cluster is the outbound cluster name the proxy sends checks through
// (outbound|PORT||HOST).
func (p *ExtAuthzProvider) Cluster() string {
	return "outbound|" + strconv.Itoa(int(p.Port)) + "||" + p.Host
}

// ExtAuthz returns the ext_authz provider called name. The error says what
// is wrong with it, naming extensionProviders[i] fields; an unknown name
// wraps ErrProviderNotFound.
func ExtAuthz(m *meshv1.MeshConfig, name string) (*ExtAuthzProvider, error) {
	for i, p := range m.GetExtensionProviders() {
		if p.GetName() != name {
			continue
		}
		out, err := extAuthz(p)
		if err != nil {
			return nil, fmt.Errorf("extensionProviders[%d] (%s): %w", i, name, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %q is not in meshConfig.extensionProviders", ErrProviderNotFound, name)
}

func extAuthz(p *meshv1.MeshConfig_ExtensionProvider) (*ExtAuthzProvider, error) {
	out := &ExtAuthzProvider{Name: p.GetName()}
	var service, status string
	var port uint32
	var timeout interface{ AsDuration() time.Duration }
	var hasTimeout bool
	field := ""
	switch {
	case p.GetEnvoyExtAuthzHttp() != nil:
		h := p.GetEnvoyExtAuthzHttp()
		field = "envoyExtAuthzHttp"
		service, port, status = h.GetService(), h.GetPort(), h.GetStatusOnError()
		timeout, hasTimeout = h.GetTimeout(), h.GetTimeout() != nil
		out.FailOpen, out.PathPrefix = h.GetFailOpen(), h.GetPathPrefix()
		out.RequestHeaders = h.GetIncludeRequestHeadersInCheck()
		if len(out.RequestHeaders) == 0 {
			out.RequestHeaders = h.GetIncludeHeadersInCheck()
		}
		out.AdditionalHeaders = h.GetIncludeAdditionalHeadersInCheck()
		out.UpstreamOnAllow, out.DownstreamOnDeny, out.DownstreamOnAllow = h.GetHeadersToUpstreamOnAllow(), h.GetHeadersToDownstreamOnDeny(), h.GetHeadersToDownstreamOnAllow()
		out.Body = h.GetIncludeRequestBodyInCheck()
		if out.PathPrefix != "" && !strings.HasPrefix(out.PathPrefix, "/") {
			return nil, fmt.Errorf("%s.pathPrefix %q must start with /", field, out.PathPrefix)
		}
	case p.GetEnvoyExtAuthzGrpc() != nil:
		g := p.GetEnvoyExtAuthzGrpc()
		field = "envoyExtAuthzGrpc"
		out.GRPC = true
		service, port, status = g.GetService(), g.GetPort(), g.GetStatusOnError()
		timeout, hasTimeout = g.GetTimeout(), g.GetTimeout() != nil
		out.FailOpen, out.Body = g.GetFailOpen(), g.GetIncludeRequestBodyInCheck()
	default:
		return nil, fmt.Errorf("not an ext_authz provider (want envoyExtAuthzHttp or envoyExtAuthzGrpc)")
	}
	if service == "" {
		return nil, fmt.Errorf("%s.service is required", field)
	}
	if ns, host, ok := strings.Cut(service, "/"); ok {
		out.Namespace, out.Host = ns, host
	} else {
		out.Host = service
	}
	if out.Host == "" || strings.ContainsAny(out.Host, "/ ") {
		return nil, fmt.Errorf("%s.service %q: want [NAMESPACE/]HOSTNAME", field, service)
	}
	if port == 0 || port > 65535 {
		return nil, fmt.Errorf("%s.port %d: want 1-65535", field, port)
	}
	out.Port = port
	out.Timeout = DefaultExtAuthzTimeout
	if hasTimeout {
		if d := timeout.AsDuration(); d > 0 {
			out.Timeout = d
		} else {
			return nil, fmt.Errorf("%s.timeout %v: must be positive", field, d)
		}
	}
	if status != "" {
		n, err := strconv.Atoi(status)
		if err != nil || n < 100 || n > 599 {
			return nil, fmt.Errorf("%s.statusOnError %q: want an HTTP status code", field, status)
		}
		out.StatusOnError = n
	}
	if b := out.Body; b != nil && b.GetMaxRequestBytes() == 0 {
		return nil, fmt.Errorf("%s.includeRequestBodyInCheck.maxRequestBytes must be positive", field)
	}
	return out, nil
}

// validateProviders checks every ext_authz provider and that names are
// unique.
func validateProviders(m *meshv1.MeshConfig) error {
	seen := map[string]bool{}
	for i, p := range m.GetExtensionProviders() {
		if p.GetName() == "" {
			return fmt.Errorf("extensionProviders[%d].name is required", i)
		}
		if seen[p.GetName()] {
			return fmt.Errorf("extensionProviders[%d].name %q: duplicate", i, p.GetName())
		}
		seen[p.GetName()] = true
		if p.GetEnvoyExtAuthzHttp() == nil && p.GetEnvoyExtAuthzGrpc() == nil {
			continue
		}
		if _, err := extAuthz(p); err != nil {
			return fmt.Errorf("extensionProviders[%d] (%s): %w", i, p.GetName(), err)
		}
	}
	return nil
}
