package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

func ptr[T any](v T) *T { return &v }

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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func podEndpoint(ip, pod string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod}}
}

func endpointSlice(name, svc, portName string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr(portName), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}
}

// clusterHosts reads the proxy's /clusters and returns the hosts of
// cluster name, sorted.
func clusterHosts(admin, name string) ([]string, error) {
	resp, err := http.Get("http://" + admin + "/clusters")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, "::"); len(f) == 4 && f[0] == name && f[2] == "rq_total" {
			hosts = append(hosts, f[1])
		}
	}
	sort.Strings(hosts)
	return hosts, nil
}

// hostIP returns a non-loopback, non-link-local IPv4 address of this host
// (the test is skipped without one).
func hostIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	must(t, err)
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip := n.IP.To4(); ip != nil && ip.IsGlobalUnicast() {
				return ip.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address for a pod endpoint")
	return ""
}

func hostsAre(admin, cluster string, want ...string) func() error {
	return func() error {
		got, err := clusterHosts(admin, cluster)
		if err != nil {
			return err
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("cluster %s hosts %v, want %v", cluster, got, want)
		}
		return nil
	}
}

// TestKubernetesMesh: the control plane watches the API server (Istio
// CRDs as the store, the cluster as the registry); a proxy
// started as pod shop/productpage-1 with its service account's projected
// token gets its certificate from the CA (TokenReview) and the reviews
// endpoints from EndpointSlices, following scale up and down; a
// ServiceEntry selects pods; headless and ExternalName services become
// clusters; auto mTLS checks the endpoint pods' service accounts; istio-ca-root-cert appears in new
// namespaces.
func TestKubernetesMesh(t *testing.T) {
	harness.SkipShort(t)
	cl := kubetest.Start(t)
	kc := cl.WriteKubeconfig(t)
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	must(t, err)
	cs, err := kubernetes.NewForConfig(rc)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const ns = "shop"
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	must(t, err)
	for _, sa := range []string{"productpage", "reviews"} {
		_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		must(t, err)
	}
	_, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a",
		Labels: map[string]string{"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-1"}}}, metav1.CreateOptions{})
	must(t, err)
	for _, p := range []struct{ name, sa, app string }{
		{"productpage-1", "productpage", "productpage"}, {"reviews-1", "reviews", "reviews"}, {"reviews-2", "reviews", "reviews"}, {"reviews-3", "reviews", "reviews"},
	} {
		_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Labels: map[string]string{"app": p.app}},
			Spec:       corev1.PodSpec{ServiceAccountName: p.sa, NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: p.app}}},
		}, metav1.CreateOptions{})
		must(t, err)
	}
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "reviews"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 9080, TargetPort: intstr.FromInt(9080)}}},
	}, metav1.CreateOptions{})
	must(t, err)
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice("reviews-1", "reviews", "http", 9080,
		podEndpoint("10.1.0.1", "reviews-1"), podEndpoint("10.1.0.2", "reviews-2")), metav1.CreateOptions{})
	must(t, err)

	// Istio config from the CRDs (the kube store), services and the CA's
	// identities from the cluster.
	modRoot, err := harness.ModuleRoot()
	must(t, err)
	if out, err := kubectl(ctx, kc, nil, "apply", "-f", filepath.Join(modRoot, "manifests/crds/istio.yaml")); err != nil {
		t.Fatalf("install CRDs: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, kc, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatalf("CRDs: %v\n%s", err, out)
	}
	bin := weft.Binary(t)
	dataDir := t.TempDir()
	cp := harness.StartControlPlane(t, bin, "--kubeconfig", kc, "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "20ms")
	xds := cp.ListenAddress(t, "xDS server")
	caAddr := cp.ListenAddress(t, "CA")

	// The CA root, as a pod would mount it from istio-ca-root-cert.
	var root string
	waitFor(t, "istio-ca-root-cert in shop", 30*time.Second, func() error {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		root = cm.Data["root-cert.pem"]
		if !strings.Contains(root, "BEGIN CERTIFICATE") {
			return fmt.Errorf("root-cert.pem = %q", root)
		}
		return nil
	})
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "root-cert.pem")
	must(t, os.WriteFile(rootFile, []byte(root), 0o644))
	// The projected token, as the injector mounts it (audience istio-ca).
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "productpage", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{"istio-ca"}, ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	must(t, err)
	tokFile := filepath.Join(dir, "istio-token")
	must(t, os.WriteFile(tokFile, []byte(tr.Status.Token), 0o600))

	ready := filepath.Join(dir, "ready.json")
	px := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", ns, "--workload", "productpage-1",
		"--service-account", "productpage", "--labels", "app=productpage",
		"--ca-address", caAddr, "--ca-root-cert", rootFile, "--ca-token-file", tokFile,
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	var addrs struct{ Admin, Outbound string }
	must(t, json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, px)), &addrs))
	// The log reaches the test through a pipe: poll, the ready file may
	// be seen first.
	waitFor(t, "the proxy's SPIFFE identity from the service-account token in its log", 10*time.Second, func() error {
		if !strings.Contains(px.Stderr(), "spiffe_id=spiffe://cluster.local/ns/shop/sa/productpage") {
			return fmt.Errorf("not logged:\n%s", px.Stderr())
		}
		return nil
	})

	const reviews = "outbound|9080||reviews.shop.svc.cluster.local"
	waitFor(t, "reviews endpoints at the proxy", 30*time.Second, hostsAre(addrs.Admin, reviews, "10.1.0.1:9080", "10.1.0.2:9080"))

	// Scale up: a third pod's endpoint in a second slice.
	start := time.Now()
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice("reviews-2", "reviews", "http", 9080, podEndpoint("10.1.0.3", "reviews-3")), metav1.CreateOptions{})
	must(t, err)
	waitFor(t, "scale up", 30*time.Second, hostsAre(addrs.Admin, reviews, "10.1.0.1:9080", "10.1.0.2:9080", "10.1.0.3:9080"))
	t.Logf("EndpointSlice create → proxy /clusters: %s", time.Since(start).Round(time.Millisecond))
	// Scale down: the first slice loses a pod, the second is deleted.
	sl, err := cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, "reviews-1", metav1.GetOptions{})
	must(t, err)
	sl.Endpoints = sl.Endpoints[:1]
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{})
	must(t, err)
	must(t, cs.DiscoveryV1().EndpointSlices(ns).Delete(ctx, "reviews-2", metav1.DeleteOptions{}))
	waitFor(t, "scale down", 30*time.Second, hostsAre(addrs.Admin, reviews, "10.1.0.1:9080"))

	// A ServiceEntry applied with kubectl selects pods by label: the pod's
	// IP and the entry's targetPort reach the proxy.
	pod2, err := cs.CoreV1().Pods(ns).Get(ctx, "reviews-2", metav1.GetOptions{})
	must(t, err)
	pod2.Status.PodIP, pod2.Status.PodIPs, pod2.Status.Phase = "10.1.0.2", []corev1.PodIP{{IP: "10.1.0.2"}}, corev1.PodRunning
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod2, metav1.UpdateOptions{})
	must(t, err)
	se := []byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: reviews}}
