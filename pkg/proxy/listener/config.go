// Package listener holds the proxy's HTTP and TCP front ends: the outbound
// listener (plain HTTP with a mesh Host, absolute-form HTTP_PROXY requests,
// CONNECT tunnels, h2c), the inbound listener (HTTP/1, h2c or opaque TCP,
// sniffed), and the request forwarding engine that executes compiled
// routes against the cluster manager.
package listener

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/executable"
	"github.com/weftmesh/weft/pkg/proxy/router"
	"github.com/weftmesh/weft/pkg/proxy/tracing"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// Runtime is one immutable, fully compiled configuration. The proxy swaps
// whole Runtimes atomically.
type Runtime struct {
	// Routes are the RDS route tables by name (the port, e.g. "9080").
	Routes map[string]*router.Table
	// TCP holds the outbound tcp_proxy listeners (plain TCP and TLS by SNI).
	TCP outboundTCP
	// Inbound maps an inbound destination port to the inline route table of
	// virtualInbound's filter chain; key 0 is a chain without a port.
	Inbound map[int]*router.Table
	// InboundTCP maps inbound destination ports to tcp_proxy clusters.
	InboundTCP map[int]string
	Clusters   *cluster.Set
	Resources  *xdsclient.Resources
	// Complete is true when every referenced RDS/EDS resource is present.
	Complete bool
	// InboundFilters are virtualInbound's extension HTTP filters by
	// destination port (0: a chain without a port), run before routing.
	InboundFilters map[int][]HTTPFilter
	// OutboundFilters are outbound listeners' extension HTTP filters by port.
	OutboundFilters map[int][]HTTPFilter
	// InboundConnFilters are the network filters (e.g. RBAC) of
	// virtualInbound's opaque TCP chains by destination port, run on each
	// accepted connection before it is proxied.
	InboundConnFilters map[int][]ConnFilter
	// Warnings list configuration accepted but not executed.
	Warnings []string
	// Passthrough is the cluster virtualOutbound's tcp_proxy sends unknown
	// destinations to ("PassthroughCluster" under ALLOW_ANY); empty when
	// unknown destinations are refused (REGISTRY_ONLY → BlackHoleCluster).
	Passthrough string
	// InboundTracing and OutboundTracing are compiled from the HCM
	// `tracing` field of virtualInbound and of the outbound (or gateway)
	// listeners; nil means no tracing work at all.
	InboundTracing, OutboundTracing *tracing.Config
	// InboundAccessLog and OutboundAccessLog are the HCM `access_log`
	// decision; nil keeps the proxy's own setting (log every request when
	// an access log sink is configured).
	InboundAccessLog, OutboundAccessLog *AccessLogPolicy
	// InboundOTelLogs and OutboundOTelLogs are the access_log entries
	// that are OpenTelemetry access loggers (Istio's envoyOtelAls), each
	// with its own filter; run by Handler.OTelLogs.
	InboundOTelLogs, OutboundOTelLogs []OTelLog
	// InboundMetrics and OutboundMetrics are Telemetry metrics overrides
	// (the istio.stats filter's stats.PluginConfig); nil: all metrics.
	InboundMetrics, OutboundMetrics *MetricsPolicy
}

// HTTPFilter is an extension HTTP filter run before routing. Filter returns
// true when it wrote the response itself (e.g. an authorization deny), which
// ends the request. Implementations must be safe for concurrent use.
type HTTPFilter interface {
	Filter(w http.ResponseWriter, r *http.Request) (handled bool)
}

// ResponseFilter is an optional interface of an HTTPFilter that also sees
// the response (e.g. proxy-wasm's response, body and log phases). The
// handler calls FilterResponse instead of Filter. It runs the request phase
// like Filter, writing a local reply to w when it handles the request.
// Otherwise wrap (nil: none) is applied to the handler's downstream writer,
// so the response goes through the writer it returns, which may buffer and
// rewrite it; it must implement Unwrap for http.ResponseController. done
// (nil: none) is called, handled or not, after the handler wrote the whole
// response, in reverse filter order (a wrapper flushes what it holds), with
// what the proxy knows about the stream.
type ResponseFilter interface {
	HTTPFilter
	FilterResponse(w http.ResponseWriter, r *http.Request) (wrap func(http.ResponseWriter) http.ResponseWriter, done func(StreamInfo), handled bool)
}

// LogFilter is an optional interface of an HTTPFilter: when a filter
// before it answers the request, the filter never sees the request, yet
// Envoy still runs its log phase (a proxy-wasm plugin's proxy_on_log sees
// the local reply). The handler calls LogOnly for each filter after the
// one that answered and calls the function it returns (nil: nothing to
// log) with the other done functions.
type LogFilter interface {
	LogOnly(r *http.Request) func(StreamInfo)
}

