package translate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
	meshv1 "istio.io/api/mesh/v1alpha1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// testProxy is the test-only document kind "TestProxy" in testdata files:
// a proxy that registers with the registry; the one with target: true (or
// the first) is the one translated.
type testProxy struct {
	Kind           string            `yaml:"kind"`
	ID             string            `yaml:"id"`
	Target         bool              `yaml:"target"`
	Labels         map[string]string `yaml:"labels"`
	InboundAddress string            `yaml:"inboundAddress"`
	Services       []string          `yaml:"services"`
	AppPorts       []uint32          `yaml:"appPorts"`
	Locality       string            `yaml:"locality"`
	ServiceAccount string            `yaml:"serviceAccount"`
	Metadata       map[string]string `yaml:"metadata"`
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// loadCase reads a testdata YAML file: Istio resources plus TestProxy docs.
func loadCase(t testing.TB, path string) (*Input, *model.Proxy) {
	t.Helper()
	in, target, _ := loadCaseAll(t, path)
	return in, target
}

// loadCaseAll is loadCase that also returns every TestProxy of the file.
func loadCaseAll(t testing.TB, path string) (*Input, *model.Proxy, []*model.Proxy) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var istio []string
	var proxies []*model.Proxy
	var target *model.Proxy
	var mesh *meshv1.MeshConfig
	mtls := false
	for _, doc := range docSep.Split(string(data), -1) {
		var head struct {
			Kind string `yaml:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if head.Kind == "TestMeshConfig" { // the mesh config, under `mesh:`
			var mc struct {
				Mesh yaml.Node `yaml:"mesh"`
			}
			if err := yaml.Unmarshal([]byte(doc), &mc); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			b, err := yaml.Marshal(&mc.Mesh)
			if err != nil {
				t.Fatal(err)
			}
			if mesh, err = meshconfig.Parse(path, b); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if head.Kind == "TestOptions" { // Input switches: mtls (the mesh has a CA)
			var o struct {
				MTLS bool `yaml:"mtls"`
			}
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			mtls = o.MTLS
			continue
		}
		if head.Kind != "TestProxy" {
			istio = append(istio, doc)
			continue
		}
		var tp testProxy
		if err := yaml.Unmarshal([]byte(doc), &tp); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p, err := model.ParseNodeID(tp.ID)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for k, v := range tp.Labels {
			p.Labels[k] = v
		}
		p.InboundAddress, p.Services, p.AppPorts = tp.InboundAddress, tp.Services, tp.AppPorts
		p.ServiceAccount = tp.ServiceAccount
		for k, v := range tp.Metadata {
			p.Metadata[k] = v
		}
		if tp.Locality != "" {
			p.Metadata["LOCALITY"] = tp.Locality
		}
		proxies = append(proxies, p)
		if tp.Target || target == nil {
			if tp.Target || len(proxies) == 1 {
				target = p
			}
		}
	}
	rs, err := config.Decode(filepath.Base(path), []byte(strings.Join(istio, "\n---\n")))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if target == nil {
		t.Fatalf("%s: no TestProxy document", path)
	}
	reg := registry.New(nil)
	reg.SetConfigs(rs)
	for _, p := range proxies {
		reg.UpsertProxy(p)
	}
	return &Input{Configs: rs, Registry: reg.Snapshot(), Credentials: testCredentials, Mesh: mesh, MTLS: mtls}, target, proxies
}

func testCredentials(ns, name string) (Credential, bool) {
	if name == "partner-cert" && ns == "istio-system" {
		return Credential{Cert: []byte("-----BEGIN CERTIFICATE-----\npartner\n-----END CERTIFICATE-----\n"), Key: []byte("-----BEGIN PRIVATE KEY-----\npartner\n-----END PRIVATE KEY-----\n"),
			CA: []byte("-----BEGIN CERTIFICATE-----\npartner-ca\n-----END CERTIFICATE-----\n")}, true
	}
	if strings.HasPrefix(name, "kubernetes-gateway://certs/") {
		// Any Secret of namespace certs; the translator checks the grant.
		return Credential{Cert: []byte("-----BEGIN CERTIFICATE-----\n" + name + "\n-----END CERTIFICATE-----\n"), Key: []byte("-----BEGIN PRIVATE KEY-----\nshared\n-----END PRIVATE KEY-----\n")}, true
	}
	if name == "bookinfo-cert" {
		return Credential{Cert: []byte("-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"), Key: []byte("-----BEGIN PRIVATE KEY-----\ntest\n-----END PRIVATE KEY-----\n")}, true
	}
	return Credential{}, false
}

// renderOutput renders an Output as stable, indented JSON.
func renderOutput(t testing.TB, out *Output) []byte {
	t.Helper()
	section := func(rs []types.Resource) []json.RawMessage {
		list := []json.RawMessage{}
		for _, r := range rs {
			b, err := protojson.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			list = append(list, b)
		}
		return list
	}
	doc := struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
	}{section(out.Listeners), section(out.Routes), section(out.Clusters), section(out.Endpoints)}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if len(files) < 20 {
		t.Fatalf("want at least 20 golden cases, found %d", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			in, p := loadCase(t, f)
			out, err := Build(in, p)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got := renderOutput(t, out)
			// Determinism: a second build renders identically.
			out2, err := Build(in, p)
			if err != nil {
				t.Fatal(err)
			}
			if again := renderOutput(t, out2); !bytes.Equal(got, again) {
				t.Fatal("two builds of the same input differ")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/xds/translate -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the build output; run with -update and review the diff", golden)
			}
		})
	}
}
