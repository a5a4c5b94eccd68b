// Package kube_test runs Weft's Kubernetes pieces against a real etcd and
// kube-apiserver: the Istio CRDs are installed, the API server calls the
// weft webhook over TLS to inject sidecars and to validate Istio resources.
package kube_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/pkg/kube/crd"
	"github.com/weftmesh/weft/pkg/kube/inject"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/pkg/kube/webhook"
)

func TestAPIServerWebhooks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	installCRDs(ctx, t, cl)
	base := startWebhook(ctx, t, cl)
	t.Logf("webhook at %s", base)

	ns, dep := seed(t)
	if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces", ns, nil); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}}
	if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces", plain, nil); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// No controller manager runs: create the default service accounts the
	// ServiceAccount admission plugin looks up.
	for _, n := range []string{ns.Name, plain.Name} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+n+"/serviceaccounts", sa, nil); err != nil {
			t.Fatalf("create service account: %v", err)
		}
	}

	// The API server picks up new webhook configurations asynchronously:
	// retry until the invalid VirtualService is rejected by our webhook.
	kc := cl.WriteKubeconfig(t)
	invalid := virtualService("reviews", 110)
	var out string
	deadline := time.Now().Add(60 * time.Second)
	for {
		var err error
		out, err = kubectl(ctx, kc, invalid, "apply", "-f", "-")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("invalid VirtualService accepted: %s", out)
		}
		// Accepted before the webhook was active: remove and retry.
		if _, err := kubectl(ctx, kc, nil, "delete", "-n", "myapp", "virtualservice", "reviews"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, want := range []string{`admission webhook "` + webhook.ValidationWebhook + `" denied the request`, "VirtualService myapp/reviews: spec.http[0].route[1].weight: weights must sum to 100 (got 110)"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl output lacks %q:\n%s", want, out)
		}
	}
	if out, err := kubectl(ctx, kc, virtualService("reviews", 100), "apply", "-f", "-"); err != nil {
		t.Fatalf("valid VirtualService rejected: %v\n%s", err, out)
	}
	var stored map[string]any
	if err := cl.Do(ctx, http.MethodGet, "/apis/networking.istio.io/v1/namespaces/myapp/virtualservices/reviews", nil, &stored); err != nil {
		t.Fatalf("get VirtualService: %v", err)
	}
	if fmt.Sprint(stored["spec"]) == "" || !strings.Contains(fmt.Sprint(stored["spec"]), "reviews") {
		t.Fatalf("stored VirtualService: %v", stored)
	}

	// A pod from the seed Deployment's template, created through the API
	// server in the labelled namespace, comes back with the sidecar.
	var got corev1.Pod
	var proxy *corev1.Container
	for i := 0; proxy == nil; i++ {
		// The mutating configuration was created before the validating
		// one, which is active now; retry in case its informer lags.
		if i == 20 {
			t.Fatalf("stored pod has no native weft-proxy sidecar: %+v", got.Spec.InitContainers)
		}
		pod := &corev1.Pod{ObjectMeta: *dep.Spec.Template.ObjectMeta.DeepCopy(), Spec: *dep.Spec.Template.Spec.DeepCopy()}
		pod.Name = fmt.Sprintf("http-server-%d", i)
		if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces/myapp/pods", pod, nil); err != nil {
			t.Fatalf("create pod: %v", err)
		}
		if err := cl.Do(ctx, http.MethodGet, "/api/v1/namespaces/myapp/pods/"+pod.Name, nil, &got); err != nil {
			t.Fatal(err)
		}
		for j := range got.Spec.InitContainers {
			if got.Spec.InitContainers[j].Name == inject.ProxyContainerName {
				proxy = &got.Spec.InitContainers[j]
			}
		}
		if proxy == nil {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways || proxy.Image != "ghcr.io/weftmesh/weft:test" {
		t.Fatalf("weft-proxy is not a native sidecar: %+v", proxy)
	}
	if got.Spec.Containers[0].Image != "docker.io/httpd:2.4" || got.Labels[inject.LabelTLSMode] != "istio" {
		t.Fatalf("stored pod: %+v", got)
	}

	// Negative cases: no sidecar in an unlabelled namespace, nor for a pod
	// that opts out in the labelled one.
	for _, c := range []struct {
		ns, name string
		labels   map[string]string
	}{
		{"plain", "no-label", map[string]string{"app": "x"}},
		{"myapp", "opt-out", map[string]string{"app": "x", inject.KeyInject: "false"}},
	} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: c.name, Labels: c.labels}, Spec: dep.Spec.Template.Spec}
		var g corev1.Pod
		if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+c.ns+"/pods", p, &g); err != nil {
			t.Fatalf("create pod %s: %v", c.name, err)
		}
		if len(g.Spec.InitContainers) != 0 {
			t.Errorf("pod %s/%s injected: %+v", c.ns, c.name, g.Spec.InitContainers)
		}
	}
}

