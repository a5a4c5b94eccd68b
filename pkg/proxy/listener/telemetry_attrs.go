package listener

import (
	"crypto/tls"
	"net"
	"net/http"
	"strconv"

	"github.com/weftmesh/weft/pkg/proxy/stats"
	"github.com/weftmesh/weft/pkg/telemetry/expr"
)

// headerMap is an http.Header as an expression map (names
// case-insensitive, the first value).
type headerMap http.Header

func (h headerMap) Lookup(k string) (string, bool) {
	v := http.Header(h).Values(k)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// connAttrs are the attributes of the downstream and upstream
// connections and of the standard metric labels, shared by requests and
// TCP connections.
type connAttrs struct {
	h              *Handler
	l              stats.Labels // before Telemetry overrides
	remote, local  string       // downstream addresses host:port
	tls            *tls.ConnectionState
	downPrincipal  string // the downstream mTLS peer's SPIFFE ID
	upstream       string // upstream host:port
	upstreamPeer   string // the upstream mTLS peer's SPIFFE ID
	cluster, route string
}

func str(s string) (expr.Value, bool) { return expr.StringValue(s), true }

// present is s as a value, absent when empty.
func present(s string) (expr.Value, bool) { return expr.StringValue(s), s != "" }

func addrPart(addr string, port bool) (expr.Value, bool) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		if port || addr == "" {
			return expr.Value{}, false
		}
		return str(addr)
	}
	if !port {
		return str(h)
	}
	n, err := strconv.Atoi(p)
	return expr.IntValue(int64(n)), err == nil
}

// tlsVersions are Envoy's names (%DOWNSTREAM_TLS_VERSION%).
var tlsVersions = map[uint16]string{tls.VersionTLS10: "TLSv1", tls.VersionTLS11: "TLSv1.1", tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}

