package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/pkg/registry"
)

// Protocol selects a service port's protocol the way Istio does: the
// port's appProtocol wins, else the port name's prefix before the first '-'
// (or the whole name): "http", "http-web", "grpc-api", "tcp-db", ... A port
// neither names is registry.ProtocolAuto: the proxies detect HTTP on it,
// anything else is opaque TCP, as Istio's sniffing does. UDP and SCTP
// ports return "" and are left out of the registry, as Istio does.
func Protocol(p corev1.ServicePort) string {
	if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
		return ""
	}
	if p.AppProtocol != nil {
		if pr := appProtocol(*p.AppProtocol); pr != "" {
			return pr
		}
	}
	if pr := fromName(p.Name); pr != "" {
		return pr
	}
	return registry.ProtocolAuto
}

// appProtocol maps an appProtocol value (an Istio protocol name or one of
// the kubernetes.io/ values) to a Weft protocol, or "".
func appProtocol(v string) string {
	switch strings.ToLower(v) {
	case "kubernetes.io/h2c":
		return "HTTP2"
	case "kubernetes.io/ws":
		return "HTTP"
	case "kubernetes.io/wss":
		return "HTTPS"
	}
	return known(v)
}

// fromName parses the protocol prefix of a port name.
func fromName(name string) string {
	n := strings.ToLower(name)
	if n == "grpc-web" || strings.HasPrefix(n, "grpc-web-") {
		return "GRPC-WEB"
	}
	if i := strings.IndexByte(n, '-'); i >= 0 {
		n = n[:i]
	}
	return known(n)
}

func known(v string) string {
	switch u := strings.ToUpper(v); u {
	case "HTTP", "HTTP2", "HTTPS", "GRPC", "GRPC-WEB", "TCP", "TLS", "MONGO", "MYSQL", "REDIS":
		return u
	case "HTTP_PROXY":
		return "HTTP"
	}
	return ""
}
