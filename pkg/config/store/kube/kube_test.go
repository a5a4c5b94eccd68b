package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	meshv1 "istio.io/api/mesh/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/storetest"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
)

// cluster starts an API server with the Istio CRDs installed and returns
// a client configuration and the kubeconfig path.
func cluster(t *testing.T) (*rest.Config, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	kc := cl.WriteKubeconfig(t)
	for _, f := range []string{"istio.yaml", "gateway-api.yaml"} {
		out, err := exec.Command("kubectl", "--kubeconfig", kc, "apply", "-f", "../../../../manifests/crds/"+f).CombinedOutput()
		if err != nil {
			t.Fatalf("install CRDs %s: %v\n%s", f, err, out)
		}
	}
	// Kubernetes namespaces must exist before anything is stored in them.
	for _, ns := range []string{"ns1", "ns2", "ns3"} {
		if out, err := exec.Command("kubectl", "--kubeconfig", kc, "create", "namespace", ns).CombinedOutput(); err != nil {
			t.Fatalf("create namespace %s: %v\n%s", ns, err, out)
		}
	}
	if out, err := exec.Command("kubectl", "--kubeconfig", kc, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all").CombinedOutput(); err != nil {
		t.Fatalf("CRDs not established: %v\n%s", err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	return cfg, kc
}

// wipe deletes every Istio custom resource, so each conformance test
// starts from an empty store.
func wipe(t *testing.T, cfg *rest.Config) {
	t.Helper()
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(cfg)
	s, err := Open(ctx, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, gvr := range s.gvrs {
		list, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range list.Items {
			if err := dyn.Resource(gvr).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs, _, _ := s.List(ctx, "", "")
		if len(rs) == 0 && len(s.Invalid()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d resources left after wipe", len(rs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKubeStore shares one API server between its parts (each start
// costs ~10 s).
func TestKubeStore(t *testing.T) {
	cfg, kc := cluster(t)
	t.Run("Conformance", func(t *testing.T) { testConformance(t, cfg) })
	t.Run("KubectlAndInvalid", func(t *testing.T) { wipe(t, cfg); testKubectlAndInvalid(t, cfg, kc) })
	t.Run("UpsertLastWriterWins", func(t *testing.T) { wipe(t, cfg); testUpsertLastWriterWins(t, cfg) })
	t.Run("GatewayAPI", func(t *testing.T) { wipe(t, cfg); testGatewayAPI(t, cfg, kc) })
}

// testGatewayAPI: Gateway API objects go through the store as their own
// custom resources; an Istio Gateway and a Gateway API Gateway of the same
// name live side by side (KubernetesGateway keys the latter), and one
// written with kubectl comes back as KubernetesGateway.
func testGatewayAPI(t *testing.T, cfg *rest.Config, kc string) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rs, err := config.Decode("gw.yaml", []byte(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: ns1}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: ns1}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: web, namespace: ns1}
spec:
  parentRefs: [{name: web}, {group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, store.Upsert, rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		got, err := s.Get(ctx, r.Key())
		if err != nil {
			t.Fatalf("get %s: %v", r.Key(), err)
		}
		if got.Kind != r.Kind || !proto.Equal(got.Spec, r.Spec) {
			t.Errorf("%s came back as %s with spec %v", r.Key(), got.Kind, got.Spec)
		}
	}
	out, err := exec.Command("kubectl", "--kubeconfig", kc, "get", "gateways.gateway.networking.k8s.io", "-n", "ns1", "web", "-o", "jsonpath={.kind} {.spec.gatewayClassName} {.spec.listeners[0].port}").CombinedOutput()
	if err != nil || string(out) != "Gateway istio 80" {
		t.Errorf("kubectl get gateways.gateway.networking.k8s.io: %q %v", out, err)
	}
	apply := exec.Command("kubectl", "--kubeconfig", kc, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: ns2}
spec:
  gatewayClassName: weft
  listeners: [{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}]
`)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	key := config.Key{Kind: config.KindKubernetesGateway, Namespace: "ns2", Name: "other"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, err := s.Get(ctx, key); err == nil {
			if r.APIVersion != "gateway.networking.k8s.io/v1" {
				t.Errorf("apiVersion %q", r.APIVersion)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached the store; invalid: %v", key, s.Invalid())
		}
		time.Sleep(50 * time.Millisecond)
	}
	list, _, err := s.List(ctx, config.KindKubernetesGateway, "")
	if err != nil || len(list) != 2 {
		t.Errorf("List(KubernetesGateway) = %d resources, %v; want 2", len(list), err)
	}

	// Status: the HTTPRoute is accepted by Gateway web and by its Service
	// parent; the Gateway counts it on its listener. A route for a hostname
	// the listener does not take is refused with the Gateway API's reason.
	apply = exec.Command("kubectl", "--kubeconfig", kc, "apply", "-f", "-")
	apply.Stdin = strings.NewReader(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: narrow, namespace: ns1}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: a.example.com}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: ns1}
spec:
  parentRefs: [{name: narrow}]
  hostnames: [b.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: ns1}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tls, port: 8443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: db, port: 5432, protocol: TLS, tls: {certificateRefs: [{name: db-cert, namespace: certs}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: alpha, namespace: ns1}
spec:
  parentRefs: [{name: edge}]
  hostnames: [alpha.example.com]
  rules: [{backendRefs: [{name: alpha, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: echo, namespace: ns1}
spec:
  parentRefs: [{name: edge, sectionName: tcp}, {name: edge, sectionName: tls}]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
`)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.RunStatusWriter(sctx, 50*time.Millisecond)
	jsonpath := func(resource, name, path string) string {
		out, _ := exec.Command("kubectl", "--kubeconfig", kc, "get", resource, "-n", "ns1", name, "-o", "jsonpath="+path).CombinedOutput()
		return string(out)
	}
	for _, tc := range []struct{ resource, name, path, want string }{
		{"httproutes.gateway.networking.k8s.io", "web", `{range .status.parents[*]}{.parentRef.kind}/{.parentRef.name}={.conditions[?(@.type=="Accepted")].status},{.conditions[?(@.type=="ResolvedRefs")].reason};{end}`,
			"Gateway/web=True,ResolvedRefs;Service/web=True,ResolvedRefs;"},
		{"httproutes.gateway.networking.k8s.io", "elsewhere", `{.status.parents[0].controllerName} {.status.parents[0].conditions[?(@.type=="Accepted")].reason}`,
			"istio.io/gateway-controller NoMatchingListenerHostname"},
		{"gateways.gateway.networking.k8s.io", "web", `{.status.conditions[0].type}={.status.conditions[0].status} {.status.listeners[0].name}:{.status.listeners[0].attachedRoutes}`,
			"Accepted=True http:1"},
		// TLS and TCP listeners: supported kinds by protocol and mode, the
		// routes counted; the certificateRef to namespace certs has no
		// ReferenceGrant.
		{"gateways.gateway.networking.k8s.io", "edge", `{range .status.listeners[*]}{.name}:{.attachedRoutes}:{.supportedKinds[*].kind}:{.conditions[?(@.type=="ResolvedRefs")].reason};{end}`,
			"tls:1:TLSRoute:ResolvedRefs;tcp:1:TCPRoute:ResolvedRefs;db:1:TCPRoute TLSRoute:RefNotPermitted;"},
		{"tlsroutes.gateway.networking.k8s.io", "alpha", `{range .status.parents[*]}{.parentRef.name}={.conditions[?(@.type=="Accepted")].status},{.conditions[?(@.type=="ResolvedRefs")].reason};{end}`,
			"edge=True,ResolvedRefs;"},
		{"tcproutes.gateway.networking.k8s.io", "echo", `{range .status.parents[*]}{.parentRef.sectionName}={.conditions[?(@.type=="Accepted")].reason};{end}`,
			"tcp=Accepted;tls=NotAllowedByListeners;"},
	} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := jsonpath(tc.resource, tc.name, tc.path)
			if got == tc.want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s %s status: %q, want %q", tc.resource, tc.name, got, tc.want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The writer settles: the route's status is not rewritten every round.
	rv := jsonpath("httproutes.gateway.networking.k8s.io", "web", "{.metadata.resourceVersion}")
	time.Sleep(500 * time.Millisecond)
	if again := jsonpath("httproutes.gateway.networking.k8s.io", "web", "{.metadata.resourceVersion}"); again != rv {
		t.Errorf("HTTPRoute status rewritten without a change: resourceVersion %s -> %s", rv, again)
	}
}

func testConformance(t *testing.T, cfg *rest.Config) {
	storetest.RunWith(t, func(t *testing.T) store.Store {
		wipe(t, cfg)
		// The suite checks storage semantics with minimal resources that
		// Istio's validation would reject (a VirtualService without
		// routes); validation has its own test below.
		s, err := Open(context.Background(), Options{Config: cfg, History: 100,
			Validate: func(*config.Resource) config.ErrorList { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.Options{PerObjectVersions: true})
}

// testKubectlAndInvalid: resources written with kubectl appear in the
// store; one that fails weft's validation (written while no validating
// webhook runs) is kept out and reported, and fixing it brings it in.
func testKubectlAndInvalid(t *testing.T, cfg *rest.Config, kc string) {
	ctx := context.Background()
	// With the control plane's mesh config the status also reports CUSTOM
	// authorization rules that name no known ext_authz provider.
	mesh := &meshv1.MeshConfig{ExtensionProviders: []*meshv1.MeshConfig_ExtensionProvider{{Name: "opa",
		Provider: &meshv1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp{EnvoyExtAuthzHttp: &meshv1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider{
			Service: "opa.default.svc.cluster.local", Port: 8000}}}}}
	s, err := Open(ctx, Options{Config: cfg, Mesh: mesh})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	events, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.RunStatusWriter(sctx, 50*time.Millisecond)
	dyn := dynamic.NewForConfigOrDie(cfg)
	// waitStatusOf polls a resource's status messages until one contains
	// want; waitStatus those of VirtualService reviews.
	waitStatusOf := func(kind, name, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			u, err := dyn.Resource(s.gvrs[kind]).Namespace("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			msgs, _, _ := unstructured.NestedSlice(u.Object, "status", "validationMessages")
			b, _ := json.Marshal(msgs)
			if strings.Contains(string(b), want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status.validationMessages %s lacks %q", b, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus := func(want string) { t.Helper(); waitStatusOf("VirtualService", "reviews", want) }
	kubectl := func(yaml string) {
		t.Helper()
		cmd := exec.Command("kubectl", "--kubeconfig", kc, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(yaml)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
	}
	kubectl(`apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 110
    - destination: {host: reviews, subset: v2}
      weight: 0
`)
	deadline := time.Now().Add(20 * time.Second)
	key := config.Key{Kind: "VirtualService", Namespace: "default", Name: "reviews"}
	for len(s.Invalid()[key]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("invalid VirtualService not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.Get(ctx, key); err == nil {
		t.Fatal("invalid VirtualService is in the store")
	}
	if got := s.Invalid()[key].Error(); !strings.Contains(got, "spec.http[0].route[1].weight: weights must sum to 100 (got 110)") {
		t.Errorf("problem does not name the field: %s", got)
	}
	waitStatus(`"level":"ERROR","type":{"code":"WEFT0001"}`)
	waitStatus("spec.http[0].route[1].weight: weights must sum to 100 (got 110)")
	kubectl(`apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
`)
	select {
	case ev := <-events:
		if ev.Type != store.Added || ev.Resource.Key() != key {
			t.Fatalf("event %s %s", ev.Type, ev.Resource.Key())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no event for the fixed VirtualService")
	}
	if len(s.Invalid()) != 0 {
		t.Errorf("still reported invalid: %v", s.Invalid())
	}
	// Valid now; the analyzer still warns that no DestinationRule
	// declares subset v1.
	waitStatus(`"type":{"code":"WEFT0102"}`)
	kubectl(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa-typo}
  rules: [{to: [{operation: {paths: ["/admin"]}}]}]
`)
	waitStatusOf("AuthorizationPolicy", "ext", `"type":{"code":"WEFT0108"}`)
	waitStatusOf("AuthorizationPolicy", "ext", `opa-typo`)

	// An ignored (invalid) resource can still be deleted through the
	// store, and Delete reports the deleting resourceVersion.
	kubectl(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken, namespace: default}
spec:
  hosts: [broken]
  http:
  - route:
    - destination: {host: broken}
      weight: 50
    - destination: {host: broken2}
      weight: 10
`)
	bkey := config.Key{Kind: "VirtualService", Namespace: "default", Name: "broken"}
	for len(s.Invalid()[bkey]) == 0 {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatal("invalid VirtualService broken not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, err := dyn.Resource(s.gvrs["VirtualService"]).Namespace("default").Get(ctx, "broken", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	del, err := s.Delete(ctx, bkey, "")
	if err != nil {
		t.Fatalf("Delete of an invalid resource: %v", err)
	}
	if !newerOrEqual(del.Meta.ResourceVersion, before.GetResourceVersion()) || del.Meta.ResourceVersion == before.GetResourceVersion() {
		t.Errorf("Delete returned resourceVersion %s, want the deleting one (after %s)", del.Meta.ResourceVersion, before.GetResourceVersion())
	}
	if _, err := dyn.Resource(s.gvrs["VirtualService"]).Namespace("default").Get(ctx, "broken", metav1.GetOptions{}); err == nil {
		t.Error("broken still in the cluster after Delete")
	}
	if len(s.Invalid()) != 0 {
		t.Errorf("deleted resource still reported invalid: %v", s.Invalid())
	}
	// A valid one: the returned resourceVersion is that of its DELETED event.
	cur, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	del, err = s.Delete(ctx, key, cur.Meta.ResourceVersion)
	if err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-events:
			if ev.Type != store.Deleted {
				continue
			}
			if ev.Resource.Meta.ResourceVersion != del.Meta.ResourceVersion || del.Meta.ResourceVersion == cur.Meta.ResourceVersion {
				t.Fatalf("Delete returned resourceVersion %s, DELETED event %s, before %s", del.Meta.ResourceVersion, ev.Resource.Meta.ResourceVersion, cur.Meta.ResourceVersion)
			}
			return
		case <-time.After(20 * time.Second):
			t.Fatal("no DELETED event")
		}
	}
}

// testUpsertLastWriterWins: an Upsert without a resourceVersion (kubectl
// apply, weft apply) never fails with a conflict because someone else (a
// concurrent writer, the status writer) changed the object between the
// store's read and its write.
func testUpsertLastWriterWins(t *testing.T, cfg *rest.Config) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Config: cfg, Validate: func(*config.Resource) config.ErrorList { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{storetest.VS("default", "lww", "v0")}); err != nil {
		t.Fatal(err)
	}
	const rounds, writers = 5, 4
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make([]error, writers)
		start := make(chan struct{})
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = s.Apply(ctx, store.Upsert, []*config.Resource{storetest.VS("default", "lww", fmt.Sprintf("r%d-w%d", round, i))})
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d writer %d: %v", round, i, err)
			}
		}
	}
}
