package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"
)

// FieldManager owns the fields weft install applies (server-side apply).
const FieldManager = "weft-install"

// installOrder is the order kinds are applied in (Helm's, abridged):
// what others refer to comes first; webhooks last so they are never
// called before the service behind them exists.
var installOrder = []string{
	"Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap",
	"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
	"DaemonSet", "Deployment", "StatefulSet", "PodDisruptionBudget",
	"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}

// Objects parses rendered documents (and CRD documents) into objects
// sorted in install order.
func Objects(docs []Document) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, d := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(d.YAML), &u.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", d.Source, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("%s: document without kind or metadata.name", d.Source)
		}
		out = append(out, u)
	}
	sort.SliceStable(out, func(i, j int) bool { return kindRank(out[i].GetKind()) < kindRank(out[j].GetKind()) })
	return out, nil
}

// Client applies and deletes objects through the API server.
type Client struct {
	dyn    dynamic.Interface
	disc   discovery.CachedDiscoveryInterface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// NewClient connects to the cluster cfg describes.
func NewClient(cfg *rest.Config, out io.Writer) (*Client, error) {
	// client-go's default 5 requests/s would make an install of ~50
	// objects (plus discovery) take half a minute.
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = max(cfg.QPS, 50), max(cfg.Burst, 100)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cached := memory.NewMemCacheClient(dc)
	if out == nil {
		out = io.Discard
	}
	return &Client{dyn: dyn, disc: cached, mapper: restmapper.NewDeferredDiscoveryRESTMapper(cached), Out: out}, nil
}

func (c *Client) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		// New CRDs: forget the cached discovery once and retry.
		c.mapper.Reset()
		if m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err)
		}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(u.GetNamespace()), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// Apply server-side-applies objs in order (the caller sorts them, see
// Objects), waiting for CRDs to be established before anything that may
// be an instance of them.
func (c *Client) Apply(ctx context.Context, objs []*unstructured.Unstructured) error {
	var crds []string
	for _, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" && len(crds) > 0 {
			if err := c.waitEstablished(ctx, crds); err != nil {
				return err
			}
			fmt.Fprintf(c.Out, "✔ %d CustomResourceDefinitions established\n", len(crds))
			crds = nil
		}
		r, err := c.resource(u)
		if err != nil {
			return err
		}
		data, err := u.MarshalJSON()
		if err != nil {
			return err
		}
		force := true
		if _, err := r.Patch(ctx, u.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: FieldManager, Force: &force}); err != nil {
			return fmt.Errorf("apply %s %s: %w", u.GetKind(), qualified(u), err)
		}
		if u.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, u.GetName())
		} else {
			fmt.Fprintf(c.Out, "  applied %s %s\n", u.GetKind(), qualified(u))
		}
	}
	return nil
}

func qualified(u *unstructured.Unstructured) string {
	if u.GetNamespace() != "" {
		return u.GetNamespace() + "/" + u.GetName()
	}
	return u.GetName()
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func (c *Client) waitEstablished(ctx context.Context, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, n := range names {
		for {
			u, err := c.dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err == nil && condition(u, "Established") == "True" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not established: %w", n, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	c.mapper.Reset()
	return nil
}

func condition(u *unstructured.Unstructured, typ string) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			return s
		}
	}
	return ""
}

