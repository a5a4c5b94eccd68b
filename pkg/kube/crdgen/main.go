// Command crdgen writes the Istio CustomResourceDefinitions Weft serves to
// manifests/crds/istio.yaml (or the file given as its only argument).
// Run it from the repository root: go run ./pkg/kube/crdgen
package main

import (
	"fmt"
	"os"

	"github.com/weftmesh/weft/pkg/kube/crd"
)

func main() {
	out := "manifests/crds/istio.yaml"
	if len(os.Args) > 1 {
		out = os.Args[1]
	}
	b, err := crd.YAML(crd.All())
	if err == nil {
		err = os.WriteFile(out, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}
