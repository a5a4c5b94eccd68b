package listener

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3" // access_log typed configs decode
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	statsv1 "istio.io/api/envoy/extensions/stats"

	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/proxy/tracing"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// AccessLogPolicy is an HCM's access log decision: Disabled logs nothing
// (an access log whose filter never passes, e.g. a 0 % runtime_filter),
// otherwise a request is logged when its status passes the comparison
// (Op "" passes everything).
type AccessLogPolicy struct {
	Disabled bool
	Op       string // one of >= > == != < <=
	Code     int
}

// Allows reports whether a request with status should be logged.
func (p *AccessLogPolicy) Allows(status int) bool {
	if p == nil {
		return true
	}
	if p.Disabled {
		return false
	}
	switch p.Op {
	case ">=":
		return status >= p.Code
	case ">":
		return status > p.Code
	case "==":
		return status == p.Code
	case "!=":
		return status != p.Code
	case "<":
		return status < p.Code
	case "<=":
		return status <= p.Code
	}
	return true
}

// buildTelemetry compiles the HCMs' tracing and access_log fields.
func (rt *Runtime) buildTelemetry(res *xdsclient.Resources) error {
	resolve := func(name string) string {
		c := rt.Clusters.Clusters[name]
		if c == nil || c.Passthrough {
			return ""
		}
		h, err := c.Pick(0)
		if err != nil {
			return ""
		}
		return h.Addr
	}
	for name, l := range res.Listeners {
		inbound := name == "virtualInbound"
		for _, h := range xdsclient.ListenerHCMs(l) {
			tc, err := tracing.FromHCM(h.GetTracing(), "", resolve)
			if err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
			al, err := accessLogPolicy(h)
			if err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
			mp, err := metricsPolicy(h)
			if err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
			if inbound {
				rt.InboundMetrics = firstNonNil(rt.InboundMetrics, mp)
			} else {
				rt.OutboundMetrics = firstNonNil(rt.OutboundMetrics, mp)
			}
			if inbound {
				rt.InboundTracing = firstNonNil(rt.InboundTracing, tc)
				rt.InboundAccessLog = firstNonNil(rt.InboundAccessLog, al)
			} else {
				rt.OutboundTracing = firstNonNil(rt.OutboundTracing, tc)
				rt.OutboundAccessLog = firstNonNil(rt.OutboundAccessLog, al)
			}
		}
	}
	return nil
}

func firstNonNil[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// accessLogPolicy reads an HCM's access_log list: none → nil (proxy
// default); entries → the first entry's filter (status_code_filter, a
// CEL `response.code OP N` expression filter, or a 0 % runtime_filter for
// "disabled").
func accessLogPolicy(h *hcmv3.HttpConnectionManager) (*AccessLogPolicy, error) {
	logs := h.GetAccessLog()
	if len(logs) == 0 {
		return nil, nil
	}
	f := logs[0].GetFilter()
	p := &AccessLogPolicy{}
	switch {
	case f == nil:
	case f.GetRuntimeFilter() != nil:
		p.Disabled = f.GetRuntimeFilter().GetPercentSampled().GetNumerator() == 0
	case f.GetStatusCodeFilter() != nil:
		c := f.GetStatusCodeFilter().GetComparison()
		p.Code = int(c.GetValue().GetDefaultValue())
		switch c.GetOp() {
		case accesslogv3.ComparisonFilter_GE:
			p.Op = ">="
		case accesslogv3.ComparisonFilter_EQ:
			p.Op = "=="
		case accesslogv3.ComparisonFilter_LE:
			p.Op = "<="
		}
	case f.GetExtensionFilter() != nil:
		ef := &celv3.ExpressionFilter{}
		if err := f.GetExtensionFilter().GetTypedConfig().UnmarshalTo(ef); err != nil {
			return nil, fmt.Errorf("access_log filter: %w", err)
		}
		op, code, err := parseCodeExpr(ef.GetExpression())
		if err != nil {
			return nil, err
		}
		p.Op, p.Code = op, code
	default:
		return nil, fmt.Errorf("access_log filter: only status_code_filter, runtime_filter and CEL response.code expressions are supported")
	}
	return p, nil
}

// parseCodeExpr parses the CEL subset `response.code OP N`.
func parseCodeExpr(e string) (string, int, error) {
	s := strings.TrimSpace(e)
	rest, ok := strings.CutPrefix(s, "response.code")
	if !ok {
		return "", 0, fmt.Errorf("access_log filter expression %q: only `response.code OP NUMBER` is supported", e)
	}
	rest = strings.TrimSpace(rest)
	for _, op := range []string{">=", "<=", "==", "!=", ">", "<"} {
		if v, ok := strings.CutPrefix(rest, op); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return "", 0, fmt.Errorf("access_log filter expression %q: %w", e, err)
			}
			return op, n, nil
		}
	}
	return "", 0, fmt.Errorf("access_log filter expression %q: only `response.code OP NUMBER` is supported", e)
}

