package registry

import (
	"testing"
)

func TestSourceMergesWithConfigs(t *testing.T) {
	r := New(nil)
	r.SetConfigs(decode(t, configs))
	kubeSvc := func(host string, addrs ...string) SourceService {
		s := SourceService{Service: &Service{Hostname: host, Namespace: "default", Resolution: ResolutionStatic, Source: "Kubernetes Service",
			Ports: []Port{{Name: "http", Number: 9080, Protocol: "HTTP"}}}}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, &Endpoint{Hostname: host, Address: a, ServiceAccount: "k8s-sa", Labels: map[string]string{}})
		}
		return s
	}
	const host = "reviews.default.svc.cluster.local"
	r.UpdateSource("kubernetes", []SourceService{kubeSvc(host, "10.9.0.2", "10.9.0.1"), kubeSvc("ratings.default.svc.cluster.local", "10.9.1.1")}, nil)
	s := r.Snapshot()
	// The Kubernetes Service wins over the ServiceEntry of the same host
	// and namespace; the ServiceEntry's other host stays.
	if svc := s.Service(host, "default"); svc == nil || svc.Source != "Kubernetes Service" || len(svc.Ports) != 1 {
		t.Fatalf("service %+v", svc)
	}
	if got := s.EndpointsOf(host); len(got) != 2 || got[0].Address != "10.9.0.1" || got[0].ServiceAccount != "k8s-sa" {
		t.Fatalf("endpoints %+v", got)
	}
	if s.Service("reviews.example.com", "default") == nil {
		t.Error("ServiceEntry's other host lost")
	}
	// A proxy naming the Kubernetes service joins it.
	px := proxy("sidecar~10.0.0.7~px.default~default.svc.cluster.local", nil, nil)
	px.Services, px.InboundAddress = []string{"ratings:9080"}, "127.0.0.1:15006"
	r.UpsertProxy(px)
	if got := r.Snapshot().EndpointsOf("ratings.default.svc.cluster.local"); len(got) != 2 || got[1].Address != "127.0.0.1" || got[1].PortFor(Port{Name: "http", Number: 9080}) != 15006 {
		t.Fatalf("ratings endpoints after a proxy joined: %+v", got)
	}
	// Incremental: remove one service, leave the other.
	r.UpdateSource("kubernetes", nil, []ServiceKey{{Hostname: host, Namespace: "default"}})
	s = r.Snapshot()
	if svc := s.Service(host, "default"); svc == nil || svc.Source == "Kubernetes Service" {
		t.Fatalf("after removal the ServiceEntry should own %s again: %+v", host, svc)
	}
	if len(s.EndpointsOf("ratings.default.svc.cluster.local")) < 1 {
		t.Fatal("ratings lost")
	}
	r.ReplaceSource("kubernetes", nil)
	if s := r.Snapshot(); s.Service("ratings.default.svc.cluster.local", "default") != nil && s.Service("ratings.default.svc.cluster.local", "default").Source == "Kubernetes Service" {
		t.Fatal("ReplaceSource(nil) kept the service")
	}
}

func TestWorkloadsSelectedByServiceEntry(t *testing.T) {
	r := New(nil)
	r.SetConfigs(decode(t, configs))
	const host = "reviews.example.com" // ServiceEntry default/reviews selects app=reviews
	base := len(r.Snapshot().EndpointsOf(host))
	pod := &Workload{Name: "reviews-7", Namespace: "default", Address: "10.8.0.7", Labels: map[string]string{"app": "reviews", "version": "v7"},
		ServiceAccount: "reviews", Locality: "eu/eu-1"}
	other := &Workload{Name: "reviews-x", Namespace: "other", Address: "10.8.0.8", Labels: map[string]string{"app": "reviews"}}
	nomatch := &Workload{Name: "ratings-1", Namespace: "default", Address: "10.8.0.9", Labels: map[string]string{"app": "ratings"}}
	r.UpdateWorkloads("kubernetes", []*Workload{pod, other, nomatch}, nil)
	eps := r.Snapshot().EndpointsOf(host)
	if len(eps) != base+1 {
		t.Fatalf("endpoints %d, want %d (only the matching pod of the namespace)", len(eps), base+1)
	}
	var got *Endpoint
	for _, e := range eps {
		if e.Address == "10.8.0.7" {
			got = e
		}
	}
	if got == nil || got.ServiceAccount != "reviews" || got.Workload != "reviews-7" || got.Locality != "eu/eu-1" || got.Labels["version"] != "v7" ||
		got.PortFor(Port{Name: "http", Number: 9080, TargetPort: 8080}) != 8080 {
		t.Fatalf("pod endpoint %+v", got)
	}
	r.UpdateWorkloads("kubernetes", nil, []WorkloadKey{pod.Key()})
	if n := len(r.Snapshot().EndpointsOf(host)); n != base {
		t.Fatalf("after removal %d endpoints, want %d", n, base)
	}
}
