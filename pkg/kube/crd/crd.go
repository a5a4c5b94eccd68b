// Package crd renders CustomResourceDefinitions for every Istio kind in
// pkg/config's schema table, so a Kubernetes API server can store them.
// Specs are schemaless (x-kubernetes-preserve-unknown-fields); the
// validating webhook (pkg/kube/webhook) checks their content.
package crd

import (
	"bytes"
	"fmt"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/pkg/config"
)

// CRD is the subset of apiextensions.k8s.io/v1 CustomResourceDefinition
// Weft writes (the upstream Go types live in the heavy apiextensions module).
type CRD struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata is the CRD's object metadata.
type Metadata struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Spec is a CustomResourceDefinitionSpec.
type Spec struct {
	Group    string    `json:"group"`
	Names    Names     `json:"names"`
	Scope    string    `json:"scope"`
	Versions []Version `json:"versions"`
}

// Names are the kind's names.
type Names struct {
	Kind       string   `json:"kind"`
	ListKind   string   `json:"listKind"`
	Plural     string   `json:"plural"`
	Singular   string   `json:"singular"`
	ShortNames []string `json:"shortNames,omitempty"`
	Categories []string `json:"categories,omitempty"`
}

// Version is one served version.
type Version struct {
	Name         string       `json:"name"`
	Served       bool         `json:"served"`
	Storage      bool         `json:"storage"`
	Subresources Subresources `json:"subresources"`
	Schema       Validation   `json:"schema"`
}

// Subresources enables /status.
type Subresources struct {
	Status struct{} `json:"status"`
}

// Validation holds the OpenAPI schema.
type Validation struct {
	OpenAPIV3Schema Schema `json:"openAPIV3Schema"`
}

// Schema is a (tiny) OpenAPI v3 schema.
type Schema struct {
	Type                  string            `json:"type"`
	Description           string            `json:"description,omitempty"`
	Properties            map[string]Schema `json:"properties,omitempty"`
	PreserveUnknownFields *bool             `json:"x-kubernetes-preserve-unknown-fields,omitempty"`
}

// ForSchema returns the CRD of one kind; its versions keep the schema's
// order, the first (storage) version marked as storage.
func ForSchema(s config.Schema) CRD {
	t := true
	open := Schema{Type: "object", PreserveUnknownFields: &t}
	versions := make([]Version, len(s.Versions))
	for i, v := range s.Versions {
		spec, status := open, open
		spec.Description = fmt.Sprintf("Istio %s spec; validated by the weft webhook.", s.Kind)
		if s.Group == config.GroupGatewayAPI {
			spec.Description = fmt.Sprintf("Gateway API %s spec (trimmed, schemaless CRD); validated by the weft webhook.", s.WireKind())
		}
		versions[i] = Version{
			Name: v, Served: true, Storage: i == 0,
			Schema: Validation{OpenAPIV3Schema: Schema{Type: "object", Properties: map[string]Schema{"spec": spec, "status": status}}},
		}
	}
	group := strings.ReplaceAll(s.Group, ".", "-")
	categories := []string{"istio-io", group}
	if s.Group == config.GroupGatewayAPI {
		categories = []string{"gateway-api"}
	}
	scope := "Namespaced"
	if s.ClusterScoped {
		scope = "Cluster"
	}
	kind := s.WireKind()
	meta := Metadata{Name: s.Plural + "." + s.Group, Labels: map[string]string{"app.kubernetes.io/part-of": "weft"}}
	if strings.HasSuffix(s.Group, ".k8s.io") {
		// API servers refuse CRDs in *.k8s.io groups without this
		// annotation; the value is the upstream Gateway API's approval.
		meta.Annotations = map[string]string{"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}
	}
	return CRD{
		APIVersion: "apiextensions.k8s.io/v1",
		Kind:       "CustomResourceDefinition",
		Metadata:   meta,
		Spec: Spec{
			Group: s.Group,
			Names: Names{
				Kind: kind, ListKind: kind + "List", Plural: s.Plural, Singular: strings.ToLower(kind),
				ShortNames: s.ShortNames, Categories: categories,
			},
			Scope:    scope,
			Versions: versions,
		},
	}
}

// All returns the CRDs of every kind in config.Schemas(), in table order:
// Istio's, then the Gateway API's.
func All() []CRD { return append(Istio(), GatewayAPI()...) }

// Istio returns the CRDs of the Istio kinds (manifests/crds/istio.yaml and
// the Helm chart's crds/).
func Istio() []CRD { return forGroups(false) }

// GatewayAPI returns trimmed, schemaless stand-ins for the Gateway API CRDs
// weft reads (GatewayClass, Gateway, HTTPRoute; v1 storage, v1beta1
// served), for clusters without the upstream CRDs
// (manifests/crds/gateway-api.yaml). They are not in the Helm chart, so
// installing weft never replaces upstream Gateway API CRDs.
func GatewayAPI() []CRD { return forGroups(true) }

func forGroups(gatewayAPI bool) []CRD {
	var out []CRD
	for _, s := range config.Schemas() {
		if (s.Group == config.GroupGatewayAPI) == gatewayAPI {
			out = append(out, ForSchema(s))
		}
	}
	return out
}

// YAML renders crds as one multi-document YAML stream.
func YAML(crds []CRD) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Code generated by go run ./pkg/kube/crdgen; DO NOT EDIT.\n")
	for _, c := range crds {
		y, err := yaml.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("crd %s: %w", c.Metadata.Name, err)
		}
		b.WriteString("---\n")
		b.Write(y)
	}
	return b.Bytes(), nil
}
