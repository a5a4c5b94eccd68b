package listener

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3" // access_log typed configs decode
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	otellogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	statsv1 "istio.io/api/envoy/extensions/stats"

	"github.com/weftmesh/weft/pkg/proxy/otelals"
	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/proxy/tracing"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
	"github.com/weftmesh/weft/pkg/telemetry/expr"
)

// AccessLogPolicy is an HCM's access log decision: Disabled logs nothing
// (an access log whose filter never passes, e.g. a 0 % runtime_filter);
// else with a Filter (a CEL expression filter) a request or connection
// is logged when it evaluates to true; else when its status passes the
// comparison (status_code_filter; Op "" passes everything).
type AccessLogPolicy struct {
	Disabled bool
	Filter   *expr.Program
	Op       string // one of >= > == != < <=
	Code     int
}

// Allows reports whether a request with status (0 for a TCP connection)
// should be logged by the status comparison; callers evaluate a Filter
// themselves (p.Filter.Matches), only when there is one.
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
	var tcpInAL, tcpOutAL *AccessLogPolicy
	var tcpInOL, tcpOutOL []OTelLog
	for name, l := range res.Listeners {
		inbound := name == "virtualInbound"
		for _, h := range xdsclient.ListenerHCMs(l) {
			tc, err := tracing.FromHCM(h.GetTracing(), "", resolve)
			if err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
			al, ol, err := accessLogPolicy(h, resolve)
			if err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
			mp, err := metricsPolicy(h, nil)
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
				if rt.InboundOTelLogs == nil {
					rt.InboundOTelLogs = ol
				}
			} else {
				rt.OutboundTracing = firstNonNil(rt.OutboundTracing, tc)
				rt.OutboundAccessLog = firstNonNil(rt.OutboundAccessLog, al)
				if rt.OutboundOTelLogs == nil {
					rt.OutboundOTelLogs = ol
				}
			}
		}
		chains := append([]*listenerv3.FilterChain{}, l.GetFilterChains()...)
		if dc := l.GetDefaultFilterChain(); dc != nil {
			chains = append(chains, dc)
		}
		for _, fc := range chains {
			mp, err := metricsPolicy(nil, fc)
			if err != nil {
				return fmt.Errorf("listener %q: %w", name, err)
			}
			// tcp_proxy access_log: the side's policy when no HCM gave one.
			var al *AccessLogPolicy
			var ol []OTelLog
			for _, f := range fc.GetFilters() {
				tp := &tcpv3.TcpProxy{}
				if tc := f.GetTypedConfig(); tc != nil && tc.MessageIs(tp) && tc.UnmarshalTo(tp) == nil {
					if al, ol, err = accessLogsPolicy(tp.GetAccessLog(), resolve); err != nil {
						return fmt.Errorf("listener %q: tcp_proxy: %w", name, err)
					}
				}
			}
			if inbound {
				rt.InboundMetrics = firstNonNil(rt.InboundMetrics, mp)
				tcpInAL = firstNonNil(tcpInAL, al)
				if tcpInOL == nil {
					tcpInOL = ol
				}
			} else {
				rt.OutboundMetrics = firstNonNil(rt.OutboundMetrics, mp)
				tcpOutAL = firstNonNil(tcpOutAL, al)
				if tcpOutOL == nil {
					tcpOutOL = ol
				}
			}
		}
	}
	rt.InboundAccessLog = firstNonNil(rt.InboundAccessLog, tcpInAL)
	rt.OutboundAccessLog = firstNonNil(rt.OutboundAccessLog, tcpOutAL)
	if rt.InboundOTelLogs == nil {
		rt.InboundOTelLogs = tcpInOL
	}
	if rt.OutboundOTelLogs == nil {
		rt.OutboundOTelLogs = tcpOutOL
	}
	return nil
}

