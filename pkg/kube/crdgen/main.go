// Command crdgen writes the Istio CustomResourceDefinitions Weft serves to
// manifests/crds/istio.yaml and the Helm chart's crds/istio.yaml (or to
// the files given as arguments), and the trimmed Gateway API CRDs to
// manifests/crds/gateway-api.yaml.
// Run it from the repository root: go run ./pkg/kube/crdgen
package main

import (
	"fmt"
	"os"

	"github.com/weftmesh/weft/pkg/kube/crd"
)

func main() {
	outs := []string{"manifests/crds/istio.yaml", "manifests/charts/weft/crds/istio.yaml"}
	gatewayAPI := "manifests/crds/gateway-api.yaml"
	if len(os.Args) > 1 {
		outs, gatewayAPI = os.Args[1:], ""
	}
	b, err := crd.YAML(crd.Istio())
	for _, out := range outs {
		if err == nil {
			err = os.WriteFile(out, b, 0o644)
		}
	}
	if err == nil && gatewayAPI != "" {
		if b, err = crd.YAML(crd.GatewayAPI()); err == nil {
			err = os.WriteFile(gatewayAPI, b, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}
