// Package executable lists what the weft proxy executes of the Envoy xDS it
// is sent: network, HTTP and listener filters by name, per-route filter
// configs, and for the resource types an EnvoyFilter can patch, the fields
// it reads. The proxy (pkg/proxy/listener) uses it to report unexecuted
// filters; the control plane (package envoyfilter, weft analyze) uses it to
// report EnvoyFilter patches the proxy would not execute. It has no
// dependencies, so both sides may import it.
package executable

import "slices"

// NetworkFilters are the network filters the proxy implements itself.
var NetworkFilters = []string{
	"envoy.filters.network.http_connection_manager",
	"envoy.filters.network.tcp_proxy",
	"istio.stats", // Telemetry metrics overrides for TCP metrics (stats.PluginConfig)
	// Istio's TCP metadata exchange (package peerexchange; run by the
	// inbound mTLS listener when the ALPN negotiates it).
	"istio.metadata_exchange",
}

// ExtensionNetworkFilters are the network filters `weft proxy` registers
// factories for (listener.NetworkFilterFactory; executed on inbound TCP
// chains).
var ExtensionNetworkFilters = []string{
	"envoy.filters.network.rbac",
	"envoy.filters.network.ext_authz",
}

// BuiltinHTTPFilters are HTTP filters the proxy implements itself. Their
// filter-level typed_config is not read, except istio.stats's (Telemetry
// metrics overrides); fault and cors are configured per route.
var BuiltinHTTPFilters = []string{
	"envoy.filters.http.router",
	"envoy.filters.http.fault",
	"envoy.filters.http.cors",
	"istio.stats",
	"envoy.filters.http.grpc_stats",
}

// ExtensionHTTPFilters are the HTTP filters `weft proxy` registers
// factories for (listener.FilterFactory); their typed_config is executed.
var ExtensionHTTPFilters = []string{
	"envoy.filters.http.rbac",
	"envoy.filters.http.jwt_authn",
	"envoy.filters.http.ext_authz",
	"envoy.filters.http.wasm",
}

// ListenerFilters whose effect the proxy has built in (it detects TLS and
// the original destination itself); their configs are not read.
var ListenerFilters = []string{
	"envoy.filters.listener.tls_inspector",
	"envoy.filters.listener.original_dst",
}

// PerFilterConfigs are the typed_per_filter_config keys of virtual hosts
// and routes the proxy executes.
var PerFilterConfigs = []string{
	"envoy.filters.http.fault",
	"envoy.filters.http.cors",
}

// NetworkFilter reports whether a network filter is built into the proxy.
func NetworkFilter(name string) bool { return slices.Contains(NetworkFilters, name) }

// NetworkFilterExecuted reports whether the proxy executes a network
// filter: built in, or by a registered factory.
func NetworkFilterExecuted(name string) bool {
	return NetworkFilter(name) || slices.Contains(ExtensionNetworkFilters, name)
}

// HTTPFilter reports whether the proxy executes an HTTP filter.
func HTTPFilter(name string) bool {
	return slices.Contains(BuiltinHTTPFilters, name) || slices.Contains(ExtensionHTTPFilters, name)
}

// HTTPFilterConfig reports whether the proxy reads an HTTP filter's
// filter-level typed_config.
func HTTPFilterConfig(name string) bool {
	return name == "istio.stats" || slices.Contains(ExtensionHTTPFilters, name)
}

// ListenerFilter reports whether a listener filter's effect is built in.
func ListenerFilter(name string) bool { return slices.Contains(ListenerFilters, name) }

// PerFilterConfig reports whether a typed_per_filter_config key is executed.
func PerFilterConfig(name string) bool { return slices.Contains(PerFilterConfigs, name) }

