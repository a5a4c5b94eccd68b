package kube_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/registry/kube"
)

// waitFor polls the registry until cond holds.
func waitFor(t *testing.T, reg *registry.Registry, what string, cond func(*registry.Snapshot) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond(reg.Snapshot())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

func slice(name, svc string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http-web"), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

func podEndpoint(ip, pod, ns string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}}
}

func addresses(eps []*registry.Endpoint) string {
	var a []string
	for _, e := range eps {
		a = append(a, e.Address)
	}
	return strings.Join(a, ",")
}

func TestRegistryFromAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	cs := cl.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	const ns = "shop"
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{kube.LabelNetwork: "net1"}}}, metav1.CreateOptions{})
	must(err)
	_, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", Labels: map[string]string{
		kube.LabelRegion: "eu", kube.LabelZone: "eu-1", kube.LabelSubzone: "rack7"}}}, metav1.CreateOptions{})
	must(err)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "reviews"}}
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{})
	must(err)
	for i := 1; i <= 3; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("reviews-%d", i), Labels: map[string]string{"app": "reviews", "version": fmt.Sprintf("v%d", i)}},
			Spec: corev1.PodSpec{ServiceAccountName: "reviews", NodeName: "node-a",
				Containers: []corev1.Container{{Name: "app", Image: "reviews"}}},
		}
		_, err = cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		must(err)
	}

	reg := registry.New(nil)
	ctl, err := kube.New(kube.Options{Client: cs, Registry: reg})
	must(err)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"}, Ports: []corev1.ServicePort{
			{Name: "http-web", Port: 9080, TargetPort: intstr.FromInt(8080)},
			{Name: "db", Port: 5432, AppProtocol: ptr("kubernetes.io/h2c")},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
		}},
	}, metav1.CreateOptions{})
	must(err)
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice("reviews-a", "reviews", 8080,
		podEndpoint("10.1.0.1", "reviews-1", ns), podEndpoint("10.1.0.2", "reviews-2", ns)), metav1.CreateOptions{})
	must(err)

	const host = "reviews.shop.svc.cluster.local"
	waitFor(t, reg, "service with two endpoints", func(s *registry.Snapshot) error {
		svc := s.Service(host, ns)
		if svc == nil {
			return fmt.Errorf("no service %s", host)
		}
		if got := addresses(s.EndpointsOf(host)); got != "10.1.0.1,10.1.0.2" {
			return fmt.Errorf("endpoints %q", got)
		}
		return nil
	})
	if !ctl.HasSynced() {
		t.Error("HasSynced false after the first update")
	}
	snap := reg.Snapshot()
	svc := snap.Service(host, ns)
	if len(svc.Addresses) != 1 || !strings.HasPrefix(svc.Addresses[0], "10.0.0.") {
		t.Errorf("cluster IP addresses %v, want one in 10.0.0.0/24", svc.Addresses)
	}
	if svc.Resolution != registry.ResolutionStatic {
		t.Errorf("resolution %s", svc.Resolution)
	}
	wantPorts := []registry.Port{{Name: "db", Number: 5432, Protocol: "HTTP2", TargetPort: 5432}, {Name: "http-web", Number: 9080, Protocol: "HTTP", TargetPort: 8080}}
	if fmt.Sprint(svc.Ports) != fmt.Sprint(wantPorts) {
		t.Errorf("ports %v, want %v (UDP left out)", svc.Ports, wantPorts)
	}
	e := snap.EndpointsOf(host)[0]
	if e.Labels["app"] != "reviews" || e.Labels["version"] != "v1" || e.ServiceAccount != "reviews" || e.Workload != "reviews-1" ||
		e.Namespace != ns || e.Locality != "eu/eu-1/rack7" || e.Network != "net1" || e.PortFor(svc.Ports[1]) != 8080 {
		t.Errorf("endpoint %+v", e)
	}

	// Scale up: a second slice; then a pod label change reaches its endpoint.
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice("reviews-b", "reviews", 8080, podEndpoint("10.1.0.3", "reviews-3", ns)), metav1.CreateOptions{})
	must(err)
	waitFor(t, reg, "scale up", func(s *registry.Snapshot) error {
		if got := addresses(s.EndpointsOf(host)); got != "10.1.0.1,10.1.0.2,10.1.0.3" {
			return fmt.Errorf("endpoints %q", got)
		}
		return nil
	})
	p, err := cs.CoreV1().Pods(ns).Get(ctx, "reviews-3", metav1.GetOptions{})
	must(err)
	p.Labels["version"] = "v3b"
	_, err = cs.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{})
	must(err)
	waitFor(t, reg, "pod label change", func(s *registry.Snapshot) error {
		for _, e := range s.EndpointsOf(host) {
			if e.Address == "10.1.0.3" && e.Labels["version"] == "v3b" {
				return nil
			}
		}
		return fmt.Errorf("endpoint labels not updated")
	})
	// A node's topology change reaches its endpoints.
	n, err := cs.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	must(err)
	n.Labels[kube.LabelZone] = "eu-2"
	_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	must(err)
	waitFor(t, reg, "node zone change", func(s *registry.Snapshot) error {
		if l := s.EndpointsOf(host)[0].Locality; l != "eu/eu-2/rack7" {
			return fmt.Errorf("locality %q", l)
		}
		return nil
	})

	// Scale down: one endpoint not ready, the other slice deleted.
	sl, err := cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, "reviews-a", metav1.GetOptions{})
	must(err)
	sl.Endpoints[1].Conditions.Ready = ptr(false)
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{})
	must(err)
	must(cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "reviews-b", metav1.DeleteOptions{}))
	waitFor(t, reg, "scale down", func(s *registry.Snapshot) error {
		if got := addresses(s.EndpointsOf(host)); got != "10.1.0.1" {
			return fmt.Errorf("endpoints %q", got)
		}
		return nil
	})

	// Headless: endpoints per pod, plus a host per pod hostname.
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "tcp", Port: 3306}}},
	}, metav1.CreateOptions{})
	must(err)
	e0, e1 := podEndpoint("10.1.1.1", "reviews-1", ns), podEndpoint("10.1.1.2", "reviews-2", ns)
	e0.Hostname, e1.Hostname = ptr("db-0"), ptr("db-1")
	hs := slice("db-x", "db", 3306, e0, e1)
	hs.Ports[0].Name = ptr("tcp")
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, hs, metav1.CreateOptions{})
	must(err)
	waitFor(t, reg, "headless", func(s *registry.Snapshot) error {
		svc := s.Service("db.shop.svc.cluster.local", ns)
		if svc == nil || svc.Resolution != registry.ResolutionNone || len(svc.Addresses) != 0 {
			return fmt.Errorf("service %+v", svc)
		}
		if got := addresses(s.EndpointsOf("db.shop.svc.cluster.local")); got != "10.1.1.1,10.1.1.2" {
			return fmt.Errorf("endpoints %q", got)
		}
		if got := addresses(s.EndpointsOf("db-1.db.shop.svc.cluster.local")); got != "10.1.1.2" {
			return fmt.Errorf("per-pod host endpoints %q", got)
		}
		return nil
	})

	// ExternalName: a DNS service resolving the external name.
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "payments"},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "pay.example.com", Ports: []corev1.ServicePort{{Name: "https", Port: 443}}},
	}, metav1.CreateOptions{})
	must(err)
	waitFor(t, reg, "ExternalName", func(s *registry.Snapshot) error {
		svc := s.Service("payments.shop.svc.cluster.local", ns)
		if svc == nil || svc.Resolution != registry.ResolutionDNS || !svc.MeshExternal || len(svc.Ports) != 1 || svc.Ports[0].Protocol != "HTTPS" {
			return fmt.Errorf("service %+v", svc)
		}
		if got := addresses(s.EndpointsOf(svc.Hostname)); got != "pay.example.com" {
			return fmt.Errorf("endpoints %q", got)
		}
		return nil
	})

	// A ServiceEntry's workloadSelector selects pods with an IP.
	se, err := config.Decode("se.yaml", []byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: reviews}}
