package install

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/manifests/charts"
)

func loadChart(t *testing.T) *Chart {
	t.Helper()
	c, err := Load(charts.FS, "weft")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type object struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   map[string]any `json:"metadata"`
	Spec       map[string]any `json:"spec"`
}

func render(t *testing.T, o Options) map[string]object {
	t.Helper()
	c := loadChart(t)
	vals, err := c.Values(o)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := c.Render(vals, Release{Name: "weft", Namespace: "weft-system", Service: "weft"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]object{}
	for _, d := range docs {
		var obj object
		if err := yaml.Unmarshal([]byte(d.YAML), &obj); err != nil {
			t.Fatalf("%s does not parse: %v\n%s", d.Source, err, d.YAML)
		}
		if obj.Kind == "" || obj.Metadata["name"] == nil {
			t.Fatalf("%s: document without kind/name:\n%s", d.Source, d.YAML)
		}
		key := obj.Kind + "/" + obj.Metadata["name"].(string)
		if _, dup := out[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		out[key] = obj
	}
	return out
}

func TestProfiles(t *testing.T) {
	for _, tc := range []struct {
		profile string
		want    []string
		absent  []string
	}{
		{"default", []string{"Deployment/weft", "Service/weft", "Deployment/weft-ingressgateway", "PodDisruptionBudget/weft",
			"MutatingWebhookConfiguration/weft-sidecar-injector-weft-system", "ValidatingWebhookConfiguration/weft-validator-weft-system", "ClusterRole/weft-weft-system", "ConfigMap/weft"},
			[]string{"Deployment/weft-egressgateway", "DaemonSet/weft-cni-node"}},
		{"minimal", []string{"Deployment/weft"}, []string{"Deployment/weft-ingressgateway", "Deployment/weft-egressgateway"}},
		{"demo", []string{"Deployment/weft-ingressgateway", "Deployment/weft-egressgateway"}, []string{"PodDisruptionBudget/weft"}},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			objs := render(t, Options{Sets: []string{"profile=" + tc.profile}})
			for _, k := range tc.want {
				if _, ok := objs[k]; !ok {
					t.Errorf("missing %s", k)
				}
			}
			for _, k := range tc.absent {
				if _, ok := objs[k]; ok {
					t.Errorf("unexpected %s", k)
				}
			}
			for k, o := range objs {
				if l, _ := o.Metadata["labels"].(map[string]any); l["weft.io/profile"] != tc.profile || l["app.kubernetes.io/instance"] != "weft" {
					t.Errorf("%s labels %v", k, l)
				}
			}
		})
	}
}

func TestSetAndFiles(t *testing.T) {
	objs := render(t, Options{
		Files: []NamedValues{{Name: "v.yaml", Data: []byte("global:\n  hub: registry.example/mesh\n  tag: v9\ncni:\n  enabled: true\n")}},
		Sets:  []string{"controlPlane.replicas=3,gateways.ingress.enabled=false", "cni.excludeNamespaces={a,b}"},
	})
	dep := objs["Deployment/weft"]
	if dep.Spec["replicas"] != float64(3) {
		t.Errorf("replicas = %v", dep.Spec["replicas"])
	}
	if _, ok := objs["Deployment/weft-ingressgateway"]; ok {
		t.Error("--set gateways.ingress.enabled=false ignored")
	}
	ds, ok := objs["DaemonSet/weft-cni-node"]
	if !ok {
		t.Fatal("cni.enabled from the values file ignored")
	}
	b, _ := yaml.Marshal(ds.Spec)
	for _, want := range []string{"registry.example/mesh/weft:v9", "--exclude-namespaces=a,b"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("DaemonSet lacks %q:\n%s", want, b)
		}
	}
}

func TestValuesErrors(t *testing.T) {
	c := loadChart(t)
	if _, err := c.Values(Options{Sets: []string{"profile=huge"}}); err == nil || !strings.Contains(err.Error(), "demo") {
		t.Errorf("unknown profile: %v", err)
	}
	if _, err := c.Values(Options{Sets: []string{"novalue"}}); err == nil {
		t.Error("--set without =: no error")
	}
	if _, err := c.Values(Options{Files: []NamedValues{{Name: "bad.yaml", Data: []byte("a: [")}}}); err == nil || !strings.Contains(err.Error(), "bad.yaml") {
		t.Errorf("bad values file: %v", err)
	}
	vals, err := c.Values(Options{Sets: []string{"gateways.ingress=null"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := vals["gateways"].(map[string]any)["ingress"]; ok {
		t.Error("null did not remove the default")
	}
}

func TestParseSetTypes(t *testing.T) {
	v := map[string]any{}
	for _, s := range []string{"a.b=true", "a.n=42", "a.s=0042", "a.l[1].x=y", "a.list={1,two}"} {
		if err := ParseSet(v, s); err != nil {
			t.Fatal(err)
		}
	}
	a := v["a"].(map[string]any)
	if a["b"] != true || a["n"] != int64(42) || a["s"] != "0042" {
		t.Errorf("scalars: %v", a)
	}
	if l := a["l"].([]any); len(l) != 2 || l[1].(map[string]any)["x"] != "y" {
		t.Errorf("indexed list: %v", a["l"])
	}
	if l := a["list"].([]any); len(l) != 2 || l[0] != int64(1) || l[1] != "two" {
		t.Errorf("list: %v", a["list"])
	}
}
