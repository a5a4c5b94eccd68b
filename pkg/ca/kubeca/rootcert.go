package kubeca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Names of the published root ConfigMap, as Istio names them (proxies and
// tools read these).
const (
	RootCertConfigMap = "istio-ca-root-cert"
	RootCertKey       = "root-cert.pem"
)

// RootPublisherOptions configure NewRootPublisher.
type RootPublisherOptions struct {
	// Client talks to the API server (required).
	Client kubernetes.Interface
	// Roots returns the PEM roots to publish (required); ca.CA.RootsPEM.
	Roots func() []byte
	// CheckInterval is how often Roots is polled for a change (a rotation).
	// Default 5s.
	CheckInterval time.Duration
	// Logger receives the publisher's log. Nil discards it.
	Logger *slog.Logger
}

// RootPublisher keeps ConfigMap istio-ca-root-cert (key root-cert.pem)
// equal to the CA's roots in every namespace: it writes it when a namespace
// appears, when the roots change, and when someone edits or deletes it.
type RootPublisher struct {
	opts       RootPublisherOptions
	log        *slog.Logger
	nsFactory  informers.SharedInformerFactory
	cmFactory  informers.SharedInformerFactory
	namespaces listerscorev1.NamespaceLister
	configMaps listerscorev1.ConfigMapLister
	queue      workqueue.TypedRateLimitingInterface[string]
	nsInf      cache.SharedIndexInformer
	cmInf      cache.SharedIndexInformer
	roots      atomic.Pointer[[]byte]
	writes     atomic.Uint64
}

// NewRootPublisher builds the publisher; nothing runs until Run.
func NewRootPublisher(opts RootPublisherOptions) (*RootPublisher, error) {
	if opts.Client == nil || opts.Roots == nil {
		return nil, errors.New("kubeca: RootPublisherOptions.Client and Roots are required")
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &RootPublisher{
		opts: opts, log: opts.Logger,
		nsFactory: informers.NewSharedInformerFactory(opts.Client, 0),
		cmFactory: informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", RootCertConfigMap).String()
		})),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "istio-ca-root-cert"}),
	}
	nsi := p.nsFactory.Core().V1().Namespaces()
	cmi := p.cmFactory.Core().V1().ConfigMaps()
	p.namespaces, p.configMaps = nsi.Lister(), cmi.Lister()
	p.nsInf, p.cmInf = nsi.Informer(), cmi.Informer()
	enqueue := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		ns := m.GetNamespace()
		if ns == "" { // a Namespace
			ns = m.GetName()
		}
		p.queue.Add(ns)
	}
	if _, err := p.nsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }}); err != nil {
		return nil, fmt.Errorf("kubeca: namespace handler: %w", err)
	}
	if _, err := p.cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue}); err != nil {
		return nil, fmt.Errorf("kubeca: configmap handler: %w", err)
	}
	return p, nil
}

// Writes counts ConfigMap creations and updates (for tests and metrics).
func (p *RootPublisher) Writes() uint64 { return p.writes.Load() }

// Run publishes until ctx ends; it returns nil then, or an error when the
// informer caches never sync.
func (p *RootPublisher) Run(ctx context.Context) error {
	defer p.queue.ShutDown()
	p.nsFactory.Start(ctx.Done())
	p.cmFactory.Start(ctx.Done())
	defer p.nsFactory.Shutdown()
	defer p.cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), p.nsInf.HasSynced, p.cmInf.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("kubeca: informer caches did not sync")
	}
	r := p.opts.Roots()
	p.roots.Store(&r)
	go func() {
		t := time.NewTicker(p.opts.CheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				p.queue.ShutDown()
				return
			case <-t.C:
				p.checkRoots()
			}
		}
	}()
	for {
		ns, quit := p.queue.Get()
		if quit {
			return nil
		}
		err := p.sync(ctx, ns)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("publish CA root", "namespace", ns, "err", err)
			p.queue.AddRateLimited(ns)
		} else {
			p.queue.Forget(ns)
		}
		p.queue.Done(ns)
	}
}

// checkRoots republishes everywhere when the CA's roots changed.
func (p *RootPublisher) checkRoots() {
	r := p.opts.Roots()
	if old := p.roots.Load(); old != nil && bytes.Equal(*old, r) {
		return
	}
	p.roots.Store(&r)
	p.log.Info("CA roots changed: republishing " + RootCertConfigMap)
	nss, err := p.namespaces.List(labels.Everything())
	if err != nil {
		return
	}
	for _, n := range nss {
		p.queue.Add(n.Name)
	}
}

func (p *RootPublisher) sync(ctx context.Context, ns string) error {
	n, err := p.namespaces.Get(ns)
	if apierrors.IsNotFound(err) || (err == nil && (n.Status.Phase == corev1.NamespaceTerminating || n.DeletionTimestamp != nil)) {
		return nil
	}
	if err != nil {
		return err
	}
	want := string(*p.roots.Load())
	cms := p.opts.Client.CoreV1().ConfigMaps(ns)
	cur, err := p.configMaps.ConfigMaps(ns).Get(RootCertConfigMap)
	if apierrors.IsNotFound(err) {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: RootCertConfigMap, Labels: map[string]string{"istio.io/config": "true", "app.kubernetes.io/managed-by": "weft"}},
			Data:       map[string]string{RootCertKey: want},
		}
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// The cache is behind: read the live object and compare.
			cur, err = cms.Get(ctx, RootCertConfigMap, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("get configmap %s/%s: %w", ns, RootCertConfigMap, err)
			}
		} else if err != nil {
			return fmt.Errorf("create configmap %s/%s: %w", ns, RootCertConfigMap, err)
		} else {
			p.writes.Add(1)
			p.log.Debug("published CA root", "namespace", ns)
			return nil
		}
	} else if err != nil {
		return err
	}
	if cur.Data[RootCertKey] == want {
		return nil
	}
	upd := cur.DeepCopy()
	if upd.Data == nil {
		upd.Data = map[string]string{}
	}
	upd.Data[RootCertKey] = want
	if _, err := cms.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update configmap %s/%s: %w", ns, RootCertConfigMap, err)
	}
	p.writes.Add(1)
	p.log.Debug("updated CA root", "namespace", ns)
	return nil
}