// StreamInfo is what the proxy knows about a finished stream (Envoy's
// stream info, for filters' log phases).
type StreamInfo struct {
	ResponseCode  int
	ResponseFlags string // Envoy response flags, "-" when none
	Details       string // why the proxy answered itself; "" when via upstream
	Cluster       string // upstream cluster, "" when none
	UpstreamHost  string // upstream address, "" when none
	RouteName     string
	Duration      time.Duration
	BytesReceived int64 // request body bytes read
	BytesSent     int64 // response body bytes written
}

// A filter that also implements io.Closer is closed by CloseUnused once
// the Runtime that replaced the one holding it no longer does.

// CloseUnused closes the io.Closer filters of old that cur does not hold
// (call after swapping cur in). It returns the first Close error.
func CloseUnused(old, cur *Runtime) error {
	if old == nil {
		return nil
	}
	keep := map[io.Closer]bool{}
	each := func(rt *Runtime, fn func(io.Closer)) {
		for _, m := range []map[int][]HTTPFilter{rt.InboundFilters, rt.OutboundFilters} {
			for _, fs := range m {
				for _, f := range fs {
					if c, ok := f.(io.Closer); ok {
						fn(c)
					}
				}
			}
		}
	}
	if cur != nil {
		each(cur, func(c io.Closer) { keep[c] = true })
	}
	var first error
	each(old, func(c io.Closer) {
		if keep[c] {
			return
		}
		keep[c] = true // once
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	})
	return first
}

// FilterFactory builds an HTTPFilter from an http_filters entry's typed
// config. It is called on every accepted update, serially.
type FilterFactory func(typedConfig *anypb.Any) (HTTPFilter, error)

// ConnFilter is a network filter of an inbound opaque TCP filter chain
// (e.g. envoy.filters.network.rbac), run when a connection is accepted,
// before it is proxied: a denied connection is closed. details says why
// (Envoy's connection termination details). Implementations must be safe
// for concurrent use.
type ConnFilter interface {
	CheckConn(c *ConnInfo) (allowed bool, details string)
}

// ConnInfo is what a ConnFilter sees of a connection. Filters of one
// connection run serially and may pass dynamic metadata on through it.
type ConnInfo struct {
	Source, Destination netip.AddrPort
	// Principal is the peer certificate's URI SAN on mutual TLS, else "".
	Principal string
	SNI       string
	// Peer is the peer's certificate state on mutual TLS, else nil.
	Peer *tls.ConnectionState

	meta map[string]map[string]string
}

// SetMetadata records filter/key = value for the later filters (Envoy's
// connection dynamic metadata, e.g. the RBAC shadow result).
func (c *ConnInfo) SetMetadata(filter, key, value string) {
	if c.meta == nil {
		c.meta = map[string]map[string]string{}
	}
	if c.meta[filter] == nil {
		c.meta[filter] = map[string]string{}
	}
	c.meta[filter][key] = value
}

// Metadata returns filter/key set by an earlier filter.
func (c *ConnInfo) Metadata(filter, key string) (string, bool) {
	v, ok := c.meta[filter][key]
	return v, ok
}

// NetworkFilterFactory builds a ConnFilter from a listener filter's typed
// config; called on every accepted update, serially.
type NetworkFilterFactory func(typedConfig *anypb.Any) (ConnFilter, error)

