package install

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/pkg/kube/kubetest"
)

var (
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	pdbs        = schema.GroupVersionResource{Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}
	mutating    = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}
	crds        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// TestInstallUpgradeUninstall installs the demo profile into a real
// kube-apiserver, switches to the default profile (the egress gateway is
// pruned, the PodDisruptionBudget appears), and uninstalls: CRDs stay
// until --purge.
func TestInstallUpgradeUninstall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := cl.WriteKubeconfig(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	exists := func(gvr schema.GroupVersionResource, ns, name string) bool {
		t.Helper()
		var err error
		if ns == "" {
			_, err = dyn.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		} else {
			_, err = dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	chart := loadChart(t)
	rel := Release{Name: "weft", Namespace: "weft-system", Service: "weft"}
	var out bytes.Buffer
	client, err := NewClient(cfg, &out)
	if err != nil {
		t.Fatal(err)
	}

	// No kubelet runs here, so nothing becomes ready: the wait times out
	// naming what it waited for, after everything was applied.
	err = Install(ctx, client, chart, Options{Sets: []string{"profile=demo"}}, rel, 3*time.Second)
	if err == nil || !strings.Contains(err.Error(), "not ready: Deployment weft-system/weft 0/1 ready") {
		t.Fatalf("install --wait: %v\n%s", err, out.String())
	}
	for _, want := range []string{"profile demo", "CustomResourceDefinitions established", "applied Deployment weft-system/weft-egressgateway",
		"applied MutatingWebhookConfiguration weft-sidecar-injector-weft-system", "waiting for Deployment weft-system/weft 0/1 ready"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress output lacks %q:\n%s", want, out.String())
		}
	}
	if !exists(deployments, "weft-system", "weft-egressgateway") || !exists(mutating, "", "weft-sidecar-injector-weft-system") || !exists(crds, "", "virtualservices.networking.istio.io") {
		t.Fatal("demo objects missing")
	}
	if exists(pdbs, "weft-system", "weft") {
		t.Error("demo profile created a PodDisruptionBudget")
	}

	out.Reset()
	if err := Install(ctx, client, chart, Options{Sets: []string{"profile=default"}}, rel, 0); err != nil {
		t.Fatalf("upgrade to default: %v\n%s", err, out.String())
	}
	if exists(deployments, "weft-system", "weft-egressgateway") {
		t.Errorf("egress gateway not pruned:\n%s", out.String())
	}
	if !exists(pdbs, "weft-system", "weft") || !exists(deployments, "weft-system", "weft-ingressgateway") {
		t.Error("default profile objects missing")
	}

	if err := client.DeleteReleased(ctx, "weft", "weft-system", false); err != nil {
		t.Fatal(err)
	}
	if exists(deployments, "weft-system", "weft") || exists(mutating, "", "weft-sidecar-injector-weft-system") {
		t.Error("uninstall left objects behind")
	}
	if !exists(crds, "", "virtualservices.networking.istio.io") {
		t.Error("uninstall without purge deleted the CRDs")
	}
	if err := client.DeleteReleased(ctx, "weft", "weft-system", true); err != nil {
		t.Fatal(err)
	}
	// CRD deletion is asynchronous (finalizer); it must at least be under way.
	deadline := time.Now().Add(30 * time.Second)
	for exists(crds, "", "virtualservices.networking.istio.io") {
		if time.Now().After(deadline) {
			t.Fatal("uninstall --purge left the CRDs")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The same chart installs with helm itself (the seed's production
	// path), and weft uninstall removes what helm created (same labels).
	helm := findHelm(t)
	if out, err := exec.CommandContext(ctx, helm, "install", "weft", chartDir, "--kubeconfig", kc, "--namespace", "weft-system",
		"--create-namespace", "-f", filepath.Join(chartDir, "profiles", "minimal.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	if !exists(deployments, "weft-system", "weft") || !exists(crds, "", "virtualservices.networking.istio.io") || exists(deployments, "weft-system", "weft-ingressgateway") {
		t.Fatal("helm install of the minimal profile did not create the expected objects")
	}
	if err := client.DeleteReleased(ctx, "weft", "weft-system", false); err != nil {
		t.Fatal(err)
	}
	if exists(deployments, "weft-system", "weft") {
		t.Error("weft uninstall left the helm-installed control plane")
	}
}
