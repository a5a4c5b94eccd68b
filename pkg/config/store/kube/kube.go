// Package kube is the config store of the control plane's Kubernetes mode:
// Istio resources are custom resources of Istio's CRDs (same groups, kinds
// and versions, so `kubectl apply` of existing Istio YAML works), read
// through informers into an in-memory cache and written through the API
// server. Resources that fail validation (stored while the validation
// webhook was off) are kept out of the store, never half-applied, and
// reported in their status; see status.go.
//
// Revisions: Kubernetes resourceVersions are per object; the store's own
// revision counts the changes it has observed (in memory, like the file
// store), and Meta.ResourceVersion is the object's Kubernetes
// resourceVersion, so the usual optimistic concurrency holds.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	meshv1 "istio.io/api/mesh/v1alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/validation"
)

// Options configure Open.
type Options struct {
	// Config reaches the API server (required).
	Config *rest.Config
	// Namespace limits the store to one namespace; "" watches all.
	Namespace string
	// History is how many revisions Watch can replay (default 1000).
	History int
	// SyncTimeout bounds the wait for the first full list (default 1 min).
	SyncTimeout time.Duration
	// Validate checks a decoded resource (default validation.Validate);
	// resources with errors are kept out of the store. The conformance
	// suite, which stores minimal resources, replaces it.
	Validate func(*config.Resource) config.ErrorList
	Logger   *slog.Logger
	// Mesh, when set, is the control plane's MeshConfig: the status writer
	// then also reports AuthorizationPolicy CUSTOM rules naming a missing
	// extension provider (WEFT0108), as `weft analyze --mesh-config` does.
	Mesh *meshv1.MeshConfig
}

// Store implements store.Store over Istio custom resources.
type Store struct {
	dyn  dynamic.Interface
	log  *slog.Logger
	opts Options
	bc   *store.Broadcaster
	gvrs map[string]schema.GroupVersionResource // kind -> watched resource

	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.RWMutex // guards the fields below; Publish runs under it
	rev       int64
	resources map[config.Key]*config.Resource
	invalid   map[config.Key]config.ErrorList // stored objects that fail validation
	objects   map[config.Key]*unstructured.Unstructured
	history   store.History
	changed   chan struct{} // closed and replaced on every cache change
	// tombstones: deleting resourceVersion by UID, until Delete takes it.
	tombstones map[types.UID]string

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open discovers which Istio CRDs the cluster serves, starts an informer
// per kind and waits for the first list. Kinds whose CRD is not installed
// are skipped with a warning.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Config == nil {
		return nil, errors.New("kube store: no client configuration")
	}
	if o.History <= 0 {
		o.History = 1000
	}
	if o.SyncTimeout <= 0 {
		o.SyncTimeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Validate == nil {
		o.Validate = validation.Validate
	}
	dyn, err := dynamic.NewForConfig(o.Config)
	if err != nil {
		return nil, fmt.Errorf("kube store: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(o.Config)
	if err != nil {
		return nil, fmt.Errorf("kube store: %w", err)
	}
	s := &Store{
		dyn: dyn, log: o.Logger, opts: o, bc: store.NewBroadcaster(0), history: store.History{Limit: o.History}, gvrs: map[string]schema.GroupVersionResource{},
		resources: map[config.Key]*config.Resource{}, invalid: map[config.Key]config.ErrorList{},
		objects: map[config.Key]*unstructured.Unstructured{}, changed: make(chan struct{}), done: make(chan struct{}),
		tombstones: map[types.UID]string{},
	}
	for _, sc := range config.Schemas() {
		if sc.ClusterScoped {
			// GatewayClass: Gateways of class istio or weft need no
			// GatewayClass object, so the store does not watch them.
			continue
		}
		gvr, ok := served(dc, sc)
		if !ok {
			s.log.Warn("Istio CRD not installed; kind skipped", "kind", sc.Kind, "crd", sc.Plural+"."+sc.Group)
			continue
		}
		s.gvrs[sc.Kind] = gvr
	}
	if len(s.gvrs) == 0 {
		return nil, fmt.Errorf("kube store: no Istio CRDs installed in the cluster (install them: weft install, or kubectl apply -f manifests/crds/istio.yaml)")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(dyn, 0, o.Namespace, nil)
	var synced []cache.InformerSynced
	for _, gvr := range s.gvrs {
		inf := factory.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.observe(obj, false) },
			UpdateFunc: func(_, obj any) { s.observe(obj, false) },
			DeleteFunc: func(obj any) { s.observe(obj, true) },
		}); err != nil {
			cancel()
			return nil, fmt.Errorf("kube store: %w", err)
		}
		synced = append(synced, inf.HasSynced)
	}
	factory.Start(runCtx.Done())
	go func() { <-runCtx.Done(); factory.Shutdown(); close(s.done) }()
	sctx, scancel := context.WithTimeout(ctx, o.SyncTimeout)
	defer scancel()
	if !cache.WaitForCacheSync(sctx.Done(), synced...) {
		s.Close()
		return nil, fmt.Errorf("kube store: informers did not sync within %v", o.SyncTimeout)
	}
	s.mu.RLock() // the informers keep writing the cache
	nres, ninv := len(s.resources), len(s.invalid)
	s.mu.RUnlock()
	s.log.Info("kube store synced", "kinds", len(s.gvrs), "resources", nres, "invalid", ninv)
	return s, nil
}

