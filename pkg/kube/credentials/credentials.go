// Package credentials resolves Gateway credentialNames from Kubernetes
// Secrets, the Istio way: the Secret named credentialName in the gateway
// workload's namespace, either kubernetes.io/tls (tls.crt, tls.key, and
// optionally ca.crt) or generic (cert, key, and optionally cacert). For
// MUTUAL servers the client CA is the Secret's own ca.crt/cacert, else the
// Secret NAME-cacert in the same namespace (key cacert or ca.crt). Secrets
// are watched with an informer; a change to a Secret that holds such keys
// bumps the source's Version and notifies subscribers, so gateways are
// re-pushed.
package credentials

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weftmesh/weft/pkg/credentials"
	"github.com/weftmesh/weft/pkg/xds/translate"
	"github.com/weftmesh/weft/pkg/xds/translate/gwapi"
)

// Secret data keys Istio reads for gateway credentials.
const (
	keyTLSCert     = "tls.crt"
	keyTLSKey      = "tls.key"
	keyTLSCA       = "ca.crt"
	keyGenericCert = "cert"
	keyGenericKey  = "key"
	keyGenericCA   = "cacert"
	// CACertSuffix names the separate CA Secret of a credential.
	CACertSuffix = "-cacert"
)

var credentialKeys = []string{keyTLSCert, keyTLSKey, keyTLSCA, keyGenericCert, keyGenericKey, keyGenericCA}

// Options configure a Secrets source.
type Options struct {
	Client kubernetes.Interface
	Logger *slog.Logger
	// ResyncPeriod of the informer (0: none).
	ResyncPeriod time.Duration
}

// Secrets is a credentials.Source over the cluster's Secrets.
type Secrets struct {
	credentials.Notifier
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	lister   listerscorev1.SecretLister
}

// New returns a Secrets source; call Run to start watching.
func New(opts Options) (*Secrets, error) {
	if opts.Client == nil {
		return nil, errors.New("kube credentials: Options.Client is required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Service-account tokens and Helm releases are never credentials and
	// can be many and large: the API server filters them out.
	sel := fields.AndSelectors(
		fields.OneTermNotEqualSelector("type", string(corev1.SecretTypeServiceAccountToken)),
		fields.OneTermNotEqualSelector("type", "helm.sh/release.v1"),
	).String()
	f := informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.ResyncPeriod,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.FieldSelector = sel }),
		informers.WithTransform(keepCredentialData))
	inf := f.Core().V1().Secrets()
	s := &Secrets{log: log, factory: f, informer: inf.Informer(), lister: inf.Lister()}
	changed := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		sec, ok := obj.(*corev1.Secret)
		if !ok || len(sec.Data) == 0 {
			return // holds none of the credential keys
		}
		s.log.Debug("gateway credential secret changed", "namespace", sec.Namespace, "name", sec.Name)
		s.Changed()
	}
	_, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: changed,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Secret)
			n, ok2 := obj.(*corev1.Secret)
			if ok1 && ok2 && o.ResourceVersion == n.ResourceVersion {
				return // resync
			}
			if ok1 && len(o.Data) > 0 {
				changed(old) // keys removed is a change too
				return
			}
			changed(obj)
		},
		DeleteFunc: changed,
	})
	if err != nil {
		return nil, fmt.Errorf("kube credentials: %w", err)
	}
	return s, nil
}

// keepCredentialData drops everything the lookups do not read from cached
// Secrets (other data keys, annotations, managed fields), so the cache
// stays small in clusters with many Secrets.
func keepCredentialData(obj any) (any, error) {
	sec, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	out := &corev1.Secret{Type: sec.Type}
	out.Name, out.Namespace, out.ResourceVersion, out.UID = sec.Name, sec.Namespace, sec.ResourceVersion, sec.UID
	for _, k := range credentialKeys {
		if v, ok := sec.Data[k]; ok {
			if out.Data == nil {
				out.Data = map[string][]byte{}
			}
			out.Data[k] = v
		}
	}
	return out, nil
}

