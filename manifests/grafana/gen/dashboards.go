package main

import "fmt"

const (
	reqs     = "istio_requests_total"
	duration = "istio_request_duration_milliseconds"
	reqSize  = "istio_request_bytes"
	respSize = "istio_response_bytes"
	tcpSent  = "istio_tcp_sent_bytes_total"
	tcpRecv  = "istio_tcp_received_bytes_total"
	tcpOpen  = "istio_tcp_connections_opened_total"
	tcpClose = "istio_tcp_connections_closed_total"
	mtls     = `connection_security_policy="mutual_tls"`
	notMTLS  = `connection_security_policy!="mutual_tls"`
)

// volume is a request rate rounded like Istio's stat panels.
func volume(ms ...string) string {
	return fmt.Sprintf("round(%s, 0.001)", sumRate("", reqs, sel(ms...)))
}

// meshDashboard: global golden signals, per-service series, HTTP and TCP
// workload tables, and the control plane.
func meshDashboard() map[string]any {
	l := &layout{}
	src, dst := `reporter="source"`, `reporter="destination"`
	l.row("Global")
	l.add(stat("Global Request Volume", "Requests per second across the mesh, as reported by the calling side.", "reqps", t(volume(src), "")), 5, 4)
	l.add(stat("Global Success Rate (non-5xx responses)", "Share of requests across the mesh that did not end in a 5xx.", "percentunit",
		t(successRate("", src), "")), 5, 4)
	l.add(stat("4xxs", "Requests per second answered with a 4xx.", "reqps",
		t(fmt.Sprintf("%s or vector(0)", volume(src, `response_code=~"4.."`)), "")), 4, 4)
	l.add(stat("5xxs", "Requests per second answered with a 5xx.", "reqps",
		t(fmt.Sprintf("%s or vector(0)", volume(src, `response_code=~"5.."`)), "")), 4, 4)
	l.add(stat("mTLS Share", "Share of requests the receiving sidecar saw over mutual TLS.", "percentunit",
		t(sumRate("", reqs, sel(dst, mtls))+" / "+sumRate("", reqs, sel(dst)), "")), 6, 4)

	l.row("Services")
	by := "destination_service"
	l.add(series("Request Rate By Service", "Requests per second each service received.", "reqps",
		t(sumRate(by, reqs, sel(dst)), "{{destination_service}}")), 8, 8)
	l.add(series("Success Rate By Service", "Non-5xx share per service.", "percentunit",
		t(successRate(by, dst), "{{destination_service}}")), 8, 8)
	l.add(series("P99 Latency By Service", "99th percentile of the request duration each service's sidecar measured.", "ms",
		t(quantile("0.99", by, duration, dst), "{{destination_service}}")), 8, 8)

	wl := "destination_workload, destination_workload_namespace, destination_service"
	link := "/d/weft-workload/weft-workload-dashboard?var-namespace=${__data.fields.Namespace}&var-workload=${__data.fields.Workload}&${__url_time_range}"
	l.add(table("HTTP/gRPC Workloads", "Every workload that received HTTP or gRPC requests: rate, latency percentiles and success rate.", link,
		map[string]string{"Requests": "reqps", "P50 Latency": "ms", "P90 Latency": "ms", "P99 Latency": "ms", "Success Rate": "percentunit"},
		t(sumRate(wl, reqs, sel(dst)), "Requests"),
		t(quantile("0.50", wl, duration, dst), "P50 Latency"),
		t(quantile("0.90", wl, duration, dst), "P90 Latency"),
		t(quantile("0.99", wl, duration, dst), "P99 Latency"),
		t(successRate(wl, dst), "Success Rate")), 24, 8)
	l.add(table("TCP Workloads", "Every workload with TCP traffic: bytes sent and received per second.", link,
		map[string]string{"Bytes Sent": "Bps", "Bytes Received": "Bps"},
		t(sumRate(wl, tcpSent, sel(dst)), "Bytes Sent"),
		t(sumRate(wl, tcpRecv, sel(dst)), "Bytes Received")), 24, 6)

	l.row("Control Plane")
	l.add(stat("Connected Proxies", "Proxies holding an xDS stream to the control plane.", "short",
		t("sum(weft_xds_connected_proxies)", "")), 6, 6)
	l.add(series("xDS Pushes", "Pushes per second by resource type.", "ops",
		t(`sum by (type) (`+rate("weft_xds_pushes_total", "")+`)`, "{{type}}")), 6, 6)
	l.add(series("xDS Push Duration", "99th percentile of a push's duration.", "s",
		t(`histogram_quantile(0.99, sum by (le) (`+rate("weft_xds_push_duration_seconds_bucket", "")+`))`, "P99")), 6, 6)
	l.add(series("Config Resources", "Istio resources in the config store by kind.", "short",
		t(`sum by (kind) (weft_config_resources) > 0`, "{{kind}}")), 6, 6)

	return dashboard("weft-mesh", "Weft Mesh Dashboard",
		"The whole mesh at a glance: global golden signals, services, workloads and the control plane (Istio metric names).",
		[]any{dsVar()}, l)
}