// served returns the resource of the first version of sc the cluster
// serves (our CRDs serve every Istio version from one schema).
func served(dc discovery.DiscoveryInterface, sc config.Schema) (schema.GroupVersionResource, bool) {
	for _, v := range sc.Versions {
		list, err := dc.ServerResourcesForGroupVersion(sc.Group + "/" + v)
		if err != nil {
			continue
		}
		for _, r := range list.APIResources {
			if r.Name == sc.Plural {
				return schema.GroupVersionResource{Group: sc.Group, Version: v, Resource: sc.Plural}, true
			}
		}
	}
	return schema.GroupVersionResource{}, false
}

// toResource decodes an object with the same decoder and validation as
// `weft apply`; errors name the object.
func (s *Store) toResource(u *unstructured.Unstructured) (*config.Resource, config.ErrorList) {
	doc := map[string]any{
		"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
		"metadata": map[string]any{"name": u.GetName(), "namespace": u.GetNamespace(), "labels": u.GetLabels(), "annotations": u.GetAnnotations()},
		"spec":     u.Object["spec"],
	}
	if doc["spec"] == nil {
		doc["spec"] = map[string]any{}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, config.ErrorList{{Kind: u.GetKind(), Name: u.GetNamespace() + "/" + u.GetName(), Msg: err.Error()}}
	}
	rs, errs := config.DecodeAll("kube:"+u.GetNamespace()+"/"+u.GetName(), b)
	if len(errs.Errors()) > 0 || len(rs) != 1 {
		return nil, errs
	}
	r := rs[0]
	if errs = append(errs, s.opts.Validate(r)...); len(errs.Errors()) > 0 {
		return nil, errs
	}
	r.Source = config.Source{}
	r.Meta.ResourceVersion = u.GetResourceVersion()
	r.Meta.Generation = u.GetGeneration()
	r.Meta.CreationTimestamp = u.GetCreationTimestamp().Time
	return r, errs
}

func keyOf(u *unstructured.Unstructured) config.Key {
	kind := u.GetKind()
	if sc, ok := config.SchemaFor(u.GroupVersionKind().Group, kind); ok {
		kind = sc.Kind // the Gateway API's Gateway is KubernetesGateway
	}
	return config.Key{Kind: kind, Namespace: u.GetNamespace(), Name: u.GetName()}
}

