// Package model holds what the control plane knows about one connected proxy:
// its identity, parsed from the xDS node ID and metadata. Both the translator
// and the ADS server use it.
package model

import (
	"fmt"
	"strings"
)

// ProxyType is the role of a proxy, as in Istio node IDs.
type ProxyType string

const (
	// Sidecar proxies sit next to one workload.
	Sidecar ProxyType = "sidecar"
	// Router proxies are gateways (Istio's "router" node type).
	Router ProxyType = "router"
	// Proxyless clients are gRPC-Go (or other) xDS clients without a sidecar.
	Proxyless ProxyType = "proxyless"
)

// Proxy is one xDS client's identity and the facts translation depends on.
type Proxy struct {
	ID        string    // full node ID, e.g. sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local
	Type      ProxyType // sidecar, router or proxyless
	IP        string
	Namespace string
	Workload  string // workload (pod) name
	// Labels select the proxy in workloadSelector / selector fields.
	Labels         map[string]string
	ServiceAccount string
	// DNSDomain is the node ID's last part, e.g. ns.svc.cluster.local.
	DNSDomain string
	// InboundAddress is host:port where the proxy's inbound listener
	// accepts mesh traffic (explicit mode registers this as its endpoint).
	InboundAddress string
	// Services are NAME:PORT[/PROTOCOL] entries the proxy asked to join.
	Services []string
	// Metadata holds every other node metadata string field.
	Metadata map[string]string
}

// ParseNodeID parses Istio's node ID form TYPE~IP~POD.NAMESPACE~DOMAIN.
// A bare ID (e.g. from a gRPC client's bootstrap without tildes) is
// accepted as a proxyless client in namespace "default".
func ParseNodeID(id string) (*Proxy, error) {
	p := &Proxy{ID: id, Labels: map[string]string{}, Metadata: map[string]string{}}
	parts := strings.Split(id, "~")
	if len(parts) == 1 {
		p.Type = Proxyless
		p.Namespace = "default"
		p.Workload = id
		return p, nil
	}
	if len(parts) != 4 {
		return nil, fmt.Errorf("node id %q: want TYPE~IP~POD.NAMESPACE~DOMAIN", id)
	}
	switch t := ProxyType(parts[0]); t {
	case Sidecar, Router, Proxyless:
		p.Type = t
	default:
		return nil, fmt.Errorf("node id %q: unknown proxy type %q (want sidecar, router or proxyless)", id, parts[0])
	}
	p.IP = parts[1]
	p.DNSDomain = parts[3]
	pod, ns, ok := strings.Cut(parts[2], ".")
	if !ok {
		ns = strings.SplitN(p.DNSDomain, ".", 2)[0]
	}
	if ns == "" {
		ns = "default"
	}
	p.Workload, p.Namespace = pod, ns
	return p, nil
}