`))
	must(err)
	reg.SetConfigs(se)
	pod1, err := cs.CoreV1().Pods(ns).Get(ctx, "reviews-1", metav1.GetOptions{})
	must(err)
	pod1.Status.PodIP, pod1.Status.PodIPs, pod1.Status.Phase = "10.1.0.1", []corev1.PodIP{{IP: "10.1.0.1"}}, corev1.PodRunning
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod1, metav1.UpdateOptions{})
	must(err)
	waitFor(t, reg, "pod selected by a ServiceEntry", func(s *registry.Snapshot) error {
		eps := s.EndpointsOf("legacy.example.com")
		if len(eps) != 1 || eps[0].Address != "10.1.0.1" || eps[0].ServiceAccount != "reviews" || eps[0].Locality != "eu/eu-2/rack7" {
			return fmt.Errorf("endpoints %+v", eps)
		}
		return nil
	})
	must(cs.CoreV1().Pods(ns).Delete(ctx, "reviews-1", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}))
	waitFor(t, reg, "deleted pod unselected", func(s *registry.Snapshot) error {
		if eps := s.EndpointsOf("legacy.example.com"); len(eps) != 0 {
			return fmt.Errorf("endpoints %+v", eps)
		}
		return nil
	})

	// Deleting the headless service removes its per-pod hosts too.
	must(cs.CoreV1().Services(ns).Delete(ctx, "db", metav1.DeleteOptions{}))
	waitFor(t, reg, "headless delete", func(s *registry.Snapshot) error {
		for _, h := range []string{"db.shop.svc.cluster.local", "db-0.db.shop.svc.cluster.local", "db-1.db.shop.svc.cluster.local"} {
			if len(s.ServicesByHost(h)) > 0 {
				return fmt.Errorf("%s still registered", h)
			}
		}
		return nil
	})
}
