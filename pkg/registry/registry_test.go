package registry

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

func decode(t *testing.T, y string) []*config.Resource {
	t.Helper()
	rs, err := config.Decode("test.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

const configs = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local, reviews.example.com]
  addresses: [240.0.0.1]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 9090, name: grpc, protocol: GRPC}
  endpoints:
  - {address: 10.0.0.9, labels: {version: inline}, locality: r/z, weight: 5, ports: {http: 18080}}
  workloadSelector:
    labels: {app: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: other}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: default}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}, serviceAccount: reviews}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-other-ns, namespace: other}
spec: {address: 10.0.0.2, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews-group, namespace: default}
spec:
  metadata: {labels: {app: reviews}}
  template: {serviceAccount: reviews-sa}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ignored, namespace: default}
spec: {hosts: [x]}
`

func proxy(id string, labels map[string]string, md map[string]string) *model.Proxy {
	p, err := model.ParseNodeID(id)
	if err != nil {
		panic(err)
	}
	for k, v := range labels {
		p.Labels[k] = v
	}
	for k, v := range md {
		p.Metadata[k] = v
	}
	return p
}

func TestServiceEntry(t *testing.T) {
	r := New(nil)
	r.SetConfigs(decode(t, configs))
	s := r.Snapshot()
	if len(s.Services) != 3 {
		t.Fatalf("got %d services, want 3 (hosts x entries)", len(s.Services))
	}
	svc := s.Service("reviews.default.svc.cluster.local", "default")
	if svc == nil || svc.Resolution != ResolutionStatic || svc.MeshExternal || len(svc.Ports) != 2 || svc.Addresses[0] != "240.0.0.1" {
		t.Fatalf("reviews = %+v", svc)
	}
	if !svc.VisibleTo("default") || svc.VisibleTo("other") {
		t.Error("exportTo . must limit visibility to the own namespace")
	}
	ext := s.Service("api.example.com", "default")
	if ext == nil || !ext.MeshExternal || ext.Resolution != ResolutionDNS {
		t.Errorf("ext = %+v", ext)
	}
	eps := s.EndpointsOf("reviews.default.svc.cluster.local")
	if len(eps) != 2 {
		t.Fatalf("endpoints = %d, want inline + same-namespace WorkloadEntry", len(eps))
	}
	vm, inline := eps[0], eps[1]
	if vm.Address != "10.0.0.1" || vm.ServiceAccount != "reviews" || vm.Workload != "reviews-vm" || vm.Labels["version"] != "v1" {
		t.Errorf("vm endpoint = %+v", vm)
	}
	http, _ := svc.Port(9080)
	grpc, _ := svc.Port(9090)
	if vm.PortFor(http) != 8080 || vm.PortFor(grpc) != 9090 {
		t.Errorf("vm ports = %d/%d, want targetPort 8080 and 9090", vm.PortFor(http), vm.PortFor(grpc))
	}
	if inline.PortFor(http) != 18080 || inline.Weight != 5 || inline.Locality != "r/z" {
		t.Errorf("inline endpoint = %+v", inline)
	}
}

func TestSelfRegisteredProxies(t *testing.T) {
	r := New(nil)
	r.SetConfigs(decode(t, configs))
	// Selected by the ServiceEntry's workloadSelector: served through its
	// inbound listener for every port.
	r.UpsertProxy(proxy("sidecar~10.1.0.1~reviews-v2.default~default.svc.cluster.local", map[string]string{"app": "reviews"},
		nil))
	p := r.Snapshot().EndpointsOf("reviews.default.svc.cluster.local")
	if len(p) != 3 || p[2].Address != "10.1.0.1" {
		t.Fatalf("proxy without INBOUND_ADDRESS: %d endpoints", len(p))
	}
	pr := proxy("sidecar~10.1.0.1~reviews-v2.default~default.svc.cluster.local", map[string]string{"app": "reviews"}, map[string]string{"LOCALITY": "a/b"})
	pr.InboundAddress = "127.0.0.1:15006"
	pr.Services = []string{"details:9080", "details:9443/TLS"}
	pr.Metadata["WORKLOAD_GROUP"] = "reviews-group"
	r.UpsertProxy(pr)
	s := r.Snapshot()
	var got *Endpoint
	for _, e := range s.EndpointsOf("reviews.default.svc.cluster.local") {
		if e.Workload == "reviews-v2" {
			got = e
		}
	}
	svc := s.Service("reviews.default.svc.cluster.local", "default")
	if got == nil || got.Address != "127.0.0.1" || got.PortFor(svc.Ports[0]) != 15006 || got.PortFor(svc.Ports[1]) != 15006 || got.Locality != "a/b" {
		t.Fatalf("proxy endpoint = %+v", got)
	}
	if got.ServiceAccount != "reviews-sa" {
		t.Errorf("service account = %q, want the WorkloadGroup template's", got.ServiceAccount)
	}
	details := s.Service("details.default.svc.cluster.local", "default")
	if details == nil || len(details.Ports) != 2 || details.Ports[1].Protocol != "TLS" || details.Ports[0].Protocol != "HTTP" {
		t.Fatalf("details = %+v", details)
	}
	if eps := s.EndpointsOf("details.default.svc.cluster.local"); len(eps) != 1 || !eps[0].Serves(details.Ports[1]) {
		t.Errorf("details endpoints = %+v", eps)
	}
	// A second proxy joins only port 9080.
	p2 := proxy("sidecar~10.1.0.2~details-2.default~default.svc.cluster.local", nil, nil)
	p2.InboundAddress, p2.Services = "10.1.0.2:16000", []string{"details:9080"}
	r.UpsertProxy(p2)
	s = r.Snapshot()
	for _, e := range s.EndpointsOf("details.default.svc.cluster.local") {
		if e.Workload == "details-2" && (e.Serves(details.Ports[1]) || !e.Serves(details.Ports[0]) || e.PortFor(details.Ports[0]) != 16000) {
			t.Errorf("details-2 = %+v, want only 9080 -> 16000", e)
		}
	}
	r.SetDomainSuffix("mesh.example")
	if s := r.Snapshot(); s.Service("details.default.svc.mesh.example", "default") == nil || s.DomainSuffix != "mesh.example" {
		t.Error("SetDomainSuffix: details.default.svc.mesh.example missing")
	}
	r.RemoveProxy(pr.ID)
	r.RemoveProxy(p2.ID)
	if s := r.Snapshot(); s.Service("details.default.svc.cluster.local", "default") != nil {
		t.Error("details must disappear with its proxies")
	}
}

func TestSubscribe(t *testing.T) {
	r := New(nil)
	var n atomic.Int32
	done := make(chan struct{}, 16)
	cancel := r.Subscribe(func() { n.Add(1); done <- struct{}{} })
	v0 := r.Snapshot().Version
	r.SetConfigs(decode(t, configs))
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("no callback after SetConfigs")
	}
	if r.Snapshot().Version <= v0 {
		t.Error("version did not increase")
	}
	cancel()
	cancel() // idempotent
	before := n.Load()
	r.UpsertProxy(proxy("sidecar~1.1.1.1~x.default~default.svc.cluster.local", nil, nil))
	time.Sleep(50 * time.Millisecond)
	if n.Load() != before {
		t.Error("callback after cancel")
	}
	// Removing an unknown proxy, or upserting an identical one, is not a change.
	v := r.Snapshot().Version
	r.UpsertProxy(proxy("sidecar~1.1.1.1~x.default~default.svc.cluster.local", nil, nil))
	r.RemoveProxy("nope")
	if r.Snapshot().Version != v {
		t.Error("RemoveProxy of unknown id bumped the version")
	}
}

func TestResolveShortName(t *testing.T) {
	for _, tc := range []struct{ in, ns, want string }{
		{"reviews", "default", "reviews.default.svc.cluster.local"},
		{"reviews", "", "reviews.default.svc.cluster.local"},
		{"reviews.prod", "default", "reviews.prod.svc.cluster.local"},
		{"reviews.prod.svc.cluster.local", "default", "reviews.prod.svc.cluster.local"},
		{"api.example.com", "default", "api.example.com"},
		{"*.example.com", "default", "*.example.com"},
		{"*", "default", "*"},
		{"10.0.0.1", "default", "10.0.0.1"},
	} {
		if got := ResolveShortName(tc.in, tc.ns, ""); got != tc.want {
			t.Errorf("ResolveShortName(%q, %q) = %q, want %q", tc.in, tc.ns, got, tc.want)
		}
	}
	// Snapshot.Resolve prefers a registered exact host ("example.com"
	// would otherwise expand as NAME.NAMESPACE).
	r := New(nil)
	r.SetConfigs(decode(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: e, namespace: default}
spec:
  hosts: [example.com]
  resolution: DNS
  ports: [{number: 80, name: http}]
`))
	if got := r.Snapshot().Resolve("example.com", "default"); got != "example.com" {
		t.Errorf("Resolve(example.com) = %q", got)
	}
	if got := r.Snapshot().Resolve("other.ns", "default"); got != "other.ns.svc.cluster.local" {
		t.Errorf("Resolve(other.ns) = %q", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	r := New(nil)
	cancel := r.Subscribe(func() { _ = r.Snapshot() })
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			r.UpsertProxy(proxy(fmt.Sprintf("sidecar~10.0.0.%d~p%d.default~default.svc.cluster.local", i%250, i), nil, nil))
		}
	}()
	for i := 0; i < 200; i++ {
		_ = r.Snapshot().Services
	}
	<-done
}