func (a *connAttrs) Attribute(name string) (expr.Value, bool) {
	l := &a.l
	outbound := a.h.Direction == Outbound
	switch name {
	case "source.address":
		return addrPart(a.remote, false)
	case "source.port":
		return addrPart(a.remote, true)
	case "destination.address":
		return addrPart(a.local, false)
	case "destination.port":
		return addrPart(a.local, true)
	case "source.workload":
		return str(l.SourceWorkload)
	case "source.namespace":
		return str(l.SourceWorkloadNamespace)
	case "source.principal":
		return str(l.SourcePrincipal)
	case "source.app":
		return str(l.SourceApp)
	case "source.version":
		return str(l.SourceVersion)
	case "source.cluster":
		return str(l.SourceCluster)
	case "source.canonical_service":
		return str(l.SourceCanonicalService)
	case "source.canonical_revision":
		return str(l.SourceCanonicalRevision)
	case "destination.workload":
		return str(l.DestinationWorkload)
	case "destination.namespace":
		return str(l.DestinationWorkloadNamespace)
	case "destination.principal":
		return str(l.DestinationPrincipal)
	case "destination.app":
		return str(l.DestinationApp)
	case "destination.version":
		return str(l.DestinationVersion)
	case "destination.cluster":
		return str(l.DestinationCluster)
	case "destination.canonical_service":
		return str(l.DestinationCanonicalService)
	case "destination.canonical_revision":
		return str(l.DestinationCanonicalRevision)
	case "destination.service":
		return str(l.DestinationService)
	case "destination.service_name":
		return str(l.DestinationServiceName)
	case "destination.service_namespace":
		return str(l.DestinationServiceNamespace)
	case "connection.mtls":
		return expr.BoolValue(a.tls != nil && len(a.tls.PeerCertificates) > 0), true
	case "connection.requested_server_name":
		if a.tls == nil {
			return expr.Value{}, false
		}
		return str(a.tls.ServerName)
	case "connection.uri_san_peer_certificate":
		return present(a.downPrincipal)
	case "connection.uri_san_local_certificate":
		if a.downPrincipal == "" {
			return expr.Value{}, false
		}
		return present(a.h.self().principal)
	case "connection.tls_version":
		if a.tls == nil {
			return expr.Value{}, false
		}
		return present(tlsVersions[a.tls.Version])
	case "upstream.address":
		return addrPart(a.upstream, false)
	case "upstream.port":
		return addrPart(a.upstream, true)
	case "upstream.uri_san_peer_certificate":
		return present(a.upstreamPeer)
	case "xds.cluster_name":
		return present(a.cluster)
	case "xds.route_name":
		return present(a.route)
	}
	// Istio's peer metadata: upstream_peer on the client side (the
	// destination), downstream_peer on the server side (the source).
	var peer *PeerInfo
	switch {
	case outbound && len(name) > len("upstream_peer.") && name[:len("upstream_peer.")] == "upstream_peer.":
		peer = &PeerInfo{Workload: l.DestinationWorkload, Namespace: l.DestinationWorkloadNamespace, App: l.DestinationApp, Version: l.DestinationVersion,
			CanonicalService: l.DestinationCanonicalService, CanonicalRevision: l.DestinationCanonicalRevision, Cluster: l.DestinationCluster}
		name = name[len("upstream_peer."):]
	case !outbound && len(name) > len("downstream_peer.") && name[:len("downstream_peer.")] == "downstream_peer.":
		peer = &PeerInfo{Workload: l.SourceWorkload, Namespace: l.SourceWorkloadNamespace, App: l.SourceApp, Version: l.SourceVersion,
			CanonicalService: l.SourceCanonicalService, CanonicalRevision: l.SourceCanonicalRevision, Cluster: l.SourceCluster}
		name = name[len("downstream_peer."):]
	default:
		return expr.Value{}, false
	}
	if peer.Workload == "unknown" || peer.Workload == "" { // no metadata exchange
		return expr.Value{}, false
	}
	switch name {
	case "name", "workload_name":
		return present(peer.Workload)
	case "cluster_id":
		return present(peer.Cluster)
	case "labels":
		return expr.MapValue(peerLabels{peer}), true
	case "app":
		return present(peer.App)
	case "version":
		return present(peer.Version)
	case "workload":
		return present(peer.Workload)
	case "namespace":
		return present(peer.Namespace)
	case "cluster":
		return present(peer.Cluster)
	case "canonical_service":
		return present(peer.CanonicalService)
	case "canonical_revision":
		return present(peer.CanonicalRevision)
	}
	return expr.Value{}, false
}

// httpAttrs are a request's attributes for Telemetry expressions.
type httpAttrs struct {
	connAttrs
	r  *http.Request
	ri *reqInfo
	w  *countingWriter
}

func (a *httpAttrs) Attribute(name string) (expr.Value, bool) {
	r := a.r
	switch name {
	case "request.path":
		return str(r.URL.RequestURI())
	case "request.url_path":
		return str(r.URL.Path)
	case "request.host":
		return str(r.Host)
	case "request.scheme":
		if r.TLS != nil && a.h.Direction != Inbound {
			return str("https")
		}
		return str("http")
	case "request.method":
		return str(r.Method)
	case "request.headers":
		return expr.MapValue(headerMap(r.Header)), true
	case "request.referer":
		return present(r.Header.Get("Referer"))
	case "request.useragent":
		return present(r.Header.Get("User-Agent"))
	case "request.id":
		return present(r.Header.Get("X-Request-Id"))
	case "request.protocol":
		return str(r.Proto)
	case "request.query":
		return str(r.URL.RawQuery)
	case "request.size":
		return expr.IntValue(a.ri.received()), true
	case "response.code":
		return expr.IntValue(int64(a.ri.status)), a.ri.status != 0
	case "response.code_details":
		if a.ri.details != "" {
			return str(a.ri.details)
		}
		return str("via_upstream")
	case "response.grpc_status":
		if !isGRPC(r) {
			return expr.Value{}, false
		}
		n, err := strconv.Atoi(grpcStatus(a.w.Header(), a.ri.status))
		return expr.IntValue(int64(n)), err == nil
	case "response.headers":
		return expr.MapValue(headerMap(a.w.Header())), true
	case "response.size":
		return expr.IntValue(a.w.n), true
	}
	return a.connAttrs.Attribute(name)
}

