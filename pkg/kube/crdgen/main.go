// Command crdgen writes the Istio CustomResourceDefinitions Weft serves to
// manifests/crds/istio.yaml and the Helm chart's crds/istio.yaml (or to
// the files given as arguments).
// Run it from the repository root: go run ./pkg/kube/crdgen
package main

import (
	"fmt"
	"os"

	"github.com/weftmesh/weft/pkg/kube/crd"
)

func main() {
	outs := []string{"manifests/crds/istio.yaml", "manifests/charts/weft/crds/istio.yaml"}
	if len(os.Args) > 1 {
		outs = os.Args[1:]
	}
	b, err := crd.YAML(crd.All())
	for _, out := range outs {
		if err == nil {
			err = os.WriteFile(out, b, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}
