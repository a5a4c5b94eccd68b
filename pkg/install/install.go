package install

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Manifest renders the chart for o and rel: the CRD documents, then the
// templates' documents.
func (c *Chart) Manifest(o Options, rel Release) ([]Document, error) {
	vals, err := c.Values(o)
	if err != nil {
		return nil, err
	}
	return c.manifest(vals, rel)
}

func (c *Chart) manifest(vals map[string]any, rel Release) ([]Document, error) {
	docs, err := c.Render(vals, rel)
	if err != nil {
		return nil, err
	}
	var out []Document
	for _, d := range splitDocs(string(c.CRDs)) {
		out = append(out, Document{Source: c.Name + "/crds", YAML: d})
	}
	return append(out, docs...), nil
}

// Install applies the chart to the cluster: the release namespace, the
// CRDs (labelled with the release so `uninstall --purge` finds them), then
// everything else in dependency order; with wait > 0 it then waits that
// long for the workloads to become ready, printing progress.
func Install(ctx context.Context, cl *Client, c *Chart, o Options, rel Release, wait time.Duration) error {
	vals, err := c.Values(o)
	if err != nil {
		return err
	}
	docs, err := c.manifest(vals, rel)
	if err != nil {
		return err
	}
	objs, err := Objects(docs)
	if err != nil {
		return err
	}
	ns := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": rel.Namespace},
	}}
	for _, u := range objs {
		l := u.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l["app.kubernetes.io/instance"], l["app.kubernetes.io/part-of"] = rel.Name, "weft"
		u.SetLabels(l)
		if u.GetNamespace() == "" && namespaced(u.GetKind()) {
			u.SetNamespace(rel.Namespace)
		}
	}
	fmt.Fprintf(cl.Out, "Installing weft %s (profile %s) into namespace %s\n", c.AppVersion, vals["profile"], rel.Namespace)
	if err := cl.Apply(ctx, append([]*unstructured.Unstructured{ns}, objs...)); err != nil {
		return err
	}
	fmt.Fprintf(cl.Out, "✔ %d objects applied\n", len(objs))
	if err := cl.Prune(ctx, rel.Name, rel.Namespace, objs); err != nil {
		return fmt.Errorf("removing objects of the previous installation: %w", err)
	}
	if wait <= 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return cl.WaitReady(wctx, objs)
}

func namespaced(kind string) bool {
	switch kind {
	case "Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
		"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
		return false
	}
	return true
}