// Run watches Secrets until ctx ends.
func (s *Secrets) Run(ctx context.Context) error {
	s.factory.Start(ctx.Done())
	<-ctx.Done()
	s.factory.Shutdown()
	return nil
}

// WaitForSync waits for the first full list of Secrets; it reports false
// when ctx ended first.
func (s *Secrets) WaitForSync(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced)
}

// Lookup implements credentials.Source: the Secret credentialName names,
// in the gateway proxy's namespace ns. A "kubernetes://NAME" reference is
// accepted; a namespace in it ("kubernetes://OTHER/NAME") must be ns.
// "kubernetes-gateway://NS/NAME" (a Gateway API certificateRef, which
// the translator passes only when a ReferenceGrant in NS allows it) is
// the Secret NAME in NS.
func (s *Secrets) Lookup(ns, name string) (translate.Credential, bool) {
	if ref, ok := strings.CutPrefix(name, gwapi.CredentialPrefix); ok {
		// A Gateway API certificateRef to another namespace: the
		// translator resolves it only when a ReferenceGrant allows it.
		refNS, refName, ok := strings.Cut(ref, "/")
		if !ok {
			return translate.Credential{}, false
		}
		ns, name = refNS, refName
	}
	name = strings.TrimPrefix(name, "kubernetes://")
	if i := strings.IndexByte(name, '/'); i >= 0 {
		if name[:i] != ns {
			s.log.Warn("gateway credential in another namespace ignored", "credentialName", name, "gatewayNamespace", ns)
			return translate.Credential{}, false
		}
		name = name[i+1:]
	}
	if name == "" {
		return translate.Credential{}, false
	}
	sec, err := s.lister.Secrets(ns).Get(name)
	if err != nil {
		return translate.Credential{}, false
	}
	cr, err := extract(sec)
	if err != nil {
		s.log.Warn("gateway credential unusable", "secret", ns+"/"+name, "err", err)
		return translate.Credential{}, false
	}
	if cr.CA == nil {
		if caSec, err := s.lister.Secrets(ns).Get(name + CACertSuffix); err == nil {
			if ca := first(caSec.Data, keyGenericCA, keyTLSCA); len(ca) > 0 {
				cr.CA = ca
			}
		}
	}
	return cr, true
}

// extract reads a credential from a tls or generic Secret.
func extract(sec *corev1.Secret) (translate.Credential, error) {
	var cr translate.Credential
	switch {
	case len(sec.Data[keyTLSCert]) > 0 || len(sec.Data[keyTLSKey]) > 0:
		cr = translate.Credential{Cert: sec.Data[keyTLSCert], Key: sec.Data[keyTLSKey]}
		if cr.Cert == nil || cr.Key == nil {
			return cr, fmt.Errorf("data: needs both %s and %s", keyTLSCert, keyTLSKey)
		}
	case len(sec.Data[keyGenericCert]) > 0 || len(sec.Data[keyGenericKey]) > 0:
		cr = translate.Credential{Cert: sec.Data[keyGenericCert], Key: sec.Data[keyGenericKey]}
		if cr.Cert == nil || cr.Key == nil {
			return cr, fmt.Errorf("data: needs both %s and %s", keyGenericCert, keyGenericKey)
		}
	default:
		return cr, fmt.Errorf("data: no %s/%s or %s/%s keys", keyTLSCert, keyTLSKey, keyGenericCert, keyGenericKey)
	}
	if _, err := tls.X509KeyPair(cr.Cert, cr.Key); err != nil {
		return cr, fmt.Errorf("data: certificate and key: %w", err)
	}
	if ca := first(sec.Data, keyTLSCA, keyGenericCA); len(ca) > 0 {
		cr.CA = ca
	}
	return cr, nil
}

func first(data map[string][]byte, keys ...string) []byte {
	for _, k := range keys {
		if v := data[k]; len(v) > 0 {
			return v
		}
	}
	return nil
}

var _ credentials.Source = (*Secrets)(nil)