// Fields maps protobuf message names to the fields of that message the
// proxy reads. Messages not listed are read whole wherever a listed field
// leads to them (header matchers, header values, ...). Kept next to the
// code that reads them: pkg/proxy/cluster (clusters), pkg/proxy/router
// (routes), pkg/proxy/listener (listeners, HCM, tcp_proxy).
var Fields = map[string][]string{
	"envoy.config.cluster.v3.Cluster": {"name", "type", "eds_cluster_config", "connect_timeout", "lb_policy",
		"load_assignment", "circuit_breakers", "outlier_detection", "ring_hash_lb_config", "maglev_lb_config",
		"common_lb_config", "typed_extension_protocol_options", "transport_socket", "metadata",
		"round_robin_lb_config", "least_request_lb_config", "filters"},
	"envoy.config.cluster.v3.Cluster.RoundRobinLbConfig":                                  {"slow_start_config"},
	"envoy.config.cluster.v3.Cluster.LeastRequestLbConfig":                                {"slow_start_config"},
	"envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport": {"config", "transport_socket"},
	"envoy.config.core.v3.ProxyProtocolConfig":                                            {"version"},
	"envoy.config.cluster.v3.CircuitBreakers":                                             {"thresholds"},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds": {"priority", "max_connections", "max_pending_requests", "max_requests", "max_retries",
		"retry_budget"},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": {"budget_percent", "min_retry_concurrency"},
	"envoy.config.cluster.v3.OutlierDetection": {"consecutive_5xx", "enforcing_consecutive_5xx", "consecutive_gateway_failure",
		"enforcing_consecutive_gateway_failure", "interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent"},
	"envoy.config.cluster.v3.Cluster.CommonLbConfig":   {"locality_weighted_lb_config"},
	"envoy.config.cluster.v3.Cluster.RingHashLbConfig": {"minimum_ring_size"},
	"envoy.config.cluster.v3.Cluster.MaglevLbConfig":   {"table_size"},

	"envoy.config.listener.v3.Listener": {"name", "address", "bind_to_port", "filter_chains", "default_filter_chain", "listener_filters",
		"use_original_dst", "traffic_direction"},
	"envoy.config.listener.v3.FilterChain":      {"name", "filter_chain_match", "filters", "transport_socket"},
	"envoy.config.listener.v3.FilterChainMatch": {"destination_port", "server_names", "transport_protocol"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": {"stat_prefix", "rds",
		"route_config", "http_filters", "tracing", "access_log"},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy":                 {"stat_prefix", "cluster", "weighted_clusters", "tunneling_config", "access_log"},
	"envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TunnelingConfig": {"hostname", "use_post", "post_path", "headers_to_add"},

	"envoy.config.route.v3.RouteConfiguration": {"name", "virtual_hosts", "validate_clusters"},
	"envoy.config.route.v3.VirtualHost": {"name", "domains", "routes", "request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config"},
	"envoy.config.route.v3.Route": {"name", "match", "route", "redirect", "direct_response", "request_headers_to_add",
		"request_headers_to_remove", "response_headers_to_add", "response_headers_to_remove", "typed_per_filter_config", "decorator",
		"stat_prefix"},
	"envoy.config.route.v3.RouteMatch": {"prefix", "path", "safe_regex", "path_separated_prefix", "case_sensitive", "headers",
		"query_parameters"},
	"envoy.config.route.v3.RouteAction": {"cluster", "weighted_clusters", "prefix_rewrite", "regex_rewrite",
		"host_rewrite_literal", "timeout", "retry_policy", "request_mirror_policies", "hash_policy"},
	"envoy.config.route.v3.RetryPolicy": {"retry_on", "num_retries", "per_try_timeout", "retriable_status_codes",
		"retry_priority"},
	"envoy.config.route.v3.RedirectAction": {"host_redirect", "port_redirect", "strip_query", "path_redirect", "prefix_rewrite",
		"https_redirect", "scheme_redirect", "response_code"},
	"envoy.config.route.v3.DirectResponseAction": {"status", "body"},
}

// Field reports whether the proxy reads field of message msg (true for
// messages Fields does not list).
func Field(msg, field string) bool {
	fs, ok := Fields[msg]
	return !ok || slices.Contains(fs, field)
}
