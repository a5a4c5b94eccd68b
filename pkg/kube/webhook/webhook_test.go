package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftmesh/weft/pkg/kube/inject"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
)

// startServer runs a webhook over real TLS on 127.0.0.1:0 and returns its
// base URL and a client trusting its certificate.
func startServer(t *testing.T) (string, *http.Client) {
	t.Helper()
	certPEM, keyPEM, err := SelfSigned([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Inject: inject.Config{Image: "weft:test", ControlPlane: "cp:15010"}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, cert) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return "https://" + ln.Addr().String(), c
}

func post(t *testing.T, c *http.Client, url string, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	t.Helper()
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: req,
	})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s", resp.Status)
	}
	var rev admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&rev); err != nil {
		t.Fatal(err)
	}
	if rev.Kind != "AdmissionReview" || rev.Response == nil || rev.Response.UID != req.UID {
		t.Fatalf("bad review %+v", rev)
	}
	return rev.Response
}

// applyAdds applies a JSON patch made only of "add" ops on existing parents.
func applyAdds(t *testing.T, doc []byte, patch []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	var ops []struct {
		Op, Path string
		Value    any
	}
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		parts := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		if op.Op != "add" || len(parts) != 2 {
			t.Fatalf("unexpected op %+v", op)
		}
		parent, ok := m[parts[0]].(map[string]any)
		if !ok {
			t.Fatalf("parent of %s missing", op.Path)
		}
		parent[parts[1]] = op.Value
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func podRequest(t *testing.T, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID: types.UID("u-" + pod.Name), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Namespace: "myapp", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
	}
}

func TestInjectEndpoint(t *testing.T) {
	base, c := startServer(t)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "httpd", Image: "docker.io/httpd:2.4"}}},
	}
	req := podRequest(t, pod)
	resp := post(t, c, base+PathInject, req)
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v", resp)
	}
	var got corev1.Pod
	if err := json.Unmarshal(applyAdds(t, req.Object.Raw, resp.Patch), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.InitContainers) != 2 || got.Spec.InitContainers[1].Name != inject.ProxyContainerName || got.Spec.Containers[0].Name != "httpd" {
		t.Fatalf("patched pod: %+v", got.Spec)
	}
	if got.Labels["app"] != "web" || got.Annotations[inject.AnnotationStatus] == "" {
		t.Fatalf("metadata: %+v", got.ObjectMeta)
	}

	// Opted out: allowed, no patch.
	pod.Labels[inject.KeyInject] = "false"
	if resp := post(t, c, base+PathInject, podRequest(t, pod)); !resp.Allowed || resp.Patch != nil {
		t.Fatalf("opt-out response %+v", resp)
	}
	// Bad annotation: denied with the reason.
	pod.Labels[inject.KeyInject] = "true"
	pod.Annotations = map[string]string{inject.AnnotationExcludeIn: "nope"}
	if resp := post(t, c, base+PathInject, podRequest(t, pod)); resp.Allowed || !strings.Contains(resp.Result.Message, `invalid port "nope"`) {
		t.Fatalf("bad annotation response %+v", resp)
	}
}

const vsTemplate = `{"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
"metadata":{"name":"reviews","namespace":"myapp","uid":"x","managedFields":[]},
"spec":{"hosts":["reviews"],"http":[{"route":[{"destination":{"host":"reviews","subset":"v1"},"weight":WEIGHT},{"destination":{"host":"reviews","subset":"v2"},"weight":0}]}]}}`