`)
	if out, err := kubectl(ctx, kc, se, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply ServiceEntry: %v\n%s", err, out)
	}
	waitFor(t, "pod selected by a ServiceEntry", 30*time.Second, hostsAre(addrs.Admin, "outbound|80||legacy.example.com", "10.1.0.2:8080"))

	// Headless: one endpoint per pod, and a host per pod hostname.
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "tcp-mysql", Port: 3306}}}}, metav1.CreateOptions{})
	must(t, err)
	e0, e1 := podEndpoint("10.1.1.1", "reviews-1"), podEndpoint("10.1.1.2", "reviews-2")
	e0.Hostname, e1.Hostname = ptr("db-0"), ptr("db-1")
	_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice("db-1", "db", "tcp-mysql", 3306, e0, e1), metav1.CreateOptions{})
	must(t, err)
	waitFor(t, "headless endpoints", 30*time.Second, hostsAre(addrs.Admin, "outbound|3306||db.shop.svc.cluster.local", "10.1.1.1:3306", "10.1.1.2:3306"))
	waitFor(t, "headless per-pod host", 30*time.Second, hostsAre(addrs.Admin, "outbound|3306||db-1.db.shop.svc.cluster.local", "10.1.1.2:3306"))

	// ExternalName: a DNS cluster for the external name.
	_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "payments"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost", Ports: []corev1.ServicePort{{Name: "http", Port: 8443}}}}, metav1.CreateOptions{})
	must(t, err)
	waitFor(t, "ExternalName cluster", 30*time.Second, func() error {
		resp, err := http.Get("http://" + addrs.Admin + "/config_dump")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !regexp.MustCompile(`outbound\|8443\|\|payments\.shop\.svc\.cluster\.local`).Match(b) || !strings.Contains(string(b), "STRICT_DNS") {
			return fmt.Errorf("config_dump lacks the payments DNS cluster")
		}
		return nil
	})

	// Mutual TLS between "pods": a server proxy holding a certificate for
	// shop/reviews (from its token) is the endpoint of two services. Auto
	// mTLS checks the server's SPIFFE ID against the service account of the
	// endpoint's pod: "secure" (pod SA reviews) works, "imposter" (pod SA
	// productpage) is refused.
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from reviews") })}
	appLis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go func() { _ = app.Serve(appLis) }()
	t.Cleanup(func() { app.Close() })
	revTok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "reviews", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{"istio-ca"}, ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	must(t, err)
	revTokFile := filepath.Join(dir, "reviews-token")
	must(t, os.WriteFile(revTokFile, []byte(revTok.Status.Token), 0o600))
	// EndpointSlices may not hold loopback addresses: the server proxy's
	// inbound listener binds this host's first non-loopback IPv4 address.
	podIP := hostIP(t)
	srvReady := filepath.Join(dir, "server-ready.json")
	srvPx := harness.Start(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", ns, "--workload", "reviews-9",
		"--service-account", "reviews", "--labels", "app=reviews", "--app-port", strconv.Itoa(appLis.Addr().(*net.TCPAddr).Port),
		"--ca-address", caAddr, "--ca-root-cert", rootFile, "--ca-token-file", revTokFile,
		"--inbound-address", net.JoinHostPort(podIP, "0"), "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", srvReady)
	var srvAddrs struct{ Inbound string }
	must(t, json.Unmarshal([]byte(harness.WaitForFile(t, srvReady, 30*time.Second, srvPx)), &srvAddrs))
	_, inPort, err := net.SplitHostPort(srvAddrs.Inbound)
	must(t, err)
	inPortN, err := strconv.Atoi(inPort)
	must(t, err)
	meshed := map[string]string{"app": "secure", "security.istio.io/tlsMode": "istio"}
	for _, p := range []struct{ pod, sa, svc string }{{"reviews-9", "reviews", "secure"}, {"imposter-1", "productpage", "imposter"}} {
		_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.pod, Labels: meshed},
			Spec: corev1.PodSpec{ServiceAccountName: p.sa, Containers: []corev1.Container{{Name: "app", Image: "x"}}}}, metav1.CreateOptions{})
		must(t, err)
		_, err = cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: p.svc},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}}}, metav1.CreateOptions{})
		must(t, err)
		_, err = cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice(p.svc+"-1", p.svc, "http", int32(inPortN), podEndpoint(podIP, p.pod)), metav1.CreateOptions{})
		must(t, err)
	}
	ou, err := url.Parse("http://" + addrs.Outbound)
	must(t, err)
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(ou), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func(u string) (int, string) {
		resp, err := hc.Get(u)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "mTLS request to the pod with the right service account", 30*time.Second, func() error {
		if code, body := get("http://secure.shop.svc.cluster.local:9080/"); code != 200 || body != "hello from reviews" {
			return fmt.Errorf("got %d %q", code, body)
		}
		return nil
	})
	waitFor(t, "SAN in the client's cluster", 10*time.Second, func() error {
		resp, err := http.Get("http://" + addrs.Admin + "/config_dump")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "spiffe://cluster.local/ns/shop/sa/reviews") || !strings.Contains(string(b), "spiffe://cluster.local/ns/shop/sa/productpage") {
			return fmt.Errorf("config_dump lacks the endpoints' SPIFFE IDs")
		}
		return nil
	})
	if code, body := get("http://imposter.shop.svc.cluster.local:9080/"); code != http.StatusServiceUnavailable {
		t.Fatalf("imposter (server identity reviews, pod service account productpage): got %d %q, want 503", code, body)
	}

	// A namespace created now gets the root ConfigMap too.
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "late"}}, metav1.CreateOptions{})
	must(t, err)
	waitFor(t, "istio-ca-root-cert in a new namespace", 30*time.Second, func() error {
		cm, err := cs.CoreV1().ConfigMaps("late").Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data["root-cert.pem"] != root {
			return fmt.Errorf("root differs")
		}
		return nil
	})

	// A token for another service account's audience is refused: a proxy
	// with a token of the kube-apiserver audience gets no certificate.
	bad, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "reviews", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	must(t, err)
	badFile := filepath.Join(dir, "wrong-audience")
	must(t, os.WriteFile(badFile, []byte(bad.Status.Token), 0o600))
	res := harness.Run(t, bin, nil, "proxy", "--control-plane", xds, "--namespace", ns, "--workload", "reviews-1",
		"--ca-address", caAddr, "--ca-root-cert", rootFile, "--ca-token-file", badFile, "--ca-wait", "2s",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "",
		"--metrics-address", "", "--health-address", "", "--status-address", "")
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "no workload certificate") {
		t.Fatalf("proxy with a wrong-audience token: exit %d\n%s", res.ExitCode, res.Stderr)
	}
}
