package kube

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/pkg/registry"
)

// Labels and annotations the conversion reads.
const (
	// LabelRegion, LabelZone are the well-known node topology labels.
	LabelRegion = "topology.kubernetes.io/region"
	LabelZone   = "topology.kubernetes.io/zone"
	// LabelSubzone is Istio's node label for the third locality level.
	LabelSubzone = "topology.istio.io/subzone"
	// LabelLocality is Istio's pod label overriding the locality
	// ("region.zone.subzone").
	LabelLocality = "istio-locality"
	// LabelNetwork names the network of a pod (or of every pod of a
	// namespace, on the namespace).
	LabelNetwork = "topology.istio.io/network"
	// AnnotationExportTo is Istio's Service annotation restricting
	// visibility ("." own namespace, "*" all, or namespace names).
	AnnotationExportTo = "networking.istio.io/exportTo"
)

// Lookup gives the conversion the objects an EndpointSlice refers to; any
// function may be nil or return nil for "not known (yet)".
type Lookup struct {
	Pod       func(namespace, name string) *corev1.Pod
	Node      func(name string) *corev1.Node
	Namespace func(name string) *corev1.Namespace
}

// Refs are the objects a conversion read, so that their changes can
// trigger a new conversion.
type Refs struct {
	Pods  []string // "ns/name"
	Nodes []string
}

// Hostname is the service's cluster host name NAME.NS.svc.SUFFIX.
func Hostname(name, namespace, suffix string) string {
	return name + "." + namespace + ".svc." + suffix
}

// Convert turns a Service and its EndpointSlices into registry services:
// the service itself and, for a headless service, one more service per
// endpoint that has a hostname (HOSTNAME.NAME.NS.svc.SUFFIX, as a
// StatefulSet's pods are reached). It is pure.
func Convert(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, lk Lookup, suffix string) ([]registry.SourceService, Refs) {
	var refs Refs
	host := Hostname(svc.Name, svc.Namespace, suffix)
	s := &registry.Service{
		Hostname:  host,
		Namespace: svc.Namespace,
		Ports:     convertPorts(svc),
		Source:    "Kubernetes Service " + svc.Namespace + "/" + svc.Name,
		ExportTo:  exportTo(svc.Annotations[AnnotationExportTo]),
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		s.Resolution = registry.ResolutionDNS
		s.MeshExternal = true
		var eps []*registry.Endpoint
		if n := strings.TrimSuffix(svc.Spec.ExternalName, "."); n != "" {
			eps = []*registry.Endpoint{{Hostname: host, Address: n, Namespace: svc.Namespace, Labels: map[string]string{}}}
		}
		return []registry.SourceService{{Service: s, Endpoints: eps}}, refs
	}
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	if headless {
		s.Resolution = registry.ResolutionNone
	} else {
		s.Resolution = registry.ResolutionStatic
		for _, ip := range svc.Spec.ClusterIPs {
			if ip != "" && ip != corev1.ClusterIPNone {
				s.Addresses = append(s.Addresses, ip)
			}
		}
		if len(s.Addresses) == 0 && svc.Spec.ClusterIP != "" {
			s.Addresses = []string{svc.Spec.ClusterIP}
		}
	}
	eps, hostnames := convertSlices(host, svc.Namespace, slices, lk, &refs)
	out := []registry.SourceService{{Service: s, Endpoints: eps}}
	if headless {
		for i, e := range eps {
			if hostnames[i] == "" {
				continue
			}
			ph := hostnames[i] + "." + host
			ps := *s
			ps.Hostname = ph
			ps.Resolution = registry.ResolutionStatic
			ps.Ports = append([]registry.Port(nil), s.Ports...)
			pe := *e
			pe.Hostname = ph
			out = append(out, registry.SourceService{Service: &ps, Endpoints: []*registry.Endpoint{&pe}})
		}
	}
	return out, refs
}

func convertPorts(svc *corev1.Service) []registry.Port {
	var ports []registry.Port
	for _, p := range svc.Spec.Ports {
		proto := Protocol(p)
		if proto == "" {
			continue
		}
		rp := registry.Port{Name: p.Name, Number: uint32(p.Port), Protocol: proto}
		if svc.Spec.Type != corev1.ServiceTypeExternalName && p.TargetPort.IntVal > 0 {
			rp.TargetPort = uint32(p.TargetPort.IntVal)
		}
		ports = append(ports, rp)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Number < ports[j].Number })
	return ports
}

