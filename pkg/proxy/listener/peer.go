package listener

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
)

// Peer metadata exchange headers, as Istio's metadata exchange sends them:
// the client proxy puts its workload metadata (base64 of a serialized
// google.protobuf.Struct with Istio's node metadata keys NAMESPACE,
// WORKLOAD_NAME, CLUSTER_ID and LABELS) on the request, the server
// proxy answers with its own on the response; each side takes the other's
// labels (source_* / destination_*) from it and removes the headers
// before the application sees them.
const (
	PeerMetadataHeader   = "X-Envoy-Peer-Metadata"
	PeerMetadataIDHeader = "X-Envoy-Peer-Metadata-Id"
)

// Label keys Istio derives the canonical service and revision from.
const (
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
	labelAppName           = "app.kubernetes.io/name"
	labelAppVersion        = "app.kubernetes.io/version"
)

// DefaultCluster is the cluster id Istio reports when none is configured.
const DefaultCluster = "Kubernetes"

// PeerInfo is one workload's metric label values, "unknown" (canonical
// revision: "latest") where the metadata has none. Values are computed
// once per proxy or per distinct peer metadata header value and shared by
// every request's labels.
type PeerInfo struct {
	Workload, Namespace, App, Version, CanonicalService, CanonicalRevision, Cluster string
}

var unknownPeer = &PeerInfo{Workload: "unknown", Namespace: "unknown", App: "unknown", Version: "unknown",
	CanonicalService: "unknown", CanonicalRevision: "latest", Cluster: "unknown"}

// peerInfoFrom applies Istio's label rules: app from app.kubernetes.io/name
// else app, version from app.kubernetes.io/version else version, canonical
// service from service.istio.io/canonical-name else the app name labels
// else the workload name, canonical revision from
// service.istio.io/canonical-revision else the version labels else
// "latest".
func peerInfoFrom(workload, namespace, clusterID string, labels map[string]string) PeerInfo {
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := labels[k]; v != "" {
				return v
			}
		}
		return ""
	}
	p := PeerInfo{Workload: workload, Namespace: namespace, Cluster: clusterID,
		App: first(labelAppName, "app"), Version: first(labelAppVersion, "version"),
		CanonicalService:  first(LabelCanonicalName, labelAppName, "app"),
		CanonicalRevision: first(LabelCanonicalRevision, labelAppVersion, "version")}
	if p.CanonicalService == "" {
		p.CanonicalService = workload
	}
	if p.CanonicalRevision == "" {
		p.CanonicalRevision = "latest"
	}
	p.Workload, p.Namespace, p.App, p.Version = orUnknown(p.Workload), orUnknown(p.Namespace), orUnknown(p.App), orUnknown(p.Version)
	p.CanonicalService, p.Cluster = orUnknown(p.CanonicalService), orUnknown(p.Cluster)
	return p
}

// self is what a handler computes once from its Identity: its own label
// values and the metadata header values it sends.
type self struct {
	info PeerInfo
	// md holds the PeerMetadataHeader and PeerMetadataIDHeader values;
	// requests and responses share one-element slices of it.
	md [2]string
	// principal is the proxy's SPIFFE ID ("unknown" without one).
	principal string
	// frame is the TCP metadata exchange frame (PeerExchangeFrame).
	frame []byte
}

// stamp sets this workload's metadata exchange headers on hdr, sharing
// one-element slices of md (no allocation).
func (s *self) stamp(hdr http.Header) {
	hdr[PeerMetadataHeader] = s.md[0:1:1]
	hdr[PeerMetadataIDHeader] = s.md[1:2:2]
}

// takePeerMetadata removes the peer's metadata exchange headers from hdr
// (they are for telemetry, not for the application) and returns the
// metadata value, "" when there is none.
func takePeerMetadata(hdr http.Header) string {
	v := hdr[PeerMetadataHeader]
	if len(v) == 0 {
		return ""
	}
	delete(hdr, PeerMetadataHeader)
	delete(hdr, PeerMetadataIDHeader)
	return v[0]
}

