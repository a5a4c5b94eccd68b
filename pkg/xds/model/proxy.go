// Package model holds what the control plane knows about one connected proxy:
// its identity, parsed from the xDS node ID and metadata. Both the translator
// and the ADS server use it.
package model

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
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
	// InstanceIPs are the workload's IPs (metadata INSTANCE_IPS).
	InstanceIPs []string
	// AppPorts are the ports the local application listens on (APP_PORTS).
	AppPorts []uint32
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

// Node metadata keys (docs/xds-conventions.md "Node metadata").
const (
	MetaNamespace      = "NAMESPACE"
	MetaWorkloadName   = "WORKLOAD_NAME"
	MetaServiceAccount = "SERVICE_ACCOUNT"
	MetaInstanceIPs    = "INSTANCE_IPS"
	MetaInboundAddress = "INBOUND_ADDRESS"
	MetaAppPorts       = "APP_PORTS"
	MetaServices       = "SERVICES"
	MetaLabels         = "LABELS"
)

// ParseNode builds a Proxy from an xDS node: its ID (see ParseNodeID), its
// metadata Struct and its user agent name. Metadata fields override what the
// node ID implies (NAMESPACE, WORKLOAD_NAME). A gRPC library client (user
// agent "gRPC Go", "gRPC C++", ...) is a proxyless client whatever type its
// node ID names, since it executes api_listeners, not a sidecar's listeners.
func ParseNode(id string, md *structpb.Struct, userAgent string) (*Proxy, error) {
	p, err := ParseNodeID(id)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(strings.ToLower(userAgent), "grpc") {
		p.Type = Proxyless
	}
	for k, v := range md.GetFields() {
		if k == MetaLabels {
			st := v.GetStructValue()
			if st == nil {
				return nil, fmt.Errorf("node %q: metadata %s: want a struct of strings", id, k)
			}
			for lk, lv := range st.GetFields() {
				s, ok := lv.GetKind().(*structpb.Value_StringValue)
				if !ok {
					return nil, fmt.Errorf("node %q: metadata %s[%s]: want a string", id, k, lk)
				}
				p.Labels[lk] = s.StringValue
			}
			continue
		}
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			continue // other shapes (bools, lists) are not part of the conventions
		}
		p.Metadata[k] = s.StringValue
	}
	m := p.Metadata
	if ns := m[MetaNamespace]; ns != "" {
		p.Namespace = ns
	}
	if w := m[MetaWorkloadName]; w != "" {
		p.Workload = w
	}
	p.ServiceAccount = m[MetaServiceAccount]
	if p.ServiceAccount == "" {
		p.ServiceAccount = "default"
	}
	p.InboundAddress = m[MetaInboundAddress]
	if a := p.InboundAddress; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, fmt.Errorf("node %q: metadata %s %q: want host:port", id, MetaInboundAddress, a)
		}
	}
	p.InstanceIPs = splitList(m[MetaInstanceIPs])
	for _, ip := range p.InstanceIPs {
		if net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("node %q: metadata %s: %q is not an IP address", id, MetaInstanceIPs, ip)
		}
	}
	if p.IP == "" && len(p.InstanceIPs) > 0 {
		p.IP = p.InstanceIPs[0]
	}
	for _, s := range splitList(m[MetaAppPorts]) {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("node %q: metadata %s: %q is not a port number", id, MetaAppPorts, s)
		}
		p.AppPorts = append(p.AppPorts, uint32(n))
	}
	for _, s := range splitList(m[MetaServices]) {
		name, rest, ok := strings.Cut(s, ":")
		port, _, _ := strings.Cut(rest, "/")
		if n, err := strconv.ParseUint(port, 10, 16); !ok || name == "" || err != nil || n == 0 {
			return nil, fmt.Errorf("node %q: metadata %s: %q: want NAME:PORT[/PROTOCOL]", id, MetaServices, s)
		}
		p.Services = append(p.Services, s)
	}
	return p, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