// tracingConfig is the tracing config for this handler's direction.
func (h *Handler) tracingConfig(rt *Runtime) *tracing.Config {
	if h.Direction == Inbound {
		return rt.InboundTracing
	}
	return rt.OutboundTracing
}

func (h *Handler) accessPolicy(rt *Runtime) *AccessLogPolicy {
	if rt == nil {
		return nil
	}
	if h.Direction == Inbound {
		return rt.InboundAccessLog
	}
	return rt.OutboundAccessLog
}

type rndFunc func() uint64

func (f rndFunc) Uint64() uint64 { return f() }

// startSpan begins the request's span (inbound: SERVER, outbound and
// gateway: CLIENT) and rewrites the trace headers forwarded upstream.
func (h *Handler) startSpan(cfg *tracing.Config, r *http.Request, ri *reqInfo) {
	kind := tracing.Client
	if h.Direction == Inbound {
		kind = tracing.Server
	}
	sp := tracing.Start(cfg, r.Header, kind, rndFunc(h.rnd), ri.start)
	if sp == nil {
		return
	}
	sp.Service = h.Ident.App
	if sp.Service == "" {
		sp.Service = h.Ident.Workload
	}
	if h.Ident.Namespace != "" {
		sp.Service += "." + h.Ident.Namespace
	}
	ri.span = sp
}

// finishSpan tags the span like Envoy and queues it for export.
func (h *Handler) finishSpan(r *http.Request, ri *reqInfo, svc string, end time.Time) {
	sp := ri.span
	// The service port: the outbound cluster's, else the authority's (an
	// inbound cluster names the app port, not the service port).
	port := ""
	if parts := strings.Split(ri.cluster, "|"); len(parts) == 4 && parts[0] == "outbound" {
		port = parts[1]
	} else if _, p, err := net.SplitHostPort(r.Host); err == nil {
		port = p
	} else if len(parts) == 4 {
		port = parts[1]
	}
	switch {
	case svc != "" && port != "":
		sp.Name = svc + ":" + port + "/*"
	case svc != "":
		sp.Name = svc + "/*"
	default:
		sp.Name = r.Host + r.URL.Path
	}
	url := r.URL.Path
	if r.URL.RawQuery != "" {
		url += "?" + r.URL.RawQuery
	}
	url = "http://" + r.Host + url
	if n := sp.Config().MaxPathTagLength; n > 0 && len(url) > n {
		url = url[:n]
	}
	sp.Tag("node_id", h.Ident.Workload+"."+h.Ident.Namespace)
	sp.Tag("guid:x-request-id", r.Header.Get("X-Request-Id"))
	sp.Tag("http.method", r.Method)
	sp.Tag("http.url", url)
	sp.Tag("http.protocol", r.Proto)
	sp.Tag("http.status_code", strconv.Itoa(ri.status))
	sp.Tag("response_flags", ri.flagString())
	sp.Tag("upstream_cluster", ri.cluster)
	sp.Tag("upstream_cluster.name", ri.cluster)
	sp.Tag("upstream_address", ri.upstreamHost)
	sp.Tag("downstream_cluster", "-")
	sp.Tag("user_agent", r.UserAgent())
	sp.Tag("peer.address", r.RemoteAddr)
	sp.Tag("istio.canonical_service", orUnknown(h.Ident.App))
	sp.Tag("istio.namespace", h.Ident.Namespace)
	sp.Tag("istio.mesh_id", "cluster.local")
	sp.Tag("component", "proxy")
	for _, t := range sp.Config().Tags {
		v := t.Literal
		if t.Header != "" {
			if v = r.Header.Get(t.Header); v == "" {
				v = t.Default
			}
		}
		sp.Tag(t.Name, v)
	}
	if ri.status >= 500 || ri.status == 0 {
		sp.Error = true
	}
	if h.Direction == Inbound {
		sp.Remote = r.RemoteAddr
	} else {
		sp.Remote = ri.upstreamHost
	}
	h.Tracer.Finish(sp, end)
}