func newSelf(id Identity) *self {
	labels := id.Labels
	if labels == nil && id.App != "" {
		labels = map[string]string{"app": id.App}
	}
	cl := id.Cluster
	if cl == "" {
		cl = DefaultCluster
	}
	s := &self{info: peerInfoFrom(id.Workload, id.Namespace, cl, labels), principal: orUnknown(id.Principal)}
	s.md[0] = encodePeerMetadata(id, cl, labels, s.info)
	s.md[1] = "sidecar~" + id.Workload + "." + id.Namespace
	// A few hundred bytes: labels are bounded far below MaxPayload; nil
	// (no exchange) if they are not.
	s.frame, _ = peerexchange.Encode(peerMetadataStruct(id, cl, labels, s.info), s.md[1])
	return s
}

// encodePeerMetadata serializes the workload's metadata as Istio's
// x-envoy-peer-metadata value (base64 of peerMetadataStruct).
func encodePeerMetadata(id Identity, clusterID string, labels map[string]string, info PeerInfo) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(peerMetadataStruct(id, clusterID, labels, info))
	if err != nil { // strings only: cannot fail
		return ""
	}
	return base64.StdEncoding.EncodeToString(b)
}

// PeerExchangeFrame is the TCP metadata exchange frame of workload id
// (package peerexchange): the metadata the HTTP exchange sends in
// x-envoy-peer-metadata and the node id of x-envoy-peer-metadata-id.
func PeerExchangeFrame(id Identity) []byte {
	return newSelf(id).frame
}

// peerMetadataStruct is the workload's metadata as Istio's exchange sends
// it. Canonical name and revision are put in the labels as Istio's
// injector does, so that any receiver reads the same values.
func peerMetadataStruct(id Identity, clusterID string, labels map[string]string, info PeerInfo) *structpb.Struct {
	lv := map[string]*structpb.Value{}
	for k, v := range labels {
		lv[k] = structpb.NewStringValue(v)
	}
	lv[LabelCanonicalName] = structpb.NewStringValue(info.CanonicalService)
	lv[LabelCanonicalRevision] = structpb.NewStringValue(info.CanonicalRevision)
	// Only the keys the receiver's labels come from: the value travels
	// on every request and response (Istio also sends NAME, MESH_ID,
	// SERVICE_ACCOUNT, INSTANCE_IPS, ...; the stats labels do not use them).
	f := map[string]*structpb.Value{
		"NAMESPACE":     structpb.NewStringValue(id.Namespace),
		"WORKLOAD_NAME": structpb.NewStringValue(id.Workload),
		"CLUSTER_ID":    structpb.NewStringValue(clusterID),
		"LABELS":        structpb.NewStructValue(&structpb.Struct{Fields: lv}),
	}
	return &structpb.Struct{Fields: f}
}

var errNoMetadata = errors.New("no peer metadata")

// decodePeerMetadata parses an x-envoy-peer-metadata value.
func decodePeerMetadata(v string) (*PeerInfo, error) {
	if v == "" {
		return nil, errNoMetadata
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil { // Envoy decodes without requiring padding
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "=")); err != nil {
			return nil, fmt.Errorf("%s: %w", PeerMetadataHeader, err)
		}
	}
	st := &structpb.Struct{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("%s: %w", PeerMetadataHeader, err)
	}
	return peerInfoOf(st), nil
}

// peerInfoOf takes the label values from a peer's metadata Struct.
func peerInfoOf(st *structpb.Struct) *PeerInfo {
	f := st.GetFields()
	labels := map[string]string{}
	for k, v := range f["LABELS"].GetStructValue().GetFields() {
		labels[k] = v.GetStringValue()
	}
	wl := f["WORKLOAD_NAME"].GetStringValue()
	if wl == "" {
		wl = f["NAME"].GetStringValue()
	}
	p := peerInfoFrom(wl, f["NAMESPACE"].GetStringValue(), f["CLUSTER_ID"].GetStringValue(), labels)
	return &p
}

// maxPeerCache bounds the distinct peer metadata values a handler keeps
// decoded (one per calling workload in practice).
const maxPeerCache = 512

// peerCache maps metadata header values to decoded label values. Reads
// are lock-free (an immutable map swapped on insert): the common case
// costs one map lookup and no allocation.
type peerCache struct {
	m  atomic.Pointer[map[string]*PeerInfo]
	mu sync.Mutex
}

