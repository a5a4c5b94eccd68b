package stats

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// AccessEntry is one access log line (Envoy-style field names).
type AccessEntry struct {
	StartTime       time.Time `json:"start_time"`
	Method          string    `json:"method"`
	Path            string    `json:"path"`
	Protocol        string    `json:"protocol"`
	ResponseCode    int       `json:"response_code"`
	ResponseFlags   string    `json:"response_flags"`
	BytesReceived   int64     `json:"bytes_received"`
	BytesSent       int64     `json:"bytes_sent"`
	DurationMs      int64     `json:"duration"`
	UpstreamHost    string    `json:"upstream_host"`
	UpstreamCluster string    `json:"upstream_cluster"`
	XRequestID      string    `json:"x_request_id"`
	RouteName       string    `json:"route_name"`
	Authority       string    `json:"authority"`
	Direction       string    `json:"direction"`
	// DownstreamPeerURISAN is the client certificate's SPIFFE ID on
	// inbound mutual TLS (Envoy's %DOWNSTREAM_PEER_URI_SAN%).
	DownstreamPeerURISAN string `json:"downstream_peer_uri_san,omitempty"`
	// UpstreamPeerURISAN is the upstream's SPIFFE ID on outbound mutual
	// TLS (Envoy's %UPSTREAM_PEER_URI_SAN%): the destination principal.
	UpstreamPeerURISAN string `json:"upstream_peer_uri_san,omitempty"`
	// TraceID and SpanID are the request's trace context (the proxy's
	// span when sampled, else the incoming one), hex.
	TraceID string `json:"trace_id,omitempty"`
	SpanID  string `json:"span_id,omitempty"`
	// ResponseCodeDetails says why the proxy answered itself (Envoy's
	// %RESPONSE_CODE_DETAILS%), e.g. "no healthy upstream", "upstream max
	// requests overflow" (circuit breaker), "RBAC: access denied" with the
	// deciding policy.
	ResponseCodeDetails string `json:"response_code_details,omitempty"`
	// ConnectionTerminationDetails says why the proxy closed a connection
	// (Envoy's %CONNECTION_TERMINATION_DETAILS%), e.g. a network RBAC deny
	// "rbac_access_denied_matched_policy[...]".
	ConnectionTerminationDetails string `json:"connection_termination_details,omitempty"`
	// DownstreamRemoteAddress is the client address of a TCP connection
	// entry (Envoy's %DOWNSTREAM_REMOTE_ADDRESS%).
	DownstreamRemoteAddress string `json:"downstream_remote_address,omitempty"`
	// ConnectionSecurityPolicy is mutual_tls or none for inbound TCP
	// connection entries (the metric label of the same name).
	ConnectionSecurityPolicy string `json:"connection_security_policy,omitempty"`
	// SourceWorkload and DestinationWorkload are the telemetry peers.
	SourceWorkload      string `json:"source_workload,omitempty"`
	DestinationWorkload string `json:"destination_workload,omitempty"`
}

// AccessLog writes JSON lines to w; a nil *AccessLog discards.
type AccessLog struct {
	mu sync.Mutex
	w  io.Writer
}

// NewAccessLog returns a log writing to w.
func NewAccessLog(w io.Writer) *AccessLog { return &AccessLog{w: w} }

// Log writes one entry.
func (a *AccessLog) Log(e *AccessEntry) {
	if a == nil || a.w == nil {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	a.mu.Lock()
	_, _ = a.w.Write(b)
	a.mu.Unlock()
}
