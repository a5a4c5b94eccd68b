// Package kube is the Kubernetes source of Weft's service registry. It
// watches Services, EndpointSlices (discovery.k8s.io/v1), Pods, Nodes and
// Namespaces with client-go shared informers and feeds the registry
// incrementally: each change marks the Services it affects, and a worker
// converts just those and hands them to the registry in one batch.
//
// Host names are NAME.NS.svc.SUFFIX; port protocols follow Istio's
// selection (appProtocol, then port name prefix); endpoints carry the pod's
// labels, service account (the identity mutual TLS checks) and locality
// (node topology labels). Headless services get one endpoint per pod and
// one host per pod with a hostname; ExternalName services become DNS
// services resolving the external name.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersdiscoveryv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/pkg/registry"
)

// SourceName is the registry source name this package uses by default.
const SourceName = "kubernetes"

// Options configure New.
type Options struct {
	// Client talks to the API server (required).
	Client kubernetes.Interface
	// Registry receives the services (required); *registry.Registry.
	Registry registry.Source
	// DomainSuffix is the cluster DNS suffix. Default "cluster.local".
	DomainSuffix string
	// SourceName names the source in the registry. Default "kubernetes".
	SourceName string
	// ResyncPeriod is the informers' resync period; 0 (default) never
	// resyncs (watches are incremental).
	ResyncPeriod time.Duration
	// Logger receives the controller's log. Nil discards it.
	Logger *slog.Logger
}

// Controller watches the cluster and feeds the registry. Create it with
// New and start it with Run.
type Controller struct {
	opts Options
	log  *slog.Logger

	factory    informers.SharedInformerFactory
	services   listerscorev1.ServiceLister
	slices     listersdiscoveryv1.EndpointSliceLister
	pods       listerscorev1.PodLister
	nodes      listerscorev1.NodeLister
	namespaces listerscorev1.NamespaceLister
	informers  []cache.SharedIndexInformer

	mu    sync.Mutex
	dirty map[string]bool // "ns/name" of Services to convert again
	all   bool            // every Service is dirty (node/namespace change)
	// What the last conversion of each Service produced and read.
	produced map[string][]registry.ServiceKey
	// Pods as registry workloads (selected by ServiceEntry
	// workloadSelector): the dirty ones, and those the registry holds.
	dirtyPods map[string]bool
	allPods   bool
	podsSent  map[string]bool
	podRefs   refIndex // pod "ns/name" <-> services
	nodeRefs  refIndex // node name <-> services
	kick      chan struct{}

	synced   atomic.Bool
	syncedCh chan struct{}
	updates  atomic.Uint64
}

// New builds the controller and its informers; nothing runs until Run.
func New(opts Options) (*Controller, error) {
	if opts.Client == nil {
		return nil, errors.New("registry/kube: Options.Client is required")
	}
	if opts.Registry == nil {
		return nil, errors.New("registry/kube: Options.Registry is required")
	}
	if opts.DomainSuffix == "" {
		opts.DomainSuffix = registry.DefaultDomainSuffix
	}
	if opts.SourceName == "" {
		opts.SourceName = SourceName
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Controller{
		opts: opts, log: opts.Logger,
		dirty:     map[string]bool{},
		dirtyPods: map[string]bool{},
		podsSent:  map[string]bool{},
		produced:  map[string][]registry.ServiceKey{},
		podRefs:   newRefIndex(),
		nodeRefs:  newRefIndex(),
		kick:      make(chan struct{}, 1),
		syncedCh:  make(chan struct{}),
	}
	f := informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.ResyncPeriod,
		informers.WithTransform(stripManagedFields))
	c.factory = f
	svcInf := f.Core().V1().Services()
	sliceInf := f.Discovery().V1().EndpointSlices()
	podInf := f.Core().V1().Pods()
	nodeInf := f.Core().V1().Nodes()
	nsInf := f.Core().V1().Namespaces()
	c.services, c.slices, c.pods, c.nodes, c.namespaces = svcInf.Lister(), sliceInf.Lister(), podInf.Lister(), nodeInf.Lister(), nsInf.Lister()

	add := func(inf cache.SharedIndexInformer, fn func(obj any)) error {
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn,
			UpdateFunc: func(old, obj any) {
				if relevantChange(old, obj) {
					fn(obj)
				}
			},
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				fn(obj)
			},
		})
		c.informers = append(c.informers, inf)
		return err
	}
	errs := []error{
		add(svcInf.Informer(), func(obj any) {
			if m, err := meta.Accessor(obj); err == nil {
				c.markService(m.GetNamespace() + "/" + m.GetName())
			}
		}),
		add(sliceInf.Informer(), func(obj any) {
			if m, err := meta.Accessor(obj); err == nil {
				if svc := m.GetLabels()[discoveryv1.LabelServiceName]; svc != "" {
					c.markService(m.GetNamespace() + "/" + svc)
				}
			}
		}),
		add(podInf.Informer(), func(obj any) {
			if m, err := meta.Accessor(obj); err == nil {
				key := m.GetNamespace() + "/" + m.GetName()
				c.markPod(key)
				c.markRefs(c.podRefs, key)
			}
		}),
		add(nodeInf.Informer(), func(obj any) {
			if m, err := meta.Accessor(obj); err == nil {
				c.markRefs(c.nodeRefs, m.GetName())
				c.markNodePods(m.GetName())
			}
		}),
		add(nsInf.Informer(), func(obj any) {
			if m, err := meta.Accessor(obj); err == nil {
				c.markNamespace(m.GetName())
			}
		}),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("registry/kube: informer handlers: %w", err)
	}
	return c, nil
}

