package kube

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestProtocol(t *testing.T) {
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		name string
		port corev1.ServicePort
		want string
	}{
		{"name http", corev1.ServicePort{Name: "http"}, "HTTP"},
		{"name prefix", corev1.ServicePort{Name: "http2-api"}, "HTTP2"},
		{"name case", corev1.ServicePort{Name: "GRPC-x"}, "GRPC"},
		{"grpc-web", corev1.ServicePort{Name: "grpc-web-ui"}, "GRPC-WEB"},
		{"https", corev1.ServicePort{Name: "https"}, "HTTPS"},
		{"tls", corev1.ServicePort{Name: "tls-db"}, "TLS"},
		{"mongo", corev1.ServicePort{Name: "mongo"}, "MONGO"},
		{"unknown name is sniffed", corev1.ServicePort{Name: "db"}, "AUTO"},
		{"unnamed is sniffed", corev1.ServicePort{}, "AUTO"},
		{"name without separator is not a prefix", corev1.ServicePort{Name: "httpx"}, "AUTO"},
		{"appProtocol wins", corev1.ServicePort{Name: "http", AppProtocol: s("grpc")}, "GRPC"},
		{"appProtocol h2c", corev1.ServicePort{Name: "x", AppProtocol: s("kubernetes.io/h2c")}, "HTTP2"},
		{"appProtocol ws", corev1.ServicePort{AppProtocol: s("kubernetes.io/ws")}, "HTTP"},
		{"appProtocol wss", corev1.ServicePort{AppProtocol: s("kubernetes.io/wss")}, "HTTPS"},
		{"unknown appProtocol falls back to name", corev1.ServicePort{Name: "http", AppProtocol: s("example.com/x")}, "HTTP"},
		{"UDP left out", corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolUDP}, ""},
		{"SCTP left out", corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolSCTP}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Protocol(tc.port); got != tc.want {
				t.Errorf("Protocol(%+v) = %q, want %q", tc.port, got, tc.want)
			}
		})
	}
}

func TestConvertLocalityAndDedupe(t *testing.T) {
	p := func(v string) *string { return &v }
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns", Annotations: map[string]string{AnnotationExportTo: ". , other"}},
		Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.9", ClusterIPs: []string{"10.0.0.9"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	pods := map[string]*corev1.Pod{
		"ns/p1": {ObjectMeta: metav1.ObjectMeta{Name: "p1", Labels: map[string]string{"app": "a", LabelLocality: "r1.z1.s1", LabelNetwork: "n9"}}},
		"ns/p2": {ObjectMeta: metav1.ObjectMeta{Name: "p2"}, Spec: corev1.PodSpec{NodeName: "n"}},
	}
	lk := Lookup{
		Pod: func(ns, name string) *corev1.Pod { return pods[ns+"/"+name] },
		Node: func(string) *corev1.Node {
			return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelRegion: "r2"}}}
		},
	}
	ep := func(ip, pod string, zone *string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{ip}, Zone: zone, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod}}
	}
	slices := []*discoveryv1.EndpointSlice{
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Ports: []discoveryv1.EndpointPort{{Name: p("http"), Port: func() *int32 { v := int32(81); return &v }()}},
			Endpoints: []discoveryv1.Endpoint{ep("10.1.0.1", "p1", nil)}},
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Endpoints: []discoveryv1.Endpoint{ep("10.1.0.2", "p2", p("zz")), ep("10.1.0.1", "p1", nil)}},
		{ObjectMeta: metav1.ObjectMeta{Name: "c"}, AddressType: discoveryv1.AddressTypeFQDN, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"x.example.com"}}}},
	}
	out, refs := Convert(svc, slices, lk, "example.local")
	if len(out) != 1 {
		t.Fatalf("got %d services", len(out))
	}
	s := out[0].Service
	if s.Hostname != "a.ns.svc.example.local" || fmt.Sprint(s.ExportTo) != "[. other]" || fmt.Sprint(s.Addresses) != "[10.0.0.9]" {
		t.Errorf("service %+v", s)
	}
	eps := out[0].Endpoints
	if len(eps) != 2 {
		t.Fatalf("endpoints %d, want 2 (duplicate address and FQDN slice dropped)", len(eps))
	}
	// Slice "a" sorts first, so 10.1.0.1 comes from it: no port override.
	if eps[0].Address != "10.1.0.1" || eps[0].Locality != "r1/z1/s1" || eps[0].Network != "n9" || eps[0].Ports != nil || eps[0].ServiceAccount != "default" {
		t.Errorf("endpoint 0 %+v", eps[0])
	}
	if eps[1].Address != "10.1.0.2" || eps[1].Locality != "r2/zz" {
		t.Errorf("endpoint 1 %+v", eps[1])
	}
	if fmt.Sprint(refs.Pods) != "[ns/p2 ns/p1]" {
		t.Errorf("pod refs %v", refs.Pods)
	}
	if fmt.Sprint(refs.Nodes) != "[n]" {
		t.Errorf("node refs %v", refs.Nodes)
	}
}