// get returns the label values for a metadata header value: unknownPeer
// for "" or a value that does not decode.
func (c *peerCache) get(v string) *PeerInfo {
	if v == "" {
		return unknownPeer
	}
	if m := c.m.Load(); m != nil {
		if p := (*m)[v]; p != nil {
			return p
		}
	}
	p, err := decodePeerMetadata(v)
	if err != nil {
		p = unknownPeer
	}
	return c.put(v, p)
}

// ofExchange returns the label values of a TCP metadata exchange peer:
// nil without one (or without metadata in its frame).
func (c *peerCache) ofExchange(x *peerexchange.Peer) *PeerInfo {
	if x == nil || x.Metadata == nil {
		return nil
	}
	key := "mx:" + x.Payload // apart from header values (base64 has no ':')
	if m := c.m.Load(); m != nil {
		if p := (*m)[key]; p != nil {
			return p
		}
	}
	return c.put(key, peerInfoOf(x.Metadata))
}

// put caches p under key (while the cache is not full) and returns it.
func (c *peerCache) put(v string, p *PeerInfo) *PeerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	n := 0
	if old != nil {
		n = len(*old)
	}
	if n >= maxPeerCache {
		return p // too many distinct values: decode them every time
	}
	m := make(map[string]*PeerInfo, n+1)
	if old != nil {
		for k, x := range *old {
			m[k] = x
		}
	}
	m[v] = p
	c.m.Store(&m)
	return p
}

// maxPrincipalCache bounds the certificates whose SPIFFE IDs are kept.
const maxPrincipalCache = 1024

// principalCache keeps the SPIFFE ID string of each peer certificate
// (keyed by the parsed certificate, which a connection keeps), so a
// request's principal labels cost a lookup instead of formatting the URI.
type principalCache struct {
	m sync.Map // *x509.Certificate → string
	n atomic.Int32
}

// of returns cert's first URI SAN, or "".
func (c *principalCache) of(cert *x509.Certificate) string {
	if cert == nil || len(cert.URIs) == 0 {
		return ""
	}
	if v, ok := c.m.Load(cert); ok {
		return v.(string)
	}
	s := cert.URIs[0].String()
	if c.n.Add(1) > maxPrincipalCache { // rotated certificates: start over
		c.m.Clear()
		c.n.Store(1)
	}
	c.m.Store(cert, s)
	return s
}

// upstreamCert is the peer leaf certificate of an upstream mutual TLS
// connection, or nil for plaintext.
func upstreamCert(c net.Conn) *x509.Certificate {
	if cc, ok := c.(*cluster.CountedConn); ok {
		c = cc.Conn
	}
	if xc, ok := c.(*peerexchange.Conn); ok {
		c = xc.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	return leaf(tc.ConnectionState().PeerCertificates)
}

// upstreamPeer is what the server's TCP metadata exchange frame said on
// an upstream connection (cluster.DialContext), nil without one.
func upstreamPeer(c net.Conn) *peerexchange.Peer {
	if xc, ok := c.(*peerexchange.Conn); ok {
		return xc.Peer
	}
	return nil
}

// downstreamPeer is what the client's TCP metadata exchange frame said on
// an accepted mutual TLS connection (MTLSListener), nil without one.
func downstreamPeer(c net.Conn) *peerexchange.Peer {
	if c == nil {
		return nil
	}
	if pa, ok := c.RemoteAddr().(*PeerAddr); ok {
		return pa.Peer
	}
	return nil
}

func leaf(cs []*x509.Certificate) *x509.Certificate {
	if len(cs) == 0 {
		return nil
	}
	return cs[0]
}

// tlsLeaf is the peer leaf certificate of a downstream connection state.
func tlsLeaf(st *tls.ConnectionState) *x509.Certificate {
	if st == nil {
		return nil
	}
	return leaf(st.PeerCertificates)
}

// spiffeNamespace returns NS of spiffe://TD/ns/NS/sa/SA, or "".
func spiffeNamespace(id string) string {
	i := strings.Index(id, "/ns/")
	if i < 0 {
		return ""
	}
	ns := id[i+4:]
	if j := strings.IndexByte(ns, '/'); j >= 0 {
		ns = ns[:j]
	}
	return ns
}