// Proxies that no ServiceEntry selects and that name no services are kept
// but change nothing: thousands of them connecting cause no rebuild and no
// notification. A burst of relevant changes costs one rebuild, when the
// snapshot is next read.
func TestProxyChangesRebuildLazily(t *testing.T) {
	r := New(nil)
	r.SetConfigs(decode(t, configs))
	calls := make(chan struct{}, 1)
	cancel := r.Subscribe(func() {
		select {
		case calls <- struct{}{}:
		default:
		}
	})
	defer cancel()
	s0 := r.Snapshot()
	builds := r.builds
	for i := range 1000 {
		r.UpsertProxy(proxy(fmt.Sprintf("sidecar~10.2.%d.%d~ratings-%d.default~default.svc.cluster.local", i/250, i%250, i), map[string]string{"app": "ratings"}, nil))
	}
	if s := r.Snapshot(); s != s0 || r.builds != builds {
		t.Errorf("unselected proxies rebuilt the snapshot (%d builds)", r.builds-builds)
	}
	r.RemoveProxy("sidecar~10.2.0.0~ratings-0.default~default.svc.cluster.local")
	select {
	case <-calls:
		t.Error("subscriber called for proxies outside the snapshot")
	case <-time.After(50 * time.Millisecond):
	}

	// 100 selected proxies: one rebuild when read, every one an endpoint.
	for i := range 100 {
		r.UpsertProxy(proxy(fmt.Sprintf("sidecar~10.3.0.%d~reviews-%d.default~default.svc.cluster.local", i, i), map[string]string{"app": "reviews"}, nil))
	}
	s := r.Snapshot()
	if r.builds != builds+1 {
		t.Errorf("%d rebuilds for 100 proxies and one read, want 1", r.builds-builds)
	}
	if got := len(s.EndpointsOf("reviews.default.svc.cluster.local")); got != 102 {
		t.Errorf("reviews endpoints = %d, want 2 + 100 proxies", got)
	}
	select {
	case <-calls:
	case <-time.After(5 * time.Second):
		t.Fatal("no callback after selected proxies joined")
	}

	// A ServiceEntry that selects the proxies already connected makes them
	// endpoints.
	more := decode(t, configs+`---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
`)
	r.SetConfigs(more)
	if got := len(r.Snapshot().EndpointsOf("ratings.default.svc.cluster.local")); got != 999 {
		t.Errorf("ratings endpoints = %d, want the 999 connected proxies", got)
	}
}