func installCRDs(ctx context.Context, t *testing.T, cl *kubetest.Cluster) {
	t.Helper()
	for _, c := range crd.All() {
		if err := cl.Do(ctx, http.MethodPost, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", c, nil); err != nil {
			t.Fatalf("create CRD %s: %v", c.Metadata.Name, err)
		}
	}
	for _, c := range crd.All() {
		waitFor(ctx, t, "CRD "+c.Metadata.Name+" established", func() (bool, error) {
			var got struct {
				Status struct {
					Conditions []struct{ Type, Status, Message string } `json:"conditions"`
				} `json:"status"`
			}
			if err := cl.Do(ctx, http.MethodGet, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+c.Metadata.Name, nil, &got); err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == "NamesAccepted" && cond.Status == "False" {
					return false, errors.New(cond.Message)
				}
				if cond.Type == "Established" && cond.Status == "True" {
					return true, nil
				}
			}
			return false, nil
		})
	}
}

func startWebhook(ctx context.Context, t *testing.T, cl *kubetest.Cluster) string {
	t.Helper()
	certPEM, keyPEM, err := webhook.SelfSigned([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := webhook.New(webhook.Options{Inject: inject.Config{Image: "ghcr.io/weftmesh/weft:test", ControlPlane: "weft.weft-system.svc:15010"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln, cert) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook: %v", err)
		}
	})
	base := "https://" + ln.Addr().String()
	cc := webhook.ClientConfig{URL: base, CABundle: certPEM}
	if err := cl.Do(ctx, http.MethodPost, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations", webhook.MutatingConfiguration("weft-sidecar-injector", cc), nil); err != nil {
		t.Fatalf("create mutating webhook configuration: %v", err)
	}
	if err := cl.Do(ctx, http.MethodPost, "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", webhook.ValidatingConfiguration("weft-validator", cc), nil); err != nil {
		t.Fatalf("create validating webhook configuration: %v", err)
	}
	return base
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// seed reads the Namespace and Deployment of the seed fixture.
func seed(t *testing.T) (*corev1.Namespace, *appsv1.Deployment) {
	t.Helper()
	b, err := os.ReadFile("../../pkg/kube/inject/testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := docSep.Split(string(b), -1)
	var ns corev1.Namespace
	var dep appsv1.Deployment
	if err := yaml.Unmarshal([]byte(docs[0]), &ns); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(docs[1]), &dep); err != nil {
		t.Fatal(err)
	}
	if ns.Name != "myapp" || dep.Name != "http-server" {
		t.Fatalf("unexpected seed: %s %s", ns.Name, dep.Name)
	}
	return &ns, &dep
}

func virtualService(name string, weight int) []byte {
	return []byte(fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %s
  namespace: myapp
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: %d
    - destination: {host: reviews, subset: v2}
      weight: 0
`, name, weight))
}

func kubectl(ctx context.Context, kubeconfig string, stdin []byte, args ...string) (string, error) {
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		return "", fmt.Errorf("kubectl: %w", err)
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func waitFor(ctx context.Context, t *testing.T, what string, f func() (bool, error)) {
	t.Helper()
	for {
		ok, err := f()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
