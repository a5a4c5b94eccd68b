// Package extauthz runs Envoy's ext_authz HTTP filter
// (envoy.extensions.filters.http.ext_authz.v3.ExtAuthz) in the proxy: each
// request is checked by an external authorization service, over HTTP
// (http_service) or gRPC (grpc_service, envoy.service.auth.v3.Authorization
// /Check), before it reaches the application. This is what Istio's
// AuthorizationPolicy action CUSTOM with an envoyExtAuthzHttp /
// envoyExtAuthzGrpc provider compiles to.
//
// Supported: http_service.server_uri (uri, timeout), path_prefix,
// authorization_request.allowed_headers and headers_to_add,
// authorization_response.allowed_upstream_headers,
// allowed_upstream_headers_to_append and allowed_client_headers;
// grpc_service (envoy_grpc cluster "outbound|PORT||HOST" or google_grpc
// target_uri, timeout); top-level allowed_headers; failure_mode_allow and
// status_on_error, with_request_body (max_request_bytes,
// allow_partial_message, pack_as_bytes) and filter_enabled_metadata (one
// key of another filter's dynamic metadata, see package dynmeta: Istio's
// CUSTOM policies run the check only for requests their shadow RBAC rules
// marked).
//
// With WithClusters the service is reached through the proxy's cluster
// manager: the http_service server_uri.cluster or the envoy_grpc
// cluster_name selects a cluster of the current configuration, a host is
// picked by its load balancer and the connection uses the cluster's
// transport (ISTIO_MUTUAL mutual TLS when configured); outcomes feed its
// outlier detection. Without it the service is dialed directly.
//
// NetworkFilters provides envoy.filters.network.ext_authz (gRPC) for
// inbound opaque TCP connections (CUSTOM on TCP).
package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// FilterName is the http_filters name this package implements.
const FilterName = "envoy.filters.http.ext_authz"

// DefaultTimeout bounds one check when the config sets none (Envoy's 200ms
// is tight for a shared CI machine; Istio's providers default to 600s
// unless timeout is set, which it passes on).
const DefaultTimeout = 600 * time.Second

// Option configures the filters built by Factory.
type Option func(*options)

type options struct {
	// dial opens connections to the authorization service; default net.Dialer.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// clusters returns the proxy's current clusters; nil dials directly.
	clusters func() *cluster.Set
	// grpc client connections by cluster, shared by the filters built for
	// successive configurations.
	conns *connCache
}

// WithDialer sets how the filter reaches the authorization service when
// it is not sent through a cluster (see WithClusters).
func WithDialer(d func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dial = d }
}

// WithClusters sends checks through the proxy's cluster manager: clusters
// returns the current configuration's clusters (e.g. from
// proxy.Runtime().Clusters; it may return nil before the first one). A
// check whose cluster is not there fails (status_on_error unless
// failure_mode_allow), as in Envoy.
func WithClusters(clusters func() *cluster.Set) Option {
	return func(o *options) { o.clusters = clusters }
}

// Filters returns this package's factory keyed by FilterName (merge into
// proxy.Options.HTTPFilters).
func Filters(log *slog.Logger, opts ...Option) map[string]listener.FilterFactory {
	return map[string]listener.FilterFactory{FilterName: Factory(log, opts...)}
}

// checker asks the authorization service about one request.
type checker interface {
	check(ctx context.Context, r *http.Request, body checkBody) (*decision, error)
}

// checkBody is the (possibly partial) request body sent with a check.
type checkBody struct {
	data    []byte
	partial bool
	asBytes bool // gRPC raw_body instead of body
	on      bool // with_request_body is configured
}

// decision is the service's answer.
type decision struct {
	allowed bool
	// upstream headers to set (allowed) / append.
	set, add http.Header
	// denied reply.
	status int
	header http.Header
	body   []byte
}

// Filter is one ext_authz filter instance (listener.HTTPFilter).
type Filter struct {
	c           checker
	failOpen    bool
	errorStatus int
	log         *slog.Logger
	// enabled, when set, decides per request whether to check it
	// (filter_enabled_metadata).
	enabled func(*http.Request) bool
	// body settings (with_request_body); maxBody 0 sends no body.
	maxBody     int
	partialBody bool
	bodyAsBytes bool
}

// Factory builds a Filter from an http_filters typed_config.
func Factory(log *slog.Logger, opts ...Option) listener.FilterFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &options{}
	for _, f := range opts {
		f(o)
	}
	if o.dial == nil {
		o.dial = (&net.Dialer{}).DialContext
	}
	o.conns = &connCache{m: map[string]*grpcConn{}}
	return func(tc *anypb.Any) (listener.HTTPFilter, error) {
		cfg := &extauthzv3.ExtAuthz{}
		if tc != nil {
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", FilterName, err)
			}
		}
		return newFilter(cfg, log, o)
	}
}

// New compiles cfg; the service is dialed with dial (nil: net.Dialer).
func New(cfg *extauthzv3.ExtAuthz, log *slog.Logger, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Filter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return newFilter(cfg, log, &options{dial: dial, conns: &connCache{m: map[string]*grpcConn{}}})
}

