package listener

import (
	"net"
	"net/netip"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/stats"
)

// Counters of the inbound connection filters, Envoy's network RBAC stats
// under Istio's "tcp." stat prefix (admin /stats).
const (
	ConnAllowedCounter = "tcp.rbac.allowed"
	ConnDeniedCounter  = "tcp.rbac.denied"
)

// allowConn runs the network filters of the inbound TCP chain for port on
// conn. A denied connection is counted, written to the access log with
// its connection_termination_details (e.g.
// rbac_access_denied_matched_policy[...]), and must be closed by the
// caller without being proxied.
func (h *Handler) allowConn(conn net.Conn, rt *Runtime, port int, clusterName string) bool {
	fs := rt.InboundConnFilters[port]
	if len(fs) == 0 && rt.InboundTCP[port] == "" {
		// Explicit mode: the app port's chain is not the TCP service's
		// (that one is keyed by the service port); every TCP chain of a
		// proxy carries the same filters, so take the lowest port's.
		best := -1
		for p, f := range rt.InboundConnFilters {
			if len(f) > 0 && (best < 0 || p < best) {
				best, fs = p, f
			}
		}
	}
	if len(fs) == 0 {
		hf, ok := rt.InboundFilters[port]
		if !ok {
			hf = rt.InboundFilters[0]
		}
		if len(hf) == 0 {
			return true
		}
		// The port's chain is HTTP with filters (authorization, authn,
		// Wasm) that cannot run on opaque bytes: passing them to the app
		// would bypass those filters (e.g. a lowercase method the sniffer
		// does not take for HTTP but a lenient server parses). Envoy's HTTP
		// codec would reject such bytes too.
		fs = []ConnFilter{httpOnlyPort{}}
	}
	st := PeerTLS(conn)
	ci := &ConnInfo{Principal: PeerPrincipal(st), Peer: st}
	if st != nil {
		ci.SNI = st.ServerName
	}
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		ci.Source = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if ap, err := netip.ParseAddrPort(conn.LocalAddr().String()); err == nil {
		ci.Destination = netip.AddrPortFrom(ap.Addr().Unmap(), uint16(port))
	}
	for _, f := range fs {
		ok, details := f.CheckConn(ci)
		if ok {
			continue
		}
		if h.Stats != nil {
			h.Stats.Counter(ConnDeniedCounter).Add(1)
		}
		if h.Log != nil {
			h.Log.Debug("inbound tcp: connection denied", "details", details, "source", ci.Source, "principal", ci.Principal, "port", port)
		}
		policy := "none"
		if ci.Principal != "" {
			policy = "mutual_tls"
		}
		h.Access.Log(&stats.AccessEntry{StartTime: time.Now(), Protocol: "tcp", Direction: "inbound", ResponseFlags: "-",
			UpstreamCluster: clusterName, DownstreamPeerURISAN: ci.Principal, DownstreamRemoteAddress: ci.Source.String(),
			ConnectionTerminationDetails: details, ConnectionSecurityPolicy: policy})
		if ols := h.otelLogs(rt); len(ols) > 0 {
			h.logOTelTCP(ols, conn, time.Now(), tcpLog{cluster: clusterName, flags: "-", details: details},
				stats.Labels{SourcePrincipal: ci.Principal, ConnectionSecurityPolicy: policy})
		}
		return false
	}
	if h.Stats != nil {
		h.Stats.Counter(ConnAllowedCounter).Add(1)
	}
	return true
}

// httpOnlyPort refuses opaque TCP on a port whose chain is HTTP with
// extension filters.
type httpOnlyPort struct{}

// OpaqueOnHTTPDetails is the termination detail of such a refusal.
const OpaqueOnHTTPDetails = "opaque_tcp_on_http_filter_chain"

func (httpOnlyPort) CheckConn(*ConnInfo) (bool, string) { return false, OpaqueOnHTTPDetails }