// observe applies one informer notification to the cache and publishes
// the change. A status-only update refreshes the cached object and its
// resourceVersion without an event.
func (s *Store) observe(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	k := keyOf(u)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.resources[k]
	var ev *store.Event
	switch {
	case deleted:
		delete(s.objects, k)
		if len(s.tombstones) >= 1000 {
			clear(s.tombstones) // nobody waits for them (deleted by others)
		}
		s.tombstones[u.GetUID()] = u.GetResourceVersion()
		delete(s.invalid, k)
		if old != nil {
			delete(s.resources, k)
			d := old.DeepCopy()
			d.Meta.ResourceVersion = u.GetResourceVersion()
			ev = &store.Event{Type: store.Deleted, Resource: d}
		}
	default:
		s.objects[k] = u
		r, errs := s.toResource(u)
		if r == nil {
			// Invalid: report it, and drop any earlier valid state so the
			// mesh never runs a half-understood version.
			s.invalid[k] = errs
			s.log.Warn("invalid Istio resource in the cluster; ignored", "resource", k.String(), "problems", errs.Error())
			if old != nil {
				delete(s.resources, k)
				ev = &store.Event{Type: store.Deleted, Resource: old.DeepCopy()}
			}
			break
		}
		delete(s.invalid, k)
		s.resources[k] = r
		switch {
		case old == nil:
			ev = &store.Event{Type: store.Added, Resource: r.DeepCopy()}
		case !sameContent(old, r):
			ev = &store.Event{Type: store.Modified, Resource: r.DeepCopy()}
		}
	}
	if ev != nil {
		s.rev++
		ev.Revision = s.rev
		s.history.Add(s.rev, *ev)
		s.bc.Publish(s.rev, []store.Event{{Type: ev.Type, Resource: ev.Resource.DeepCopy(), Revision: ev.Revision}})
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func sameContent(a, b *config.Resource) bool {
	return a.APIVersion == b.APIVersion && maps.Equal(a.Meta.Labels, b.Meta.Labels) &&
		maps.Equal(a.Meta.Annotations, b.Meta.Annotations) && proto.Equal(a.Spec, b.Spec)
}

// Invalid returns the cluster's Istio resources that fail validation (and
// are therefore ignored), with their problems.
func (s *Store) Invalid() map[config.Key]config.ErrorList {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.invalid)
}

// Get implements store.Store.
func (s *Store) Get(_ context.Context, key config.Key) (*config.Resource, error) {
	if key.Namespace == "" {
		key.Namespace = config.DefaultNamespace
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.resources[key]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return r.DeepCopy(), nil
}

// List implements store.Store.
func (s *Store) List(_ context.Context, kind, namespace string) ([]*config.Resource, int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*config.Resource
	for k, r := range s.resources {
		if (kind == "" || k.Kind == kind) && (namespace == "" || k.Namespace == namespace) {
			out = append(out, r.DeepCopy())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key(), out[j].Key()
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Kind < b.Kind
	})
	return out, s.rev, nil
}

// Watch implements store.Store; revisions live in memory (see the
// package documentation).
func (s *Store) Watch(ctx context.Context, fromRevision int64) (<-chan store.Event, error) {
	return s.bc.Subscribe(ctx, fromRevision, s.backlog)
}

func (s *Store) backlog(from, to int64) ([]store.Event, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.history.Backlog(from, to)
}

// Revision implements store.Store.
func (s *Store) Revision() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// Close stops the informers and ends all watches. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		s.bc.Close()
	})
	return nil
}

// waitCached blocks until the cache holds key at resourceVersion rv (""
// with gone: until it is gone), so a caller reads its own write.
func (s *Store) waitCached(ctx context.Context, key config.Key, rv string, gone bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		s.mu.RLock()
		u, ok := s.objects[key]
		ch := s.changed
		s.mu.RUnlock()
		if gone && !ok || !gone && ok && newerOrEqual(u.GetResourceVersion(), rv) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the informer to see %s: %w", key, ctx.Err())
		}
	}
}

// newerOrEqual compares resourceVersions; they are opaque in the API but
// etcd revisions in practice, compared numerically when both parse.
func newerOrEqual(have, want string) bool {
	h, err1 := strconv.ParseUint(have, 10, 64)
	w, err2 := strconv.ParseUint(want, 10, 64)
	if err1 != nil || err2 != nil {
		return have == want
	}
	return h >= w
}

func (s *Store) client(kind, namespace string) (dynamic.ResourceInterface, error) {
	gvr, ok := s.gvrs[kind]
	if !ok {
		return nil, fmt.Errorf("kind %s: its CRD is not installed in the cluster", kind)
	}
	return s.dyn.Resource(gvr).Namespace(namespace), nil
}