// Build compiles resources into a Runtime. It returns an error for anything
// the proxy cannot execute, so the caller can NACK.
//
// filters maps HTTP filter names (as in an HCM's http_filters) to
// factories for filters implemented outside this package (e.g. RBAC); a
// factory error rejects the update. Filters neither built in nor in
// filters are reported in Warnings. netFilters (optional) does the same
// for network filters of virtualInbound's opaque TCP chains
// (Runtime.InboundConnFilters).
func Build(res *xdsclient.Resources, cm *cluster.Manager, prev *Runtime, filters map[string]FilterFactory, netFilters ...map[string]NetworkFilterFactory) (_ *Runtime, err error) {
	var made []HTTPFilter // factory results; closed when the update is rejected
	defer func() {
		if err != nil && len(made) > 0 {
			_ = CloseUnused(&Runtime{InboundFilters: map[int][]HTTPFilter{0: made}}, prev)
		}
	}()
	rt := &Runtime{Routes: map[string]*router.Table{}, Inbound: map[int]*router.Table{},
		InboundTCP: map[int]string{}, InboundFilters: map[int][]HTTPFilter{}, OutboundFilters: map[int][]HTTPFilter{},
		InboundConnFilters: map[int][]ConnFilter{}, Resources: res, Complete: res.Complete()}
	netFactory := func(name string) NetworkFilterFactory {
		for _, m := range netFilters {
			if f := m[name]; f != nil {
				return f
			}
		}
		return nil
	}
	for name, rc := range res.Routes {
		t, err := router.Compile(rc)
		if err != nil {
			return nil, err
		}
		rt.Routes[name] = t
	}
	for name, l := range res.Listeners {
		inbound := name == "virtualInbound"
		chains := l.GetFilterChains()
		if l.GetDefaultFilterChain() != nil {
			chains = append(append([]*listenerv3.FilterChain{}, chains...), l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			port := int(fc.GetFilterChainMatch().GetDestinationPort().GetValue())
			for _, f := range fc.GetFilters() {
				tc := f.GetTypedConfig()
				if tc == nil {
					continue
				}
				tp := &tcpv3.TcpProxy{}
				if tc.MessageIs(tp) {
					if err := tc.UnmarshalTo(tp); err != nil {
						return nil, fmt.Errorf("listener %q: tcp_proxy: %w", name, err)
					}
					cl := tp.GetCluster()
					if cl == "" && len(tp.GetWeightedClusters().GetClusters()) > 0 {
						cl = tp.GetWeightedClusters().GetClusters()[0].GetName()
					}
					switch {
					case inbound:
						rt.InboundTCP[port] = cl
					case name == "virtualOutbound":
						if cl == "PassthroughCluster" {
							rt.Passthrough = cl
						}
					default:
						if p := listenerPort(l); p > 0 {
							if t := compileTCPRoute(fc, tp); t != nil {
								t.Sniffed = slices.ContainsFunc(chains, func(c *listenerv3.FilterChain) bool { return len(hcmOf(c)) > 0 })
								rt.TCP.add(l, p, t, tp.GetStatPrefix())
							}
						}
					}
				}
			}
			if inbound {
				for _, h := range hcmOf(fc) {
					if rc := h.GetRouteConfig(); rc != nil {
						t, err := router.Compile(rc)
						if err != nil {
							return nil, fmt.Errorf("listener %q: %w", name, err)
						}
						rt.Inbound[port] = t
					}
				}
			}
		}
		for _, fc := range chains {
			port := int(fc.GetFilterChainMatch().GetDestinationPort().GetValue())
			for _, f := range fc.GetFilters() {
				if executable.NetworkFilter(f.GetName()) {
					continue
				}
				if factory := netFactory(f.GetName()); factory != nil && inbound && len(hcmOf(fc)) == 0 {
					cf, err := factory(f.GetTypedConfig())
					if err != nil {
						return nil, fmt.Errorf("listener %q: network filter %q: %w", name, f.GetName(), err)
					}
					rt.InboundConnFilters[port] = append(rt.InboundConnFilters[port], cf)
					continue
				}
				rt.Warnings = append(rt.Warnings, fmt.Sprintf("listener %q: network filter %q not executed", name, f.GetName()))
			}
		}
		for _, fc := range chains {
			port := int(fc.GetFilterChainMatch().GetDestinationPort().GetValue())
			for _, h := range hcmOf(fc) {
				var chain []HTTPFilter
				for _, hf := range h.GetHttpFilters() {
					if slices.Contains(executable.BuiltinHTTPFilters, hf.GetName()) {
						continue
					}
					factory := filters[hf.GetName()]
					if factory == nil {
						rt.Warnings = append(rt.Warnings, fmt.Sprintf("listener %q: http filter %q not executed", name, hf.GetName()))
						continue
					}
					f, err := factory(hf.GetTypedConfig())
					if err != nil {
						return nil, fmt.Errorf("listener %q: http filter %q: %w", name, hf.GetName(), err)
					}
					made = append(made, f)
					chain = append(chain, f)
				}
				switch {
				case len(chain) == 0:
				case inbound:
					rt.InboundFilters[port] = chain
				default:
					if p := listenerPort(l); p > 0 {
						rt.OutboundFilters[p] = chain
					}
				}
			}
		}
		for _, h := range xdsclient.ListenerHCMs(l) {
			if rc := h.GetRouteConfig(); rc != nil && !inbound {
				t, err := router.Compile(rc)
				if err != nil {
					return nil, fmt.Errorf("listener %q: %w", name, err)
				}
				if p := listenerPort(l); p > 0 {
					rt.Routes[strconv.Itoa(p)] = t
				}
			}
		}
	}
	var prevSet *cluster.Set
	if prev != nil {
		prevSet = prev.Clusters
	}
	set, err := cm.Build(res.Clusters, res.Endpoints, xdsclient.EDSName, prevSet)
	if err != nil {
		return nil, err
	}
	rt.Clusters = set
	if err := rt.buildTelemetry(res); err != nil {
		return nil, err
	}
	return rt, nil
}

func hcmOf(fc *listenerv3.FilterChain) []*hcmv3.HttpConnectionManager {
	l := &listenerv3.Listener{FilterChains: []*listenerv3.FilterChain{fc}}
	return xdsclient.ListenerHCMs(l)
}

func listenerPort(l *listenerv3.Listener) int {
	if p := l.GetAddress().GetSocketAddress().GetPortValue(); p > 0 {
		return int(p)
	}
	// Names like 0.0.0.0_9080 or 10.0.0.1_3306.
	if i := strings.LastIndexByte(l.GetName(), '_'); i >= 0 {
		if p, err := strconv.Atoi(l.GetName()[i+1:]); err == nil {
			return p
		}
	}
	return 0
}