func exportTo(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// convertSlices returns the ready endpoints of the slices (first slice wins
// for an address seen twice, as during a slice hand-over) and each one's
// DNS hostname.
func convertSlices(host, ns string, slices []*discoveryv1.EndpointSlice, lk Lookup, refs *Refs) ([]*registry.Endpoint, []string) {
	sorted := append([]*discoveryv1.EndpointSlice(nil), slices...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	type item struct {
		e        *registry.Endpoint
		hostname string
	}
	seen := map[string]bool{}
	var items []item
	var nsObj *corev1.Namespace
	if lk.Namespace != nil {
		nsObj = lk.Namespace(ns)
	}
	for _, sl := range sorted {
		if sl.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var ports map[string]uint32
		for _, p := range sl.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			if ports == nil {
				ports = map[string]uint32{}
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = uint32(*p.Port)
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if len(ep.Addresses) == 0 || seen[ep.Addresses[0]] {
				continue
			}
			addr := ep.Addresses[0]
			seen[addr] = true
			e := &registry.Endpoint{Hostname: host, Address: addr, Namespace: ns, Labels: map[string]string{}}
			if ports != nil {
				e.Ports = make(map[string]uint32, len(ports))
				for k, v := range ports {
					e.Ports[k] = v
				}
			}
			var pod *corev1.Pod
			if r := ep.TargetRef; r != nil && r.Kind == "Pod" {
				pns := r.Namespace
				if pns == "" {
					pns = ns
				}
				refs.Pods = append(refs.Pods, pns+"/"+r.Name)
				e.Workload = r.Name
				if lk.Pod != nil {
					pod = lk.Pod(pns, r.Name)
				}
			}
			nodeName := ""
			if ep.NodeName != nil {
				nodeName = *ep.NodeName
			}
			if pod != nil {
				for k, v := range pod.Labels {
					e.Labels[k] = v
				}
				e.ServiceAccount = pod.Spec.ServiceAccountName
				if e.ServiceAccount == "" {
					e.ServiceAccount = "default"
				}
				if nodeName == "" {
					nodeName = pod.Spec.NodeName
				}
			}
			var node *corev1.Node
			if nodeName != "" {
				refs.Nodes = append(refs.Nodes, nodeName)
				if lk.Node != nil {
					node = lk.Node(nodeName)
				}
			}
			e.Locality = locality(pod, node, ep.Zone)
			e.Network = network(pod, nsObj)
			hn := ""
			if ep.Hostname != nil {
				hn = *ep.Hostname
			}
			items = append(items, item{e, hn})
		}
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].e.Address < items[j].e.Address })
	eps := make([]*registry.Endpoint, len(items))
	hns := make([]string, len(items))
	for i, it := range items {
		eps[i], hns[i] = it.e, it.hostname
	}
	return eps, hns
}

// locality is region/zone/subzone from the pod's istio-locality label,
// else from its node's topology labels, else the slice's zone.
func locality(pod *corev1.Pod, node *corev1.Node, zone *string) string {
	if pod != nil {
		if l := pod.Labels[LabelLocality]; l != "" {
			return strings.ReplaceAll(l, ".", "/")
		}
	}
	var r, z, sz string
	if node != nil {
		r, z, sz = node.Labels[LabelRegion], node.Labels[LabelZone], node.Labels[LabelSubzone]
	}
	if z == "" && zone != nil {
		z = *zone
	}
	if r == "" && z == "" && sz == "" {
		return ""
	}
	return strings.TrimRight(r+"/"+z+"/"+sz, "/")
}

func network(pod *corev1.Pod, ns *corev1.Namespace) string {
	if pod != nil {
		if n := pod.Labels[LabelNetwork]; n != "" {
			return n
		}
	}
	if ns != nil {
		return ns.Labels[LabelNetwork]
	}
	return ""
}

// PodWorkload turns a pod with an IP that is not finished into a registry
// workload (for ServiceEntry workloadSelector); nil otherwise.
func PodWorkload(pod *corev1.Pod, lk Lookup) *registry.Workload {
	if pod.Status.PodIP == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil {
		return nil
	}
	w := &registry.Workload{Name: pod.Name, Namespace: pod.Namespace, Address: pod.Status.PodIP,
		Labels: map[string]string{}, ServiceAccount: pod.Spec.ServiceAccountName}
	for k, v := range pod.Labels {
		w.Labels[k] = v
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = "default"
	}
	var node *corev1.Node
	if pod.Spec.NodeName != "" && lk.Node != nil {
		node = lk.Node(pod.Spec.NodeName)
	}
	w.Locality = locality(pod, node, nil)
	var ns *corev1.Namespace
	if lk.Namespace != nil {
		ns = lk.Namespace(pod.Namespace)
	}
	w.Network = network(pod, ns)
	return w
}
