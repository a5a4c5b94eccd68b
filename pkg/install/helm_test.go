package install

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// findHelm returns the helm binary hack/helm.sh builds into .cache/bin,
// or one on PATH.
func findHelm(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if p := filepath.Join(dir, ".cache", "bin", "helm"); fileExists(p) {
				return p
			}
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Skip("helm not found: run hack/helm.sh")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

const chartDir = "../../manifests/charts/weft"

// objectsByKey parses a YAML stream into kind/namespace/name → object.
func objectsByKey(t *testing.T, stream string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, d := range splitDocs(stream) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d), &m); err != nil {
			t.Fatalf("%v\n%s", err, d)
		}
		if m == nil {
			continue
		}
		md, _ := m["metadata"].(map[string]any)
		out[m["kind"].(string)+"/"+str(md["namespace"])+"/"+str(md["name"])] = m
	}
	return out
}

func str(v any) string { s, _ := v.(string); return s }

// TestHelmTemplateEquivalence renders the chart with helm itself and with
// weft for every profile plus extra values; the objects must be equal, so
// `helm install` and `weft install` install the same thing.
func TestHelmTemplateEquivalence(t *testing.T) {
	helm := findHelm(t)
	if out, err := exec.Command(helm, "lint", chartDir, "--strict").CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	c := loadChart(t)
	for _, tc := range []struct {
		profile string
		sets    []string
	}{
		{"default", nil},
		{"minimal", nil},
		{"demo", nil},
		{"default", []string{"cni.enabled=true,controlPlane.replicas=2", "global.hub=reg.example/x", "gateways.ingress.service.type=NodePort"}},
	} {
		t.Run(tc.profile+"/"+strings.Join(tc.sets, ";"), func(t *testing.T) {
			args := []string{"template", "weft", chartDir, "--namespace", "weft-system", "--include-crds",
				"-f", filepath.Join(chartDir, "profiles", tc.profile+".yaml")}
			for _, s := range tc.sets {
				args = append(args, "--set", s)
			}
			hout, err := exec.Command(helm, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, hout)
			}
			docs, err := c.Manifest(Options{Sets: append([]string{"profile=" + tc.profile}, tc.sets...)},
				Release{Name: "weft", Namespace: "weft-system", Service: "Helm"})
			if err != nil {
				t.Fatal(err)
			}
			var ours strings.Builder
			for _, d := range docs {
				ours.WriteString("---\n" + d.YAML)
			}
			want, got := objectsByKey(t, string(hout)), objectsByKey(t, ours.String())
			if len(want) < 10 {
				t.Fatalf("helm rendered only %d objects", len(want))
			}
			for k, w := range want {
				g, ok := got[k]
				if !ok {
					t.Errorf("weft did not render %s", k)
					continue
				}
				if !reflect.DeepEqual(w, g) {
					wj, _ := json.MarshalIndent(w, "", " ")
					gj, _ := json.MarshalIndent(g, "", " ")
					t.Errorf("%s differs:\nhelm: %s\nweft: %s", k, wj, gj)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("weft rendered %s, helm did not", k)
				}
			}
		})
	}
}
