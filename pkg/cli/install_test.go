package cli

import (
	"io"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/pkg/install"
)

// TestChartArgsAreWeftFlags renders the chart with every component on
// and parses the arguments of each container running the weft image with
// this binary's own command tree: the chart can only name commands and
// flags that exist.
func TestChartArgsAreWeftFlags(t *testing.T) {
	c, err := loadChart()
	if err != nil {
		t.Fatal(err)
	}
	docs, err := c.Manifest(install.Options{Sets: []string{"profile=demo", "cni.enabled=true"}}, release("weft-system"))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, d := range docs {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal([]byte(d.YAML), &kind); err != nil {
			t.Fatal(err)
		}
		var spec corev1.PodSpec
		switch kind.Kind {
		case "Deployment":
			var dep appsv1.Deployment
			if err := yaml.Unmarshal([]byte(d.YAML), &dep); err != nil {
				t.Fatal(err)
			}
			spec = dep.Spec.Template.Spec
		case "DaemonSet":
			var ds appsv1.DaemonSet
			if err := yaml.Unmarshal([]byte(d.YAML), &ds); err != nil {
				t.Fatal(err)
			}
			spec = ds.Spec.Template.Spec
		default:
			continue
		}
		for _, ctr := range spec.Containers {
			if !strings.Contains(ctr.Image, "/weft:") {
				continue
			}
			root := NewRoot(strings.NewReader(""), io.Discard, io.Discard)
			cmd, rest, err := root.Find(ctr.Args)
			if err != nil || cmd == root {
				t.Errorf("%s container %s: no command for %v: %v", d.Source, ctr.Name, ctr.Args, err)
				continue
			}
			if err := cmd.ParseFlags(rest); err != nil {
				t.Errorf("%s container %s: %q: %v", d.Source, ctr.Name, cmd.CommandPath(), err)
			}
			checked++
		}
	}
	if checked < 5 { // control plane, webhook, two gateways, CNI installer
		t.Errorf("checked only %d containers", checked)
	}
}
