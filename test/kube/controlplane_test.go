package kube_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/kube/kubetest"
	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestControlPlaneKubeMode runs `weft control-plane --kubeconfig` against a
// real API server: the seed's Istio YAML applied with kubectl reaches a
// `weft proxy` process, an edit and a delete follow, and `weft get`/`weft
// apply` through the control plane read and write the custom resources.
func TestControlPlaneKubeMode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, kube-apiserver and weft processes")
	}
	cl := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := cl.WriteKubeconfig(t)
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(ctx, kc, nil, "apply", "-f", filepath.Join(root, "manifests/crds/istio.yaml")); err != nil {
		t.Fatalf("install CRDs: %v\n%s", err, out)
	}
	if out, err := kubectl(ctx, kc, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatalf("CRDs: %v\n%s", err, out)
	}
	bin := weft.Binary(t)
	cp := harness.StartControlPlane(t, bin, "--kubeconfig", kc, "--data-dir", t.TempDir(), "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0")

	ready := filepath.Join(t.TempDir(), "ready.json")
	p := harness.Start(t, bin, nil, "proxy", "--control-plane", cp.XDSAddress, "--namespace", "default", "--workload", "client",
		"--inbound-address", "127.0.0.1:0", "--outbound-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
		"--metrics-address", "", "--health-address", "", "--status-address", "", "--ready-file", ready)
	var addrs struct{ Admin string }
	if err := json.Unmarshal([]byte(harness.WaitForFile(t, ready, 30*time.Second, p)), &addrs); err != nil {
		t.Fatal(err)
	}
	configDump := func() string {
		resp, err := http.Get("http://" + addrs.Admin + "/config_dump")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitDump := func(what string, want bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for strings.Contains(configDump(), what) != want {
			if time.Now().After(deadline) {
				t.Fatalf("proxy config: contains %q = %v, want %v\nproxy: %s\ncontrol plane: %s", what, !want, want, p.Stderr(), cp.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	for _, f := range []string{"service-entry.yaml", "virtual-service.yaml", "peer-authentication.yaml", "request-authentication.yaml"} {
		if out, err := kubectl(ctx, kc, nil, "apply", "-n", "default", "-f", filepath.Join(root, "pkg/config/testdata/seed", f)); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, out)
		}
	}
	waitDump("extsvc.example.com", true)
	waitDump(`"/v1"`, true)

	edited, err := os.ReadFile(filepath.Join(root, "pkg/config/testdata/seed/virtual-service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(ctx, kc, []byte(strings.Replace(string(edited), "prefix: /v1", "prefix: /v2", 1)), "apply", "-n", "default", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply edit: %v\n%s", err, out)
	}
	waitDump(`"/v2"`, true)

	// The control plane's own API reads and writes the custom resources.
	got := harness.Run(t, bin, nil, "get", "virtualservices", "--server", cp.URL)
	if got.ExitCode != 0 || !strings.Contains(got.Stdout, "ext-service-routes") {
		t.Fatalf("weft get: %+v", got)
	}
	dr := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ext, namespace: default}\nspec:\n  host: extsvc.example.com\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}\n"
	if res := harness.RunStdin(t, bin, nil, dr, "apply", "-f", "-", "--server", cp.URL); res.ExitCode != 0 {
		t.Fatalf("weft apply: %+v", res)
	}
	if out, err := kubectl(ctx, kc, nil, "get", "destinationrules", "-n", "default", "ext", "-o", "jsonpath={.spec.trafficPolicy.loadBalancer.simple}"); err != nil || out != "RANDOM" {
		t.Fatalf("kubectl get the DestinationRule weft applied: %v %q", err, out)
	}
	waitDump("RANDOM", true)

	if out, err := kubectl(ctx, kc, nil, "delete", "-n", "default", "virtualservice", "ext-service-routes"); err != nil {
		t.Fatalf("kubectl delete: %v\n%s", err, out)
	}
	waitDump(`"/v2"`, false)

	// Status written back by the control plane (the weft-status Lease
	// holder): an analyzer warning on a valid resource, and the errors of
	// one that fails validation (no webhook runs here, so the API server
	// stores it); the invalid one never reaches the proxy, and `weft
	// delete` removes it from the cluster.
	warn := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: warn, namespace: default}\nspec:\n  hosts: [warn.example.com]\n  gateways: [missing-gateway]\n  http:\n  - route:\n    - destination: {host: warn.example.com}\n"
	invalid := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: default}\nspec:\n  hosts: [extsvc.example.com]\n  http:\n  - match: [{uri: {prefix: /never-pushed}}]\n    route:\n    - destination: {host: extsvc.example.com}\n      weight: 50\n    - destination: {host: other.example.com}\n      weight: 10\n"
	for _, y := range []string{warn, invalid} {
		if out, err := kubectl(ctx, kc, []byte(y), "apply", "-f", "-"); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
	}
	waitStatus := func(name, want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := kubectl(ctx, kc, nil, "get", "virtualservice", "-n", "default", name, "-o", "jsonpath={.status.validationMessages}")
			if err == nil && strings.Contains(out, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status.validationMessages %q (err %v) lacks %q\ncontrol plane: %s", name, out, err, want, cp.Stderr())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitStatus("warn", "missing-gateway")
	waitStatus("broken", `"level":"ERROR"`)
	waitStatus("broken", "weights must sum to 100")
	waitDump("RANDOM", true) // still serving the rest
	if strings.Contains(configDump(), "/never-pushed") {
		t.Fatal("the invalid VirtualService reached the proxy")
	}
	if res := harness.Run(t, bin, nil, "delete", "virtualservice", "broken", "-n", "default", "--server", cp.URL); res.ExitCode != 0 {
		t.Fatalf("weft delete of the invalid VirtualService: %+v", res)
	}
	if out, err := kubectl(ctx, kc, nil, "get", "virtualservice", "-n", "default", "broken", "--ignore-not-found", "-o", "name"); err != nil || out != "" {
		t.Fatalf("broken still in the cluster after weft delete: %v %q", err, out)
	}

	// The CA keeps its root in a Secret (one root for every replica and
	// restart) and publishes it for workloads.
	if out, err := kubectl(ctx, kc, nil, "get", "secret", "-n", "default", "weft-ca-root", "-o", "jsonpath={.data.root-cert\\.pem}"); err != nil || out == "" {
		t.Errorf("CA root secret: %v %q", err, out)
	}
}