func firstNonNil[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// accessLogPolicy reads an HCM's access_log list (accessLogsPolicy).
func accessLogPolicy(h *hcmv3.HttpConnectionManager, resolve otelals.Resolver) (*AccessLogPolicy, []OTelLog, error) {
	return accessLogsPolicy(h.GetAccessLog(), resolve)
}

// OTelLog is one OpenTelemetry access logger of a side: its filter
// (Policy, as the file log's) and its compiled config.
type OTelLog struct {
	Policy *AccessLogPolicy
	Config *otelals.Config
}

// accessLogsPolicy reads an access_log list (an HCM's or a tcp_proxy's):
// none → nil (proxy default); the file log's decision from the first
// entry that is not an OpenTelemetry logger (status_code_filter, a CEL
// expression filter (pkg/telemetry/expr), or a 0 % runtime_filter for
// "disabled"), Disabled when every entry is one; and every
// envoy.access_loggers.open_telemetry entry with its own filter.
func accessLogsPolicy(logs []*accesslogv3.AccessLog, resolve otelals.Resolver) (*AccessLogPolicy, []OTelLog, error) {
	if len(logs) == 0 {
		return nil, nil, nil
	}
	var file *AccessLogPolicy
	var otel []OTelLog
	for _, l := range logs {
		p, err := logFilter(l.GetFilter())
		if err != nil {
			return nil, nil, err
		}
		oc := &otellogv3.OpenTelemetryAccessLogConfig{}
		if l.GetName() != otelals.Name && !l.GetTypedConfig().MessageIs(oc) {
			file = firstNonNil(file, p)
			continue
		}
		if p.Disabled {
			continue
		}
		if err := l.GetTypedConfig().UnmarshalTo(oc); err != nil {
			return nil, nil, fmt.Errorf("access_log %s: %w", otelals.Name, err)
		}
		c, err := otelals.FromXDS(oc, resolve)
		if err != nil {
			return nil, nil, fmt.Errorf("access_log: %w", err)
		}
		otel = append(otel, OTelLog{Policy: p, Config: c})
	}
	if file == nil {
		file = &AccessLogPolicy{Disabled: true} // only OpenTelemetry loggers
	}
	return file, otel, nil
}

// logFilter reads one access log's filter.
func logFilter(f *accesslogv3.AccessLogFilter) (*AccessLogPolicy, error) {
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
		prog, err := expr.Compile(ef.GetExpression())
		if err != nil {
			return nil, fmt.Errorf("access_log filter expression %q: %w", ef.GetExpression(), err)
		}
		p.Filter = prog
	default:
		return nil, fmt.Errorf("access_log filter: only status_code_filter, runtime_filter and CEL expression filters are supported")
	}
	return p, nil
}

// passes reports whether a request (status; 0 for TCP) passes p: its
// CEL filter when it has one (attrs made only then), else its status
// comparison.
func (p *AccessLogPolicy) passes(status int, attrs func() expr.Attributes) bool {
	if p != nil && p.Filter != nil && !p.Disabled {
		return p.Filter.Matches(attrs())
	}
	return p.Allows(status)
}

// otelLogs are the OpenTelemetry access loggers of this handler's side.
func (h *Handler) otelLogs(rt *Runtime) []OTelLog {
	if rt == nil || h.OTelLogs == nil {
		return nil
	}
	if h.Direction == Inbound {
		return rt.InboundOTelLogs
	}
	return rt.OutboundOTelLogs
}