func newFilter(cfg *extauthzv3.ExtAuthz, log *slog.Logger, o *options) (*Filter, error) {
	f := &Filter{failOpen: cfg.GetFailureModeAllow(), errorStatus: http.StatusForbidden, log: log}
	if b := cfg.GetWithRequestBody(); b != nil {
		if b.GetMaxRequestBytes() == 0 {
			return nil, fmt.Errorf("%s: with_request_body.max_request_bytes must be positive", FilterName)
		}
		f.maxBody, f.partialBody, f.bodyAsBytes = int(b.GetMaxRequestBytes()), b.GetAllowPartialMessage(), b.GetPackAsBytes()
	}
	if m := cfg.GetFilterEnabledMetadata(); m != nil {
		en, err := compileEnabled(m)
		if err != nil {
			return nil, fmt.Errorf("%s: filter_enabled_metadata: %w", FilterName, err)
		}
		f.enabled = en
	}
	if s := cfg.GetStatusOnError().GetCode(); s != 0 {
		f.errorStatus = int(s)
	}
	allowed, err := compileList(cfg.GetAllowedHeaders())
	if err != nil {
		return nil, fmt.Errorf("%s: allowed_headers: %w", FilterName, err)
	}
	switch {
	case cfg.GetHttpService() != nil:
		c, err := newHTTPChecker(cfg.GetHttpService(), allowed, o)
		if err != nil {
			return nil, fmt.Errorf("%s: http_service: %w", FilterName, err)
		}
		f.c = c
	case cfg.GetGrpcService() != nil:
		c, err := newGRPCChecker(cfg.GetGrpcService(), allowed, o)
		if err != nil {
			return nil, fmt.Errorf("%s: grpc_service: %w", FilterName, err)
		}
		f.c = c
	default:
		return nil, fmt.Errorf("%s: needs http_service or grpc_service", FilterName)
	}
	return f, nil
}

// Filter checks r; it answers the client itself (and returns true) when
// the service denies it or cannot be reached without failure_mode_allow.
func (f *Filter) Filter(w http.ResponseWriter, r *http.Request) bool {
	if f.enabled != nil && !f.enabled(r) {
		return false
	}
	var body []byte
	partial := false
	if f.maxBody > 0 && r.Body != nil && r.Body != http.NoBody {
		var err error
		body, partial, err = bufferBody(r, f.maxBody)
		if err != nil {
			f.log.Warn("ext_authz: reading the request body", "err", err, "path", r.URL.Path)
			localReply(w, http.StatusBadRequest, "ext_authz_body_error")
			return true
		}
		if partial && !f.partialBody {
			localReply(w, http.StatusRequestEntityTooLarge, "request_payload_too_large")
			return true
		}
	}
	d, err := f.c.check(r.Context(), r, checkBody{data: body, partial: partial, asBytes: f.bodyAsBytes, on: f.maxBody > 0})
	if err != nil {
		if f.failOpen {
			f.log.Warn("ext_authz check failed; allowing (failure_mode_allow)", "err", err, "path", r.URL.Path)
			return false
		}
		f.log.Warn("ext_authz check failed; denying", "err", err, "path", r.URL.Path)
		if ds, ok := w.(interface{ SetResponseDetails(string) }); ok {
			ds.SetResponseDetails("ext_authz_error")
		}
		setFlag(w)
		w.WriteHeader(f.errorStatus)
		return true
	}
	if d.allowed {
		for k, vs := range d.set {
			r.Header[k] = vs
		}
		for k, vs := range d.add {
			r.Header[k] = append(r.Header[k], vs...)
		}
		for k, vs := range d.header { // allowed_client_headers_on_success
			w.Header()[k] = vs
		}
		return false
	}
	if ds, ok := w.(interface{ SetResponseDetails(string) }); ok {
		ds.SetResponseDetails("ext_authz_denied")
	}
	setFlag(w)
	for k, vs := range d.header {
		w.Header()[k] = vs
	}
	st := d.status
	if st < 200 || st > 599 {
		st = http.StatusForbidden
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(d.body)))
	w.WriteHeader(st)
	_, _ = w.Write(d.body)
	return true
}

// headerList matches header names (lower-cased) with a ListStringMatcher;
// nil matches nothing.
type headerList []func(string) bool

func (l headerList) match(name string) bool {
	name = strings.ToLower(name)
	for _, m := range l {
		if m(name) {
			return true
		}
	}
	return false
}

func compileList(l *matcherv3.ListStringMatcher) (headerList, error) {
	var out headerList
	for i, p := range l.GetPatterns() {
		m, err := compileString(p)
		if err != nil {
			return nil, fmt.Errorf("patterns[%d]: %w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func compileString(m *matcherv3.StringMatcher) (func(string) bool, error) {
	ic := m.GetIgnoreCase()
	norm := func(s string) string {
		if ic {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		v := norm(p.Exact)
		return func(s string) bool { return norm(s) == v }, nil
	case *matcherv3.StringMatcher_Prefix:
		v := norm(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(norm(s), v) }, nil
	case *matcherv3.StringMatcher_Suffix:
		v := norm(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(norm(s), v) }, nil
	case *matcherv3.StringMatcher_Contains:
		v := norm(p.Contains)
		return func(s string) bool { return strings.Contains(norm(s), v) }, nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, err
		}
		return func(s string) bool { return re.MatchString(s) }, nil
	default:
		return nil, fmt.Errorf("unsupported string matcher %T", p)
	}
}

// timeoutOf returns d as a duration, DefaultTimeout when unset.
func timeoutOf(d interface{ AsDuration() time.Duration }, set bool) time.Duration {
	if !set {
		return DefaultTimeout
	}
	if t := d.AsDuration(); t > 0 {
		return t
	}
	return DefaultTimeout
}

// headerValues turns Envoy HeaderValue(Option)s into a header.
func headerValues(hs []*corev3.HeaderValue) http.Header {
	h := http.Header{}
	for _, v := range hs {
		h.Add(v.GetKey(), v.GetValue())
	}
	return h
}

// UnauthorizedFlag is Envoy's response flag for a request the external
// authorization service denied (or could not be asked about).
const UnauthorizedFlag = "UAEX"

func setFlag(w http.ResponseWriter) {
	if fs, ok := w.(interface{ SetResponseFlags(string) }); ok {
		fs.SetResponseFlags(UnauthorizedFlag)
	}
}