// peerRows adds the per-peer panels of a service or workload dashboard:
// requests by peer and response code (mTLS and plaintext apart), success
// rate, duration, request and response size, TCP bytes.
func peerRows(l *layout, dir, peerLabel string, base []string) {
	peer := peerLabel + ", " + peerLabel + "_namespace"
	if peerLabel == "destination_service" {
		peer = peerLabel
	}
	legend := "{{" + peerLabel + "}}"
	if peerLabel != "destination_service" {
		legend = "{{" + peerLabel + "}}.{{" + peerLabel + "_namespace}}"
	}
	l.add(series(dir+" Requests By "+peerName(peerLabel)+" And Response Code", "Requests per second; mutual TLS and plaintext apart.", "reqps",
		t(fmt.Sprintf("round(%s, 0.001)", sumRate(peer+", response_code", reqs, sel(with(base, mtls)...))), legend+" : {{response_code}} (🔐mTLS)"),
		t(fmt.Sprintf("round(%s, 0.001)", sumRate(peer+", response_code", reqs, sel(with(base, notMTLS)...))), legend+" : {{response_code}}")), 12, 8)
	l.add(series(dir+" Success Rate (non-5xx responses) By "+peerName(peerLabel), "Non-5xx share per peer.", "percentunit",
		t(successRate(peer, base...), legend)), 12, 8)
	l.add(series(dir+" Request Duration By "+peerName(peerLabel), "Request duration percentiles per peer.", "ms",
		quantiles(legend, peer, duration, base...)...), 8, 8)
	l.add(series(dir+" Request Size By "+peerName(peerLabel), "Request body size percentiles per peer.", "decbytes",
		quantiles(legend, peer, reqSize, base...)...), 8, 8)
	l.add(series("Response Size By "+peerName(peerLabel), "Response body size percentiles per peer.", "decbytes",
		quantiles(legend, peer, respSize, base...)...), 8, 8)
	l.add(series("Bytes Received from "+dir+" TCP Connection", "TCP bytes per second the peer sent.", "Bps",
		t(sumRate(peer, tcpRecv, sel(base...)), legend)), 12, 8)
	l.add(series("Bytes Sent to "+dir+" TCP Connection", "TCP bytes per second sent to the peer.", "Bps",
		t(sumRate(peer, tcpSent, sel(base...)), legend)), 12, 8)
}

func peerName(label string) string {
	switch label {
	case "source_workload":
		return "Source"
	case "destination_workload":
		return "Service Workload"
	default:
		return "Destination"
	}
}

// serviceDashboard: one service (destination_service) from its clients'
// and its workloads' point of view.
func serviceDashboard() map[string]any {
	l := &layout{}
	svc := `destination_service=~"$service"`
	client, server := `reporter="source"`, `reporter="destination"`
	l.row("General")
	l.add(stat("Client Request Volume", "Requests per second to the service, as its callers report.", "reqps", t(volume(client, svc), "")), 6, 4)
	l.add(stat("Client Success Rate (non-5xx responses)", "Non-5xx share as the callers saw it.", "percentunit", t(successRate("", client, svc), "")), 6, 4)
	l.add(series("Client Request Duration", "Duration percentiles as the callers measured them.", "ms", quantiles("", "", duration, client, svc)...), 6, 8)
	l.add(stat("TCP Received Bytes", "TCP bytes per second the service received.", "Bps", t(sumRate("", tcpRecv, sel(server, svc)), "")), 6, 4)
	l.add(stat("Server Request Volume", "Requests per second the service's sidecars received.", "reqps", t(volume(server, svc), "")), 6, 4)
	l.add(stat("Server Success Rate (non-5xx responses)", "Non-5xx share the service's sidecars answered.", "percentunit", t(successRate("", server, svc), "")), 6, 4)
	l.add(series("Server Request Duration", "Duration percentiles the service's sidecars measured.", "ms", quantiles("", "", duration, server, svc)...), 6, 8)
	l.add(stat("TCP Sent Bytes", "TCP bytes per second the service sent.", "Bps", t(sumRate("", tcpSent, sel(server, svc)), "")), 6, 4)

	l.row("Client Workloads")
	peerRows(l, "Incoming", "source_workload", []string{`reporter=~"$qrep"`, svc,
		`source_workload=~"$srcwl"`, `source_workload_namespace=~"$srcns"`})
	l.row("Service Workloads")
	peerRows(l, "Incoming", "destination_workload", []string{`reporter=~"$qrep"`, svc,
		`destination_workload=~"$dstwl"`, `destination_workload_namespace=~"$dstns"`})

	vars := []any{dsVar(),
		queryVar("service", "Service", `label_values(istio_requests_total{reporter="destination"}, destination_service)`, false),
		reporterVar(),
		queryVar("srcns", "Client Workload Namespace", `label_values(istio_requests_total{reporter=~"$qrep", destination_service=~"$service"}, source_workload_namespace)`, true),
		queryVar("srcwl", "Client Workload", `label_values(istio_requests_total{reporter=~"$qrep", destination_service=~"$service", source_workload_namespace=~"$srcns"}, source_workload)`, true),
		queryVar("dstns", "Service Workload Namespace", `label_values(istio_requests_total{reporter=~"$qrep", destination_service=~"$service"}, destination_workload_namespace)`, true),
		queryVar("dstwl", "Service Workload", `label_values(istio_requests_total{reporter=~"$qrep", destination_service=~"$service", destination_workload_namespace=~"$dstns"}, destination_workload)`, true),
	}
	return dashboard("weft-service", "Weft Service Dashboard",
		"One service: what its clients see, what its workloads answer, per client and per workload (Istio metric names).", vars, l)
}

