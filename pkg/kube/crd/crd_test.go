package crd

import (
	"bytes"
	"os"
	"testing"

	"github.com/weftmesh/weft/pkg/config"
)

func TestGeneratedFileUpToDate(t *testing.T) {
	istio, err := YAML(Istio())
	if err != nil {
		t.Fatal(err)
	}
	gwapi, err := YAML(GatewayAPI())
	if err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string][]byte{"manifests/crds/istio.yaml": istio, "manifests/charts/weft/crds/istio.yaml": istio, "manifests/crds/gateway-api.yaml": gwapi} {
		got, err := os.ReadFile("../../../" + f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go run ./pkg/kube/crdgen", f)
		}
	}
}

func TestForSchema(t *testing.T) {
	all := All()
	if len(all) != len(config.Schemas()) {
		t.Fatalf("%d CRDs for %d schemas", len(all), len(config.Schemas()))
	}
	s, _ := config.SchemaForKind(config.KindVirtualService)
	c := ForSchema(*s)
	if c.Metadata.Name != "virtualservices.networking.istio.io" || c.Spec.Names.ShortNames[0] != "vs" || c.Spec.Names.ListKind != "VirtualServiceList" {
		t.Fatalf("names: %+v %+v", c.Metadata, c.Spec.Names)
	}
	storage := 0
	for i, v := range c.Spec.Versions {
		if v.Storage {
			storage++
			if i != 0 {
				t.Errorf("storage version at index %d", i)
			}
		}
		if !v.Served || !*v.Schema.OpenAPIV3Schema.Properties["spec"].PreserveUnknownFields {
			t.Errorf("version %s: %+v", v.Name, v)
		}
	}
	if storage != 1 || c.Spec.Versions[0].Name != "v1" || len(c.Spec.Versions) != 3 {
		t.Fatalf("versions %+v", c.Spec.Versions)
	}
	gw, _ := config.SchemaForKind(config.KindKubernetesGateway)
	if c := ForSchema(*gw); c.Metadata.Name != "gateways.gateway.networking.k8s.io" || c.Spec.Names.Kind != "Gateway" || c.Spec.Scope != "Namespaced" {
		t.Fatalf("Gateway API Gateway CRD: %+v", c)
	}
	gc, _ := config.SchemaForKind(config.KindGatewayClass)
	if c := ForSchema(*gc); c.Spec.Scope != "Cluster" {
		t.Fatalf("GatewayClass CRD scope %q", c.Spec.Scope)
	}
	ep, _ := config.SchemaForKind(config.KindEnvoyFilter)
	if v := ForSchema(*ep).Spec.Versions; len(v) != 1 || v[0].Name != "v1alpha3" || !v[0].Storage {
		t.Fatalf("EnvoyFilter versions %+v", v)
	}
}
