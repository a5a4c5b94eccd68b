package expr

import (
	"sort"
	"strings"
)

// known is the attribute vocabulary: Envoy's attribute names
// (request.*, response.*, source/destination address and port,
// connection.*, upstream.*, xds.*), Istio's peer metadata
// (upstream_peer.*, downstream_peer.*) and the standard metric labels'
// peers as source.* / destination.* fields. A proxy answers the ones that
// apply to a request or connection; the rest are absent.
var known = map[string]Kind{
	"request.path":      String,
	"request.url_path":  String,
	"request.host":      String,
	"request.scheme":    String,
	"request.method":    String,
	"request.headers":   Map,
	"request.referer":   String,
	"request.useragent": String,
	"request.id":        String,
	"request.protocol":  String,
	"request.query":     String,
	"request.size":      Int,

	"response.code":         Int,
	"response.code_details": String,
	"response.grpc_status":  Int,
	"response.headers":      Map,
	"response.size":         Int,

	"source.address":            String,
	"source.port":               Int,
	"source.workload":           String,
	"source.namespace":          String,
	"source.principal":          String,
	"source.app":                String,
	"source.version":            String,
	"source.cluster":            String,
	"source.canonical_service":  String,
	"source.canonical_revision": String,

	"destination.address":            String,
	"destination.port":               Int,
	"destination.workload":           String,
	"destination.namespace":          String,
	"destination.principal":          String,
	"destination.app":                String,
	"destination.version":            String,
	"destination.cluster":            String,
	"destination.canonical_service":  String,
	"destination.canonical_revision": String,
	"destination.service":            String,
	"destination.service_name":       String,
	"destination.service_namespace":  String,

	"connection.mtls":                      Bool,
	"connection.requested_server_name":     String,
	"connection.uri_san_peer_certificate":  String,
	"connection.uri_san_local_certificate": String,
	"connection.tls_version":               String,
	"upstream.address":                     String,
	"upstream.port":                        Int,
	"upstream.uri_san_peer_certificate":    String,
	"xds.cluster_name":                     String,
	"xds.route_name":                       String,
	"upstream_peer.app":                    String,
	"upstream_peer.version":                String,
	"upstream_peer.workload":               String,
	"upstream_peer.namespace":              String,
	"upstream_peer.cluster":                String,
	"upstream_peer.canonical_service":      String,
	"upstream_peer.canonical_revision":     String,
	"upstream_peer.name":                   String,
	"upstream_peer.workload_name":          String,
	"upstream_peer.cluster_id":             String,
	"upstream_peer.labels":                 Map,
	"downstream_peer.name":                 String,
	"downstream_peer.workload_name":        String,
	"downstream_peer.cluster_id":           String,
	"downstream_peer.labels":               Map,
	"downstream_peer.app":                  String,
	"downstream_peer.version":              String,
	"downstream_peer.workload":             String,
	"downstream_peer.namespace":            String,
	"downstream_peer.cluster":              String,
	"downstream_peer.canonical_service":    String,
	"downstream_peer.canonical_revision":   String,
}

// Names returns every attribute name the language knows, sorted.
func Names() []string {
	out := make([]string, 0, len(known))
	for n := range known {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// KindOf returns the static kind of attribute name (false: unknown).
func KindOf(name string) (Kind, bool) {
	k, ok := known[name]
	return k, ok
}

// isPrefix reports whether path is a proper prefix (ending at a dot) of a
// known attribute, e.g. "request" or "upstream_peer".
func isPrefix(path string) bool {
	for n := range known {
		if strings.HasPrefix(n, path+".") {
			return true
		}
	}
	return false
}