// peerOf is a telemetry peer as the OpenTelemetry logger's filter state.
func peerOf(workload, ns, cluster, svc, rev, app, version string) *otelals.Peer {
	if workload == "" || workload == "unknown" {
		return nil
	}
	return &otelals.Peer{Workload: workload, Namespace: ns, Cluster: cluster, Service: svc, Revision: rev, App: app, Version: version}
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

// MetricsPolicy is a side's Telemetry metrics overrides: the HTTP and the
// TCP metrics in groups that share their tag overrides (one series set
// per group; a disabled metric is in no group).
type MetricsPolicy struct {
	HTTP, TCP []MetricGroup
	// TCPReportingInterval is how often open TCP connections report their
	// bytes (Telemetry metrics reportingInterval; 0: the default 5 s).
	TCPReportingInterval time.Duration
	// plain: no metric overrides, only the interval.
	plain bool
}

// overrides reports whether p changes the standard metrics.
func (p *MetricsPolicy) overrides() bool { return p != nil && !p.plain }

// tcpInterval is p's TCP reporting interval (0: the default).
func (p *MetricsPolicy) tcpInterval() time.Duration {
	if p == nil {
		return 0
	}
	return p.TCPReportingInterval
}

// MetricGroup is metrics (stats.DropX bits) with the same tag overrides:
// standard labels removed (Remove, a stats.LabelBit mask) and labels
// upserted from expressions, sorted by name.
type MetricGroup struct {
	Metrics uint16
	Remove  uint32
	Upsert  []TagUpsert
}

// TagUpsert sets label Name (a standard label, else an added one) to the
// value of Value ("unknown" when the evaluation fails).
type TagUpsert struct {
	Name     string
	Standard bool
	Value    *expr.Program
}

// apply returns l with the group's overrides; attrs are evaluated against
// l as it was.
func (g *MetricGroup) apply(l stats.Labels, all uint16, attrs expr.Attributes) stats.Labels {
	out := l
	out.Remove(g.Remove)
	var names, values []string
	for _, u := range g.Upsert {
		v := u.Value.Label(attrs, "unknown")
		if u.Standard {
			out.Set(u.Name, v)
			continue
		}
		names = append(names, u.Name)
		values = append(values, v)
	}
	if len(names) > 0 {
		out.Extra = stats.ExtraLabels(names, values)
	}
	out.Dropped = all &^ g.Metrics
	return out
}

// needsAttrs reports whether a group evaluates expressions.
func needsAttrs(gs []MetricGroup) bool {
	for _, g := range gs {
		if len(g.Upsert) > 0 {
			return true
		}
	}
	return false
}

// httpMetrics are the per-request HTTP metrics, messageMetrics the gRPC
// message counters (stats.DropX bits).
const (
	httpMetrics    = stats.DropRequests | stats.DropDuration | stats.DropRequestSize | stats.DropResponseSize
	messageMetrics = stats.DropRequestMessages | stats.DropResponseMessages
)

var metricBits = map[string]uint16{"requests_total": stats.DropRequests, "request_duration_milliseconds": stats.DropDuration,
	"request_bytes": stats.DropRequestSize, "response_bytes": stats.DropResponseSize,
	"request_messages_total": stats.DropRequestMessages, "response_messages_total": stats.DropResponseMessages,
	"tcp_sent_bytes_total": stats.DropTCPSent, "tcp_received_bytes_total": stats.DropTCPReceived,
	"tcp_connections_opened_total": stats.DropTCPOpened, "tcp_connections_closed_total": stats.DropTCPClosed}

// metricsPolicy reads the istio.stats filter config of an HCM (HTTP
// filter) or of a filter chain (network filter before tcp_proxy).
func metricsPolicy(h *hcmv3.HttpConnectionManager, fc *listenerv3.FilterChain) (*MetricsPolicy, error) {
	var tc *anypb.Any
	for _, f := range h.GetHttpFilters() {
		if f.GetName() == StatsFilter && f.GetTypedConfig() != nil {
			tc = f.GetTypedConfig()
		}
	}
	for _, f := range fc.GetFilters() {
		if tc == nil && f.GetName() == StatsFilter && f.GetTypedConfig() != nil {
			tc = f.GetTypedConfig()
		}
	}
	if tc == nil {
		return nil, nil
	}
	pc := &statsv1.PluginConfig{}
	if !tc.MessageIs(pc) {
		return nil, nil // Istio's TypedStruct form: not understood, metrics unchanged
	}
	if err := tc.UnmarshalTo(pc); err != nil {
		return nil, fmt.Errorf("%s: %w", StatsFilter, err)
	}
	return compileMetrics(pc)
}

// compileMetrics turns a stats.PluginConfig into groups: per metric,
// entries apply in order (name "" = every metric), a later one replacing
// drop and the same tags; metrics whose overrides are equal share a group.
func compileMetrics(pc *statsv1.PluginConfig) (*MetricsPolicy, error) {
	var interval time.Duration
	if d := pc.GetTcpReportingDuration(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("%s: tcp_reporting_duration: want a positive duration (0: the default), got %v", StatsFilter, d.AsDuration())
		}
		interval = d.AsDuration()
	}
	if len(pc.GetMetrics()) == 0 {
		return &MetricsPolicy{plain: true, TCPReportingInterval: interval}, nil
	}
	type metric struct {
		drop   bool
		remove map[string]bool   // tag → removed
		dims   map[string]string // tag → expression
	}
	per := map[string]*metric{}
	for n := range metricBits {
		per[n] = &metric{remove: map[string]bool{}, dims: map[string]string{}}
	}
	for _, m := range pc.GetMetrics() {
		for n, pm := range per {
			if m.GetName() != "" && m.GetName() != n {
				continue
			}
			if m.GetDrop() {
				pm.drop = true
			}
			for _, t := range m.GetTagsToRemove() {
				pm.remove[t] = true
				delete(pm.dims, t)
			}
			for t, e := range m.GetDimensions() {
				pm.dims[t] = e
				delete(pm.remove, t)
			}
		}
	}
	progs := map[string]*expr.Program{}
	p := &MetricsPolicy{TCPReportingInterval: interval}
	keys := map[string]int{} // group signature → index, per kind
	names := make([]string, 0, len(per))
	for n := range per {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pm := per[n]
		if pm.drop {
			continue
		}
		g := MetricGroup{Metrics: metricBits[n]}
		for t := range pm.remove {
			g.Remove |= stats.LabelBit(t)
		}
		tags := make([]string, 0, len(pm.dims))
		for t := range pm.dims {
			tags = append(tags, t)
		}
		sort.Strings(tags)
		sig := strconv.FormatUint(uint64(g.Remove), 16)
		for _, t := range tags {
			e := pm.dims[t]
			prog := progs[e]
			if prog == nil {
				var err error
				if prog, err = expr.Compile(e); err != nil {
					return nil, fmt.Errorf("%s: metric %s: dimension %s: %w", StatsFilter, n, t, err)
				}
				progs[e] = prog
			}
			g.Upsert = append(g.Upsert, TagUpsert{Name: t, Standard: stats.LabelBit(t) != 0, Value: prog})
			sig += "\x00" + t + "\x00" + e
		}
		list := &p.HTTP
		if g.Metrics&stats.DropAllTCP != 0 {
			list = &p.TCP
			sig = "tcp" + sig
		}
		if i, ok := keys[sig]; ok {
			(*list)[i].Metrics |= g.Metrics
			continue
		}
		keys[sig] = len(*list)
		*list = append(*list, g)
	}
	return p, nil
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
