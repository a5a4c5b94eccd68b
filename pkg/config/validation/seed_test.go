package validation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSeedFixtures(t *testing.T) {
	for _, dir := range []string{"seed", "fixed"} {
		files, err := filepath.Glob(filepath.Join("..", "testdata", dir, "*.yaml"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no fixtures in %s: %v", dir, err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rs, errs := ParseFile(f, data)
			if len(errs) > 0 || len(rs) != 1 {
				t.Errorf("%s: got %d resources, problems:\n%v", f, len(rs), errs)
			}
		}
	}
}

func TestSeedEnvoyFilterRejected(t *testing.T) {
	f := filepath.Join("..", "testdata", "invalid", "envoy-filter.yaml")
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	rs, errs := ParseFile(f, data)
	if len(rs) != 0 {
		t.Fatalf("got %d resources, want none", len(rs))
	}
	msg := errs.Error()
	for _, want := range []string{
		"envoy-filter.yaml:1: EnvoyFilter default/custom-header-filter: apiVersion:",
		"served at networking.istio.io/v1alpha3",
		"envoy-filter.yaml:14: EnvoyFilter default/custom-header-filter: spec.configPatches[0].patches: unknown field \"patches\"",
		"did you mean \"patch\"?",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors do not contain %q:\n%s", want, msg)
		}
	}
	if len(errs) != 2 {
		t.Errorf("got %d errors, want 2:\n%s", len(errs), msg)
	}
}

func TestKubernetesObjectsSkipped(t *testing.T) {
	f := filepath.Join("..", "testdata", "kube", "namespace-deployment.yaml")
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	rs, errs := ParseFile(f, data)
	if len(rs) != 1 || rs[0].Key().String() != "PeerAuthentication myapp/default-mtls" {
		t.Fatalf("got %v, want only the PeerAuthentication; problems:\n%v", rs, errs)
	}
	if len(errs) != 2 || len(errs.Errors()) != 0 {
		t.Fatalf("want 2 warnings, got:\n%v", errs)
	}
	for i, want := range []string{
		"namespace-deployment.yaml:2: warning: Namespace: apiVersion: skipped: Namespace (v1) is not an Istio resource",
		"namespace-deployment.yaml:9: warning: Deployment: apiVersion: skipped: Deployment (apps/v1) is not an Istio resource",
	} {
		if !strings.HasSuffix(errs[i].Error(), want) && !strings.Contains(errs[i].Error(), want) {
			t.Errorf("problem %d = %q, want %q", i, errs[i], want)
		}
	}
}