// workloadDashboard: one workload, its inbound callers and its outbound
// services.
func workloadDashboard() map[string]any {
	l := &layout{}
	in := []string{`destination_workload_namespace=~"$namespace"`, `destination_workload=~"$workload"`}
	out := []string{`reporter="source"`, `source_workload_namespace=~"$namespace"`, `source_workload=~"$workload"`}
	rep := `reporter=~"$qrep"`
	l.row("General")
	l.add(stat("Incoming Request Volume", "Requests per second the workload received.", "reqps", t(volume(with(in, rep)...), "")), 6, 4)
	l.add(stat("Incoming Success Rate (non-5xx responses)", "Non-5xx share of the workload's answers.", "percentunit",
		t(successRate("", with(in, rep)...), "")), 6, 4)
	l.add(series("Request Duration", "Duration percentiles of the workload's inbound requests.", "ms",
		quantiles("", "", duration, with(in, rep)...)...), 6, 8)
	l.add(stat("TCP Server Traffic", "TCP bytes per second the workload sent and received as a server.", "Bps",
		t(sumRate("", tcpSent, sel(with(in, rep)...))+" + "+sumRate("", tcpRecv, sel(with(in, rep)...)), "")), 6, 4)
	l.add(stat("TCP Client Traffic", "TCP bytes per second the workload sent and received as a client.", "Bps",
		t(sumRate("", tcpSent, sel(out...))+" + "+sumRate("", tcpRecv, sel(out...)), "")), 6, 4)
	l.add(stat("TCP Connections Opened", "TCP connections per second opened to the workload.", "cps",
		t(sumRate("", tcpOpen, sel(with(in, rep)...)), "")), 6, 4)
	l.add(stat("TCP Connections Closed", "TCP connections per second closed at the workload.", "cps",
		t(sumRate("", tcpClose, sel(with(in, rep)...)), "")), 6, 4)

	l.row("Inbound Workloads")
	peerRows(l, "Incoming", "source_workload", with(in, rep, `source_workload=~"$srcwl"`, `source_workload_namespace=~"$srcns"`))
	l.row("Outbound Services")
	peerRows(l, "Outgoing", "destination_service", with(out, `destination_service=~"$dstsvc"`))

	vars := []any{dsVar(),
		queryVar("namespace", "Namespace", `label_values(istio_requests_total{reporter="destination"}, destination_workload_namespace)`, false),
		queryVar("workload", "Workload", `label_values(istio_requests_total{reporter="destination", destination_workload_namespace=~"$namespace"}, destination_workload)`, false),
		reporterVar(),
		queryVar("srcns", "Inbound Workload Namespace", `label_values(istio_requests_total{reporter=~"$qrep", destination_workload=~"$workload", destination_workload_namespace=~"$namespace"}, source_workload_namespace)`, true),
		queryVar("srcwl", "Inbound Workload", `label_values(istio_requests_total{reporter=~"$qrep", destination_workload=~"$workload", destination_workload_namespace=~"$namespace", source_workload_namespace=~"$srcns"}, source_workload)`, true),
		queryVar("dstsvc", "Destination Service", `label_values(istio_requests_total{reporter="source", source_workload=~"$workload", source_workload_namespace=~"$namespace"}, destination_service)`, true),
	}
	return dashboard("weft-workload", "Weft Workload Dashboard",
		"One workload: its inbound callers and the services it calls (Istio metric names).", vars, l)
}