// WaitReady polls the Deployments and DaemonSets among objs until all are
// ready, printing progress, or fails when ctx ends naming the ones that
// are not.
func (c *Client) WaitReady(ctx context.Context, objs []*unstructured.Unstructured) error {
	var workloads []*unstructured.Unstructured
	for _, u := range objs {
		if k := u.GetKind(); k == "Deployment" || k == "DaemonSet" {
			workloads = append(workloads, u)
		}
	}
	last := ""
	for {
		var pending []string
		for _, u := range workloads {
			r, err := c.resource(u)
			if err != nil {
				return err
			}
			cur, err := r.Get(ctx, u.GetName(), metav1.GetOptions{})
			if err != nil {
				pending = append(pending, fmt.Sprintf("%s %s (%v)", u.GetKind(), qualified(u), err))
				continue
			}
			if ready, want := readiness(cur); ready < want || want == 0 && u.GetKind() == "Deployment" {
				pending = append(pending, fmt.Sprintf("%s %s %d/%d ready", u.GetKind(), qualified(u), ready, want))
			}
		}
		if len(pending) == 0 {
			fmt.Fprintf(c.Out, "✔ %d workloads ready\n", len(workloads))
			return nil
		}
		if msg := strings.Join(pending, ", "); msg != last {
			fmt.Fprintf(c.Out, "  waiting for %s\n", msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %s: %w", strings.Join(pending, ", "), ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}

func readiness(u *unstructured.Unstructured) (ready, want int64) {
	if u.GetKind() == "DaemonSet" {
		ready, _, _ = unstructured.NestedInt64(u.Object, "status", "numberReady")
		want, _, _ = unstructured.NestedInt64(u.Object, "status", "desiredNumberScheduled")
		return ready, want
	}
	ready, _, _ = unstructured.NestedInt64(u.Object, "status", "readyReplicas")
	want, _, _ = unstructured.NestedInt64(u.Object, "spec", "replicas")
	return ready, want
}

// Delete removes objs in reverse install order (webhooks first, so the API
// server stops calling them before their service goes); objects already
// gone are fine.
func (c *Client) Delete(ctx context.Context, objs []*unstructured.Unstructured) error {
	var errs []error
	policy := metav1.DeletePropagationBackground
	for i := len(objs) - 1; i >= 0; i-- {
		u := objs[i]
		r, err := c.resource(u)
		if err != nil {
			if meta.IsNoMatchError(errors.Unwrap(err)) || meta.IsNoMatchError(err) {
				continue // its CRD is already gone
			}
			errs = append(errs, err)
			continue
		}
		err = r.Delete(ctx, u.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy})
		switch {
		case err == nil:
			fmt.Fprintf(c.Out, "  deleted %s %s\n", u.GetKind(), qualified(u))
		case apierrors.IsNotFound(err):
		default:
			errs = append(errs, fmt.Errorf("delete %s %s: %w", u.GetKind(), qualified(u), err))
		}
	}
	return errors.Join(errs...)
}

// DeleteReleased deletes every object of the kinds weft install creates
// that carries release name's instance label: what any earlier install
// created, whatever values it used. CRDs are kept unless purge (deleting
// them deletes every Istio resource in the cluster).
func (c *Client) DeleteReleased(ctx context.Context, release, namespace string, purge bool) error {
	objs, err := c.released(ctx, release, namespace, purge)
	if err != nil {
		return err
	}
	return c.Delete(ctx, objs)
}

// Prune deletes the release's objects (CRDs excepted) that keep is not
// applying any more, e.g. the egress gateway after a switch from the demo
// to the default profile.
func (c *Client) Prune(ctx context.Context, release, namespace string, keep []*unstructured.Unstructured) error {
	objs, err := c.released(ctx, release, namespace, false)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, u := range keep {
		want[objectKey(u)] = true
	}
	var stale []*unstructured.Unstructured
	for _, u := range objs {
		if !want[objectKey(u)] {
			stale = append(stale, u)
		}
	}
	return c.Delete(ctx, stale)
}

func objectKey(u *unstructured.Unstructured) string {
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

// released lists the objects of the kinds weft install creates that carry
// the release's labels, in install order.
func (c *Client) released(ctx context.Context, release, namespace string, withCRDs bool) ([]*unstructured.Unstructured, error) {
	sel := "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/part-of=weft"
	var objs []*unstructured.Unstructured
	for _, kind := range installOrder {
		if kind == "Namespace" || kind == "CustomResourceDefinition" && !withCRDs {
			continue
		}
		gk := schema.GroupKind{Group: groupOf(kind), Kind: kind}
		m, err := c.mapper.RESTMapping(gk)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		var r dynamic.ResourceInterface = c.dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			r = c.dyn.Resource(m.Resource).Namespace(namespace)
		}
		list, err := r.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		for i := range list.Items {
			objs = append(objs, &list.Items[i])
		}
	}
	return objs, nil
}

func groupOf(kind string) string {
	switch kind {
	case "CustomResourceDefinition":
		return "apiextensions.k8s.io"
	case "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding":
		return "rbac.authorization.k8s.io"
	case "DaemonSet", "Deployment", "StatefulSet":
		return "apps"
	case "PodDisruptionBudget":
		return "policy"
	case "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration":
		return "admissionregistration.k8s.io"
	}
	return ""
}
