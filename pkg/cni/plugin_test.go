package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/pkg/kube/inject"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/pkg/netnstest"
)

// The plugin test runs this test binary the way a container runtime runs
// a CNI plugin: CNI_* environment, configuration on stdin.
func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" {
		Main()
		return
	}
	os.Exit(m.Run())
}

// prevResult is what the bridge plugin before us in the chain returned.
const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.88.0.7/16","gateway":"10.88.0.1","interface":0}]}`

type invocation struct {
	command, netns, ns, pod string
}

// runPlugin executes the plugin and returns stdout, and the error if it
// exited non-zero.
func runPlugin(t *testing.T, kubeconfig string, inv invocation) (string, error) {
	t.Helper()
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"weft-cni",
"kubernetes":{"kubeconfig":%q,"exclude_namespaces":["kube-system"]},"prevResult":%s}`, kubeconfig, prevResult)
	cmd := exec.Command(os.Args[0])
	args := ""
	if inv.pod != "" {
		args = fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=abc", inv.ns, inv.pod)
	}
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+inv.command, "CNI_CONTAINERID=abc", "CNI_NETNS="+inv.netns,
		"CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin", "CNI_ARGS="+args)
	cmd.Stdin = strings.NewReader(conf)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%w: stdout %s stderr %s", err, stdout.String(), stderr.String())
	}
	return stdout.String(), err
}

func natRules(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v\n%s", err, out)
	}
	return string(out)
}

// TestPluginAgainstAPIServer invokes the plugin by hand (as the CNI spec
// allows) for pods stored in a real kube-apiserver: an injected pod gets
// the capture rules in its network namespace, with its annotations'
// exclusions; a pod without the sidecar, and a pod in an excluded
// namespace, get none; the previous plugin's result passes through.
func TestPluginAgainstAPIServer(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "iptables-save")
	cl := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kc := cl.WriteKubeconfig(t)

	for _, n := range []string{"shop", "kube-system"} {
		if n != "kube-system" {
			if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, nil); err != nil {
				t.Fatalf("namespace %s: %v", n, err)
			}
		}
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+n+"/serviceaccounts", sa, nil); err != nil && !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("service account in %s: %v", n, err)
		}
	}
	app := corev1.Container{Name: "app", Image: "httpd"}
	ann := map[string]string{inject.AnnotationExcludeIn: "9999", inject.AnnotationExcludeOut: "5432"}
	raw := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Namespace: "shop", Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{app}}}
	meshed, ok, err := inject.Inject(raw, nil, inject.Config{Image: "weft:test", ControlPlane: "weft:15010", CNI: true})
	if err != nil || !ok {
		t.Fatalf("inject: %v %v", ok, err)
	}
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "shop"}, Spec: corev1.PodSpec{Containers: []corev1.Container{app}}}
	system := meshed.DeepCopy()
	system.Namespace = "kube-system"
	for _, p := range []*corev1.Pod{meshed, plain, system} {
		if err := cl.Do(ctx, http.MethodPost, "/api/v1/namespaces/"+p.Namespace+"/pods", p, nil); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}

	check := func(t *testing.T, pod, podNS string, wantCapture bool) {
		ns := netnstest.New(t, "wcni")
		out, err := runPlugin(t, kc, invocation{command: "ADD", netns: "/var/run/netns/" + ns, ns: podNS, pod: pod})
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			CNIVersion string `json:"cniVersion"`
			IPs        []struct {
				Address string `json:"address"`
			} `json:"ips"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) != 1 || res.IPs[0].Address != "10.88.0.7/16" || res.CNIVersion != "1.0.0" {
			t.Errorf("result does not pass prevResult through: %v %s", err, out)
		}
		rules := natRules(t, ns)
		if !wantCapture {
			if strings.Contains(rules, "ISTIO_") {
				t.Errorf("pod %s/%s captured:\n%s", podNS, pod, rules)
			}
			return
		}
		for _, want := range []string{
			"-A PREROUTING -p tcp -j ISTIO_INBOUND",
			"-A OUTPUT -p tcp -j ISTIO_OUTPUT",
			"-A ISTIO_INBOUND -p tcp -m tcp --dport 9999 -j RETURN",
			"-A ISTIO_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
			"--uid-owner 1337 -j RETURN",
			"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
			"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		} {
			if !strings.Contains(rules, want) {
				t.Errorf("rules lack %q:\n%s", want, rules)
			}
		}
		// The plugin's own namespace (the host's, here) is untouched.
		if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(out), "--dport 9999 -j RETURN") {
			t.Errorf("rules leaked into the host namespace:\n%s", out)
		}
	}
	t.Run("meshed", func(t *testing.T) { check(t, "meshed", "shop", true) })
	t.Run("no sidecar", func(t *testing.T) { check(t, "plain", "shop", false) })
	t.Run("excluded namespace", func(t *testing.T) { check(t, "meshed", "kube-system", false) })
	t.Run("not kubernetes", func(t *testing.T) { check(t, "", "", false) })

	t.Run("missing pod", func(t *testing.T) {
		ns := netnstest.New(t, "wcnx")
		out, err := runPlugin(t, kc, invocation{command: "ADD", netns: "/var/run/netns/" + ns, ns: "shop", pod: "ghost"})
		if err == nil || !strings.Contains(out, "shop/ghost") || !strings.Contains(out, `"code"`) {
			t.Fatalf("want a CNI error naming the pod, got %v: %s", err, out)
		}
	})
	t.Run("version and del", func(t *testing.T) {
		out, err := runPlugin(t, kc, invocation{command: "VERSION"})
		if err != nil || !strings.Contains(out, `"1.0.0"`) {
			t.Fatalf("VERSION: %v %s", err, out)
		}
		ns := netnstest.New(t, "wcnd")
		if _, err := runPlugin(t, kc, invocation{command: "DEL", netns: "/var/run/netns/" + ns, ns: "shop", pod: "meshed"}); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	})
}