// mapErr turns API errors into the store's sentinel errors.
func mapErr(op string, key config.Key, err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsConflict(err):
		return fmt.Errorf("%s %s: %w: %v", op, key, store.ErrConflict, err)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%s %s: %w", op, key, store.ErrAlreadyExists)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s %s: %w", op, key, store.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// toObject renders r as a custom resource at the watched version.
func (s *Store) toObject(r *config.Resource) (*unstructured.Unstructured, error) {
	gvr, ok := s.gvrs[r.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %s: its CRD is not installed in the cluster", r.Kind)
	}
	b, err := r.MarshalJSON()
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(b, &u.Object); err != nil {
		return nil, err
	}
	u.SetAPIVersion(gvr.Group + "/" + gvr.Version)
	if u.GetNamespace() == "" {
		u.SetNamespace(config.DefaultNamespace)
	}
	unstructured.RemoveNestedField(u.Object, "metadata", "generation")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u, nil
}

// undo reverts one write of a failed Apply.
type undo func(context.Context) error

// write performs one resource's part of an Apply (dryRun: validation by
// the API server and its webhooks only) and returns the stored object and
// how to revert it.
func (s *Store) write(ctx context.Context, mode store.ApplyMode, r *config.Resource, dryRun bool) (*unstructured.Unstructured, undo, error) {
	u, err := s.toObject(r)
	if err != nil {
		return nil, nil, err
	}
	key := config.Key{Kind: r.Kind, Namespace: u.GetNamespace(), Name: r.Meta.Name}
	rc, err := s.client(r.Kind, key.Namespace)
	if err != nil {
		return nil, nil, err
	}
	var dry []string
	if dryRun {
		dry = []string{metav1.DryRunAll}
	}
	cur, err := rc.Get(ctx, key.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cur = nil
	case err != nil:
		return nil, nil, mapErr("apply", key, err)
	}
	if cur == nil {
		if mode == store.UpdateOnly {
			return nil, nil, fmt.Errorf("apply %s: %w", key, store.ErrNotFound)
		}
		if r.Meta.ResourceVersion != "" {
			return nil, nil, fmt.Errorf("apply %s: %w: resourceVersion %s was given but the resource does not exist", key, store.ErrConflict, r.Meta.ResourceVersion)
		}
		u.SetResourceVersion("")
		out, err := rc.Create(ctx, u, metav1.CreateOptions{DryRun: dry, FieldManager: "weft"})
		if err != nil {
			return nil, nil, mapErr("create", key, err)
		}
		return out, func(ctx context.Context) error { return rc.Delete(ctx, key.Name, metav1.DeleteOptions{}) }, nil
	}
	if mode == store.CreateOnly {
		return nil, nil, fmt.Errorf("apply %s: %w", key, store.ErrAlreadyExists)
	}
	switch rv := r.Meta.ResourceVersion; {
	case rv == "":
		u.SetResourceVersion(cur.GetResourceVersion())
	case rv != cur.GetResourceVersion():
		return nil, nil, fmt.Errorf("apply %s: %w: resourceVersion %s was given but the stored one is %s", key, store.ErrConflict, rv, cur.GetResourceVersion())
	}
	// Keep what weft does not manage (status, other metadata).
	if st, ok := cur.Object["status"]; ok {
		u.Object["status"] = st
	}
	out, err := rc.Update(ctx, u, metav1.UpdateOptions{DryRun: dry, FieldManager: "weft"})
	if err != nil {
		return nil, nil, mapErr("update", key, err)
	}
	prev := cur.DeepCopy()
	return out, func(ctx context.Context) error {
		latest, err := rc.Get(ctx, key.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		prev.SetResourceVersion(latest.GetResourceVersion())
		_, err = rc.Update(ctx, prev, metav1.UpdateOptions{FieldManager: "weft"})
		return err
	}, nil
}

// writeRetry is write that, for a resource given without a
// resourceVersion (kubectl apply semantics: last writer wins), retries when
// the object changed between its read and its write (another writer, the
// status writer) or appeared/vanished meanwhile.
func (s *Store) writeRetry(ctx context.Context, mode store.ApplyMode, r *config.Resource, dryRun bool) (*unstructured.Unstructured, undo, error) {
	for attempt := 1; ; attempt++ {
		out, u, err := s.write(ctx, mode, r, dryRun)
		if err == nil || r.Meta.ResourceVersion != "" || attempt == 10 || ctx.Err() != nil {
			return out, u, err
		}
		retry := errors.Is(err, store.ErrConflict) ||
			(mode == store.Upsert && (errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound)))
		if !retry {
			return out, u, err
		}
		s.log.Debug("apply: retrying after a concurrent change", "resource", r.Key().String(), "attempt", attempt, "err", err)
	}
}

// Apply implements store.Store. The API server has no multi-object
// transactions, so all-or-nothing is approached in three steps: every
// resource is validated by weft and then, when there are several, by the
// API server with a dry run (webhooks included); only then are they written; if a write still
// fails (a concurrent change), the writes already made are reverted. It
// returns once the store's cache shows every write.
func (s *Store) Apply(ctx context.Context, mode store.ApplyMode, rs []*config.Resource) ([]*config.Resource, error) {
	var errs config.ErrorList
	seen := map[config.Key]bool{}
	for i, r := range rs {
		if r == nil {
			return nil, fmt.Errorf("apply: resource %d is nil", i)
		}
		if _, ok := config.SchemaForKind(r.Kind); !ok || r.Meta.Name == "" {
			return nil, fmt.Errorf("apply: resource %d: unknown kind %q or no name", i, r.Kind)
		}
		k := r.Key()
		if k.Namespace == "" {
			k.Namespace = config.DefaultNamespace
		}
		if seen[k] {
			return nil, fmt.Errorf("apply: %s appears twice", k)
		}
		seen[k] = true
		errs = append(errs, s.opts.Validate(r)...)
	}
	if len(errs.Errors()) > 0 {
		return nil, errs.Errors()
	}
	// The dry run protects the other resources of a batch; a single
	// resource's write is checked by the API server (and its webhooks)
	// atomically anyway, so it skips the extra round trips.
	for _, r := range rs {
		if len(rs) == 1 {
			break
		}
		if _, _, err := s.writeRetry(ctx, mode, r, true); err != nil {
			return nil, err
		}
	}
	var (
		undos []undo
		outs  []*unstructured.Unstructured
	)
	for _, r := range rs {
		out, u, err := s.writeRetry(ctx, mode, r, false)
		if err != nil {
			for i := len(undos) - 1; i >= 0; i-- {
				if uerr := undos[i](context.WithoutCancel(ctx)); uerr != nil {
					s.log.Error("could not revert a partial apply", "err", uerr)
					err = fmt.Errorf("%w (and reverting earlier writes failed: %v)", err, uerr)
				}
			}
			return nil, err
		}
		undos, outs = append(undos, u), append(outs, out)
	}
	stored := make([]*config.Resource, len(outs))
	for i, out := range outs {
		if err := s.waitCached(ctx, keyOf(out), out.GetResourceVersion(), false); err != nil {
			return nil, err
		}
		r, verrs := s.toResource(out)
		if r == nil {
			return nil, verrs
		}
		stored[i] = r
	}
	return stored, nil
}

// Delete implements store.Store. A custom resource the store ignores
// because it is invalid can be deleted too (it is returned with the spec it
// has, or none when the spec does not decode). The returned resource
// carries the deleting resourceVersion, as its watch event does.
func (s *Store) Delete(ctx context.Context, key config.Key, resourceVersion string) (*config.Resource, error) {
	if key.Namespace == "" {
		key.Namespace = config.DefaultNamespace
	}
	rc, err := s.client(key.Kind, key.Namespace)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	obj := s.objects[key]
	var old *config.Resource
	if r := s.resources[key]; r != nil {
		old = r.DeepCopy()
	}
	s.mu.RUnlock()
	if obj == nil {
		return nil, fmt.Errorf("delete %s: %w", key, store.ErrNotFound)
	}
	if old == nil {
		old = &config.Resource{APIVersion: obj.GetAPIVersion(), Kind: key.Kind, Meta: config.Meta{
			Name: key.Name, Namespace: key.Namespace, Labels: obj.GetLabels(), Annotations: obj.GetAnnotations(),
			Generation: obj.GetGeneration(), CreationTimestamp: obj.GetCreationTimestamp().Time,
		}}
		if sc, ok := config.SchemaForKind(key.Kind); ok {
			old.Spec = sc.NewSpec()
		}
	}
	// The UID precondition makes sure the object deleted is the one whose
	// deletion we then wait for, not a re-created one.
	uid := obj.GetUID()
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
	if resourceVersion != "" {
		opts.Preconditions.ResourceVersion = &resourceVersion
	}
	if err := rc.Delete(ctx, key.Name, opts); err != nil {
		return nil, mapErr("delete", key, err)
	}
	rv, err := s.waitDeleted(ctx, key, uid)
	if err != nil {
		return nil, err
	}
	old.Meta.ResourceVersion = rv
	return old, nil
}

// waitDeleted blocks until the informer has seen the deletion of the
// object with uid and returns the deleting resourceVersion (the API server
// answers a custom resource's DELETE with a Status, not the object).
func (s *Store) waitDeleted(ctx context.Context, key config.Key, uid types.UID) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		s.mu.Lock()
		rv, ok := s.tombstones[uid]
		delete(s.tombstones, uid)
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return rv, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for the informer to see %s deleted: %w", key, ctx.Err())
		}
	}
}