// traceIDs returns the trace and span id to log for r.
func traceIDs(r *http.Request, ri *reqInfo) (string, string) {
	if ri.span != nil {
		return ri.span.Ctx.TraceID.String(), ri.span.Ctx.SpanID.String()
	}
	if _, ok := r.Header[tracing.HeaderTraceparent]; !ok {
		if _, ok := r.Header[tracing.HeaderB3TraceID]; !ok {
			if _, ok := r.Header[tracing.HeaderB3]; !ok {
				return "", ""
			}
		}
	}
	sc, ok := tracing.Extract(r.Header)
	if !ok {
		return "", ""
	}
	return sc.TraceID.String(), sc.SpanID.String()
}

// SetResponseDetails lets a filter that answers a request say why (the
// access log's response_code_details).
func (c *countingWriter) SetResponseDetails(s string) { c.details = s }

// SetResponseFlags lets a filter that answers a request add an Envoy
// response flag (e.g. UAEX for an ext_authz denial).
func (c *countingWriter) SetResponseFlags(s string) { c.flags = s }

// StatsFilter is Istio's telemetry HTTP filter; its typed config
// (stats.PluginConfig) carries Telemetry metrics overrides.
const StatsFilter = "istio.stats"

// MetricsPolicy is a side's metrics overrides: Drop has a stats.DropX bit
// per disabled HTTP metric, Remove a bit per removed label
// (stats.LabelNames).
type MetricsPolicy struct {
	Drop   uint8
	Remove uint32
}

var metricBits = map[string]uint8{"requests_total": stats.DropRequests, "request_duration_milliseconds": stats.DropDuration,
	"request_bytes": stats.DropRequestSize, "response_bytes": stats.DropResponseSize, "": stats.DropAllHTTP}

// metricsPolicy reads an HCM's istio.stats filter config: entries with
// drop disable a metric ("" = every metric), tags_to_remove remove labels.
// TCP metrics and dimensions (tag upserts) are not executed.
func metricsPolicy(h *hcmv3.HttpConnectionManager) (*MetricsPolicy, error) {
	for _, f := range h.GetHttpFilters() {
		if f.GetName() != StatsFilter || f.GetTypedConfig() == nil {
			continue
		}
		pc := &statsv1.PluginConfig{}
		if !f.GetTypedConfig().MessageIs(pc) {
			continue // Istio's TypedStruct form: not understood, metrics unchanged
		}
		if err := f.GetTypedConfig().UnmarshalTo(pc); err != nil {
			return nil, fmt.Errorf("%s: %w", StatsFilter, err)
		}
		p := &MetricsPolicy{}
		for _, m := range pc.GetMetrics() {
			bits, ok := metricBits[m.GetName()]
			if !ok {
				continue // TCP or custom metrics
			}
			if m.GetDrop() {
				p.Drop |= bits
			}
			for _, tag := range m.GetTagsToRemove() {
				p.Remove |= stats.LabelBit(tag)
			}
		}
		return p, nil
	}
	return nil, nil
}

func (h *Handler) metricsPolicy(rt *Runtime) *MetricsPolicy {
	if rt == nil {
		return nil
	}
	if h.Direction == Inbound {
		return rt.InboundMetrics
	}
	return rt.OutboundMetrics
}