func TestValidateEndpoint(t *testing.T) {
	base, c := startServer(t)
	tests := []struct {
		name    string
		kind    string
		obj     string
		op      admissionv1.Operation
		allowed bool
		msg     string
	}{
		{"valid", "VirtualService", strings.Replace(vsTemplate, "WEIGHT", "100", 1), admissionv1.Create, true, ""},
		{"weight 110", "VirtualService", strings.Replace(vsTemplate, "WEIGHT", "110", 1), admissionv1.Update, false, "VirtualService myapp/reviews: spec.http[0].route[1].weight: weights must sum to 100 (got 110)"},
		{"unknown field", "VirtualService", `{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"a"},"spec":{"hostz":["a"]}}`, admissionv1.Create, false, "hostz"},
		{"delete ignored", "VirtualService", "", admissionv1.Delete, true, ""},
		{"not istio", "ConfigMap", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`, admissionv1.Create, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := &admissionv1.AdmissionRequest{
				UID: "u", Kind: metav1.GroupVersionKind{Group: "networking.istio.io", Version: "v1", Kind: tc.kind},
				Namespace: "myapp", Operation: tc.op,
			}
			if tc.obj != "" {
				req.Object.Raw = []byte(tc.obj)
			}
			resp := post(t, c, base+PathValidate, req)
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed = %v, want %v (%+v)", resp.Allowed, tc.allowed, resp.Result)
			}
			if tc.msg != "" && !strings.Contains(resp.Result.Message, tc.msg) {
				t.Fatalf("message %q lacks %q", resp.Result.Message, tc.msg)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	base, c := startServer(t)
	for _, tc := range []struct{ ct, body string }{
		{"text/plain", "{}"},
		{"application/json", "{"},
		{"application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`},
	} {
		resp, err := c.Post(base+PathInject, tc.ct, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("%s %q: status 200", tc.ct, tc.body)
		}
	}
}

func TestConfigurations(t *testing.T) {
	cc := ClientConfig{URL: "https://127.0.0.1:15017", CABundle: []byte("ca")}
	m := MutatingConfiguration("weft-sidecar-injector", cc)
	if len(m.Webhooks) != 2 || *m.Webhooks[0].ClientConfig.URL != "https://127.0.0.1:15017/inject" {
		t.Fatalf("mutating %+v", m.Webhooks)
	}
	v := ValidatingConfiguration("weft-validator", ClientConfig{ServiceNamespace: "weft-system", ServiceName: "weft", CABundle: []byte("ca")})
	svc := v.Webhooks[0].ClientConfig.Service
	if svc == nil || *svc.Path != "/validate" || *svc.Port != 443 {
		t.Fatalf("validating client config %+v", v.Webhooks[0].ClientConfig)
	}
	found := false
	for _, r := range v.Webhooks[0].Rules {
		for _, res := range r.Resources {
			found = found || (r.APIGroups[0] == "networking.istio.io" && res == "virtualservices")
		}
	}
	if !found {
		t.Fatalf("virtualservices not covered: %+v", v.Webhooks[0].Rules)
	}
}

// TestCABundlePatcher patches configurations stored in a real API server
// (created without a bundle, as the chart does) and repairs one that is
// re-created.
func TestCABundlePatcher(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := cl.Clientset(t)
	cc := ClientConfig{ServiceNamespace: "weft-system", ServiceName: "weft"}
	mw := MutatingConfiguration("inj", cc)
	vw := ValidatingConfiguration("val", cc)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, vw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, _, err := SelfSigned([]string{"weft.weft-system.svc"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := &CABundlePatcher{Client: cs, Mutating: "inj", Validating: "val", CABundle: ca}
	check := func() {
		t.Helper()
		m, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "inj", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, "val", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range m.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, ca) {
				t.Errorf("mutating %s: caBundle not patched", w.Name)
			}
		}
		for _, w := range v.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, ca) {
				t.Errorf("validating %s: caBundle not patched", w.Name)
			}
		}
	}
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check()
	if err := p.Sync(ctx); err != nil { // nothing to change: no update
		t.Fatal(err)
	}
	// Re-created without a bundle (uninstall + install): Run repairs it.
	if err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, "inj", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, MutatingConfiguration("inj", cc), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(rctx, 50*time.Millisecond); close(done) }()
	time.Sleep(500 * time.Millisecond)
	rcancel()
	<-done
	check()
	missing := &CABundlePatcher{Client: cs, Mutating: "nope", CABundle: ca}
	if err := missing.Sync(ctx); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing configuration: %v", err)
	}
}