// stripManagedFields keeps only what the conversion reads, to keep the
// informer caches small: pods and nodes shrink to their names, labels and
// the few spec fields used; other objects lose their managed fields.
func stripManagedFields(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels,
				DeletionTimestamp: o.DeletionTimestamp},
			Spec:   corev1.PodSpec{ServiceAccountName: o.Spec.ServiceAccountName, NodeName: o.Spec.NodeName},
			Status: corev1.PodStatus{Phase: o.Status.Phase, PodIP: o.Status.PodIP},
		}, nil
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion, Labels: o.Labels}}, nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// relevantChange reports whether an update changed what the conversion
// reads (informers also deliver status heartbeats and resyncs).
func relevantChange(old, obj any) bool {
	switch n := obj.(type) {
	case *corev1.Pod:
		o, ok := old.(*corev1.Pod)
		return !ok || !maps.Equal(o.Labels, n.Labels) || o.Spec.NodeName != n.Spec.NodeName ||
			o.Spec.ServiceAccountName != n.Spec.ServiceAccountName || o.Status.PodIP != n.Status.PodIP || o.Status.Phase != n.Status.Phase ||
			(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil)
	case *corev1.Node:
		o, ok := old.(*corev1.Node)
		return !ok || !maps.Equal(o.Labels, n.Labels)
	case *corev1.Namespace:
		o, ok := old.(*corev1.Namespace)
		return !ok || !maps.Equal(o.Labels, n.Labels)
	}
	om, err1 := meta.Accessor(old)
	nm, err2 := meta.Accessor(obj)
	return err1 != nil || err2 != nil || om.GetResourceVersion() != nm.GetResourceVersion()
}

// HasSynced reports whether the first full view of the cluster has reached
// the registry.
func (c *Controller) HasSynced() bool { return c.synced.Load() }

// Synced is closed once the first full view has reached the registry.
func (c *Controller) Synced() <-chan struct{} { return c.syncedCh }

// Updates counts the batches handed to the registry (for tests and
// metrics).
func (c *Controller) Updates() uint64 { return c.updates.Load() }

// Run starts the informers, waits for their caches, hands the registry the
// full view, then follows changes until ctx ends. Call it once. It returns nil when ctx
// ends, or an error when the caches never sync.
func (c *Controller) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	syncs := make([]cache.InformerSynced, 0, len(c.informers))
	for _, inf := range c.informers {
		syncs = append(syncs, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("registry/kube: informer caches did not sync")
	}
	c.mu.Lock()
	c.all, c.allPods = true, true
	c.mu.Unlock()
	c.process()
	c.synced.Store(true)
	close(c.syncedCh)
	c.log.Info("kubernetes registry synced", "services", len(c.produced))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
			c.process()
		}
	}
}

func (c *Controller) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Controller) markService(key string) {
	c.mu.Lock()
	c.dirty[key] = true
	c.mu.Unlock()
	c.signal()
}

func (c *Controller) markRefs(refs refIndex, ref string) {
	c.mu.Lock()
	n := 0
	for svc := range refs.byRef[ref] {
		c.dirty[svc] = true
		n++
	}
	c.mu.Unlock()
	if n > 0 {
		c.signal()
	}
}

func (c *Controller) markNamespace(ns string) {
	svcs, _ := c.services.Services(ns).List(labels.Everything())
	pods, _ := c.pods.Pods(ns).List(labels.Everything())
	c.mu.Lock()
	for _, s := range svcs {
		c.dirty[s.Namespace+"/"+s.Name] = true
	}
	for _, p := range pods {
		c.dirtyPods[p.Namespace+"/"+p.Name] = true
	}
	c.mu.Unlock()
	if len(svcs)+len(pods) > 0 {
		c.signal()
	}
}

func (c *Controller) markPod(key string) {
	c.mu.Lock()
	c.dirtyPods[key] = true
	c.mu.Unlock()
	c.signal()
}

// markNodePods marks the pods scheduled on node (their locality).
func (c *Controller) markNodePods(node string) {
	pods, _ := c.pods.List(labels.Everything())
	n := 0
	c.mu.Lock()
	for _, p := range pods {
		if p.Spec.NodeName == node {
			c.dirtyPods[p.Namespace+"/"+p.Name] = true
			n++
		}
	}
	c.mu.Unlock()
	if n > 0 {
		c.signal()
	}
}

