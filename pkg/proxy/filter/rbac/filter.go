package rbac

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/filter/authctx"
	"github.com/weftmesh/weft/pkg/proxy/filter/dynmeta"
	"github.com/weftmesh/weft/pkg/proxy/filter/pathnorm"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// ShadowEffectivePolicyKey is the dynamic metadata key (after the shadow
// rules' stat prefix) naming the matched shadow policy.
const ShadowEffectivePolicyKey = "shadow_effective_policy_id"

// Option configures the filters built by Filters.
type Option func(*HTTPFilter)

// WithPathNormalization sets the normalization mode (default BASE).
func WithPathNormalization(m pathnorm.Mode) Option { return func(f *HTTPFilter) { f.Mode = m } }

// WithDestinationPort sets the port RBAC sees as destination.port (the
// workload's application port); 0 uses the listener's local port.
func WithDestinationPort(port int) Option {
	return func(f *HTTPFilter) { f.DestPort = uint32(port) }
}

// Filters returns the proxy's HTTP filter factories this package provides
// (pass as proxy.Options.HTTPFilters). Requests are path-normalized (BASE,
// Istio's default, unless WithPathNormalization) before RBAC runs, and the
// upstream receives the normalized path.
func Filters(log *slog.Logger, opts ...Option) map[string]listener.FilterFactory {
	return map[string]listener.FilterFactory{FilterName: Factory(log, opts...)}
}

// Factory builds an RBAC HTTP filter from an http_filters typed_config.
func Factory(log *slog.Logger, opts ...Option) listener.FilterFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(tc *anypb.Any) (listener.HTTPFilter, error) {
		cfg := &rbachttp.RBAC{}
		if tc != nil {
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", FilterName, err)
			}
		}
		e, err := New(cfg)
		if err != nil {
			return nil, err
		}
		f := &HTTPFilter{Engine: e, Mode: pathnorm.Base, Log: log}
		for _, o := range opts {
			o(f)
		}
		return f, nil
	}
}

// HTTPFilter runs one RBAC filter config in the proxy (listener.HTTPFilter).
type HTTPFilter struct {
	Engine *Engine
	Mode   pathnorm.Mode
	Log    *slog.Logger
	// DestPort overrides the destination port (0: the local port).
	DestPort uint32
}

// Filter normalizes r's path in place, evaluates the engine and answers
// 400 (invalid path) or 403 "RBAC: access denied" itself; it returns true
// when it answered.
func (f *HTTPFilter) Filter(w http.ResponseWriter, r *http.Request) bool {
	p, err := NormalizeRequest(r, f.Mode)
	if err != nil {
		reply(w, r, http.StatusBadRequest, "Bad Request")
		return true
	}
	req := RequestFrom(r, p)
	if f.DestPort != 0 {
		req.DestPort = f.DestPort
	}
	d := f.Engine.Check(req)
	for _, m := range d.Shadow { // e.g. the CUSTOM marking ext_authz reads
		dynmeta.Set(r, FilterName, m.StatPrefix+ShadowEffectivePolicyKey, m.Policy)
	}
	if len(d.Audited) > 0 {
		f.Log.Info("rbac audit", "policies", d.Audited, "method", r.Method, "path", p, "principal", req.Principal, "allowed", d.Allowed)
	}
	if d.Allowed {
		return false
	}
	f.Log.Debug(DeniedDetails, "policy", d.Policy, "method", r.Method, "path", p, "principal", req.Principal)
	if ds, ok := w.(interface{ SetResponseDetails(string) }); ok { // access log reason
		ds.SetResponseDetails(DeniedBody + " (" + DeniedDetails + "_matched_policy[" + d.Policy + "])")
	}
	reply(w, r, http.StatusForbidden, DeniedBody)
	return true
}

// NormalizeRequest normalizes r.URL's path with mode, rewriting r.URL so
// routing and the upstream see the normalized path, and returns it in
// escaped form.
func NormalizeRequest(r *http.Request, mode pathnorm.Mode) (string, error) {
	p := r.URL.EscapedPath()
	np, err := pathnorm.Normalize(p, mode)
	if err != nil {
		return "", err
	}
	if np == p {
		return p, nil
	}
	dec, err := url.PathUnescape(np)
	if err != nil {
		return "", fmt.Errorf("%w: %v", pathnorm.ErrInvalidPath, err)
	}
	r.URL.Path, r.URL.RawPath = dec, np
	if dec == np {
		r.URL.RawPath = ""
	}
	return np, nil
}

// RequestFrom builds the engine's view of r with the (normalized, escaped)
// path p: the peer principal from the client certificate's first URI SAN,
// source IP from the connection (xff_num_trusted_hops 0), destination from
// the local address.
func RequestFrom(r *http.Request, p string) *Request {
	req := &Request{Method: r.Method, Host: r.Host, Path: p, RawQuery: r.URL.RawQuery, Header: r.Header}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.SourceIP = ap.Addr().Unmap()
		req.RemoteIP = req.SourceIP
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			req.DestIP, req.DestPort = ap.Addr().Unmap(), uint32(ap.Port())
		}
	}
	if r.TLS != nil {
		req.SNI = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			req.Principal = r.TLS.PeerCertificates[0].URIs[0].String()
		}
	}
	if a, ok := authctx.From(r.Context()); ok { // set by the JWT filter
		req.RequestPrincipal, req.Audiences, req.Presenter, req.Claims = a.Principal, a.Audiences, a.Presenter, a.Claims
	}
	return req
}

// reply writes a local reply like Envoy: gRPC requests get HTTP 200 with
// grpc-status PERMISSION_DENIED (7) / INTERNAL for 400.
func reply(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		code := "7"
		if status == http.StatusBadRequest {
			code = "13"
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", code)
		w.Header().Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	_, _ = fmt.Fprint(w, msg)
}
