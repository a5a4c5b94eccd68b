package kube_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSidecarDoesNotImportKubernetes keeps the proxy slim: Kubernetes
// libraries stay in pkg/kube (and the CLI wiring it).
func TestSidecarDoesNotImportKubernetes(t *testing.T) {
	for _, pkg := range []string{"../../pkg/proxy/..."} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		var bad []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "k8s.io/") || strings.HasPrefix(l, "sigs.k8s.io/") {
				bad = append(bad, l)
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s depends on Kubernetes packages: %v", pkg, bad)
		}
	}
}