// process converts the dirty Services and hands the result to the
// registry in one batch. It runs on Run's goroutine only.
func (c *Controller) process() {
	c.mu.Lock()
	dirty, dirtyPods := c.dirty, c.dirtyPods
	all, allPods := c.all, c.allPods
	c.dirty, c.all = map[string]bool{}, false
	c.dirtyPods, c.allPods = map[string]bool{}, false
	c.mu.Unlock()
	if allPods {
		pods, _ := c.pods.List(labels.Everything())
		for _, p := range pods {
			dirtyPods[p.Namespace+"/"+p.Name] = true
		}
	}
	if all {
		svcs, err := c.services.List(labels.Everything())
		if err != nil {
			c.log.Error("list services", "err", err)
		}
		for _, s := range svcs {
			dirty[s.Namespace+"/"+s.Name] = true
		}
		c.mu.Lock()
		for k := range c.produced {
			dirty[k] = true // services deleted while not watched
		}
		c.mu.Unlock()
	}
	lk := Lookup{
		Pod: func(ns, name string) *corev1.Pod {
			p, _ := c.pods.Pods(ns).Get(name)
			return p
		},
		Node: func(name string) *corev1.Node {
			n, _ := c.nodes.Get(name)
			return n
		},
		Namespace: func(name string) *corev1.Namespace {
			n, _ := c.namespaces.Get(name)
			return n
		},
	}
	var upsert []registry.SourceService
	var remove []registry.ServiceKey
	c.mu.Lock()
	for key := range dirty {
		ns, name := splitKey(key)
		svc, err := c.services.Services(ns).Get(name)
		var out []registry.SourceService
		var refs Refs
		if err == nil {
			sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name})
			slices, _ := c.slices.EndpointSlices(ns).List(sel)
			out, refs = Convert(svc, slices, lk, c.opts.DomainSuffix)
		}
		keep := map[registry.ServiceKey]bool{}
		keys := make([]registry.ServiceKey, 0, len(out))
		for _, s := range out {
			keep[s.Key()] = true
			keys = append(keys, s.Key())
		}
		for _, k := range c.produced[key] {
			if !keep[k] {
				remove = append(remove, k)
			}
		}
		if len(keys) == 0 {
			delete(c.produced, key)
		} else {
			c.produced[key] = keys
		}
		c.podRefs.set(key, refs.Pods)
		c.nodeRefs.set(key, refs.Nodes)
		upsert = append(upsert, out...)
	}
	var wUpsert []*registry.Workload
	var wRemove []registry.WorkloadKey
	for key := range dirtyPods {
		ns, name := splitKey(key)
		pod, err := c.pods.Pods(ns).Get(name)
		if err == nil {
			if w := PodWorkload(pod, lk); w != nil {
				wUpsert = append(wUpsert, w)
				c.podsSent[key] = true
				continue
			}
		}
		if c.podsSent[key] {
			delete(c.podsSent, key)
			wRemove = append(wRemove, registry.WorkloadKey{Namespace: ns, Name: name})
		}
	}
	c.mu.Unlock()
	// Outside c.mu: event handlers keep marking while the registry rebuilds.
	if len(wUpsert) > 0 || len(wRemove) > 0 {
		c.opts.Registry.UpdateWorkloads(c.opts.SourceName, wUpsert, wRemove)
		c.updates.Add(1)
	}
	if len(upsert) > 0 || len(remove) > 0 {
		c.opts.Registry.UpdateSource(c.opts.SourceName, upsert, remove)
		c.updates.Add(1)
	}
	c.log.Debug("kubernetes registry update", "services", len(dirty), "upserted", len(upsert), "removed", len(remove), "pods", len(dirtyPods))
}

// refIndex maps referenced objects to the Services whose conversion read
// them, and back.
type refIndex struct {
	byRef map[string]map[string]bool
	bySvc map[string][]string
}

func newRefIndex() refIndex {
	return refIndex{byRef: map[string]map[string]bool{}, bySvc: map[string][]string{}}
}

// set records that svc read refs (and only those).
func (x refIndex) set(svc string, refs []string) {
	for _, ref := range x.bySvc[svc] {
		if svcs := x.byRef[ref]; svcs != nil {
			delete(svcs, svc)
			if len(svcs) == 0 {
				delete(x.byRef, ref)
			}
		}
	}
	if len(refs) == 0 {
		delete(x.bySvc, svc)
		return
	}
	x.bySvc[svc] = refs
	for _, ref := range refs {
		if x.byRef[ref] == nil {
			x.byRef[ref] = map[string]bool{}
		}
		x.byRef[ref][svc] = true
	}
}

func splitKey(k string) (ns, name string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}