var (
	_ expr.Attributes = (*connAttrs)(nil)
	_ expr.Attributes = (*httpAttrs)(nil)
	_ expr.StringMap  = headerMap(nil)
)

// requestAttrs are the request's attributes; l are its metric labels
// before overrides, downPrincipal the downstream mTLS peer.
func (h *Handler) requestAttrs(r *http.Request, ri *reqInfo, w *countingWriter, l stats.Labels, downPrincipal string) *httpAttrs {
	a := &httpAttrs{r: r, ri: ri, w: w, connAttrs: connAttrs{h: h, l: l, remote: r.RemoteAddr, tls: r.TLS,
		downPrincipal: downPrincipal, upstream: ri.upstreamHost, upstreamPeer: ri.upstreamPeer, cluster: ri.cluster, route: ri.routeName}}
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && local != nil {
		a.local = local.String()
	}
	return a
}

// tcpOpen counts an opened connection with labels l (one label set per
// Telemetry override group, none when every TCP metric is disabled) and
// returns the handle its bytes are counted on, reported every
// reporting interval and at Close; nil without stats. attrs describes
// the connection for tag expressions (called only when an override
// needs them).
func (h *Handler) tcpOpen(l stats.Labels, attrs func() connAttrs) *stats.TCPConn {
	if h.Stats == nil {
		return nil
	}
	mp := h.metricsPolicy(h.Runtime())
	if !mp.overrides() {
		return h.Stats.OpenTCP(mp.tcpInterval(), l)
	}
	var a expr.Attributes
	if needsAttrs(mp.TCP) {
		ca := new(connAttrs)
		*ca = attrs()
		a = ca
	}
	groups := make([]stats.Labels, 0, len(mp.TCP))
	for i := range mp.TCP {
		groups = append(groups, mp.TCP[i].apply(l, stats.DropAllTCP, a))
	}
	return h.Stats.OpenTCP(mp.tcpInterval(), groups...)
}

// connectAttrs describe a CONNECT tunnel with labels l.
func (h *Handler) connectAttrs(r *http.Request, ri *reqInfo, l stats.Labels) connAttrs {
	c := connAttrs{h: h, l: l, remote: r.RemoteAddr, tls: r.TLS, upstream: ri.upstreamHost, cluster: ri.cluster}
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && local != nil {
		c.local = local.String()
	}
	return c
}

// tcpConnAttrs describe an opaque TCP connection.
func (h *Handler) tcpConnAttrs(conn net.Conn, e tcpLog, l stats.Labels) connAttrs {
	c := connAttrs{h: h, l: l, tls: PeerTLS(conn), upstream: e.upstream, cluster: e.cluster}
	if ra := conn.RemoteAddr(); ra != nil {
		c.remote = ra.String()
	}
	if la := conn.LocalAddr(); la != nil {
		c.local = la.String()
	}
	if h.Direction == Inbound {
		c.downPrincipal = h.principals.of(tlsLeaf(c.tls))
	} else if l.DestinationPrincipal != "unknown" {
		c.upstreamPeer = l.DestinationPrincipal
	}
	return c
}

// peerLabels are the workload labels a peer's metadata carries (app,
// version, and the canonical service and revision labels).
type peerLabels struct{ p *PeerInfo }

func (l peerLabels) Lookup(k string) (string, bool) {
	var v string
	switch k {
	case "app":
		v = l.p.App
	case "version":
		v = l.p.Version
	case LabelCanonicalName:
		v = l.p.CanonicalService
	case LabelCanonicalRevision:
		v = l.p.CanonicalRevision
	}
	return v, v != "" && v != "unknown"
}
