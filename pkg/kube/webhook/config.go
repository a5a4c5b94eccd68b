package webhook

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sort"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/kube/inject"
)

// SelfSigned returns a PEM certificate and key valid for hosts (DNS names
// or IPs) for validFor. The certificate is its own CA: it is also the
// caBundle of the webhook configurations.
func SelfSigned(hosts []string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "weft-webhook", Organization: []string{"weft"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: create certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// Names of the webhooks in the generated configurations.
const (
	NamespaceInjectWebhook = "namespace.sidecar-injector.weft.io"
	ObjectInjectWebhook    = "object.sidecar-injector.weft.io"
	ValidationWebhook      = "validation.weft.io"
)

// ClientConfig points the API server at the webhook: either a URL base
// ("https://127.0.0.1:15017") or an in-cluster service, with the CA bundle.
type ClientConfig struct {
	URL              string // base URL; the path is appended
	ServiceNamespace string
	ServiceName      string
	ServicePort      int32
	CABundle         []byte
}

func (c ClientConfig) forPath(p string) admissionregistrationv1.WebhookClientConfig {
	if c.URL != "" {
		u := c.URL + p
		return admissionregistrationv1.WebhookClientConfig{URL: &u, CABundle: c.CABundle}
	}
	path := p
	port := c.ServicePort
	if port == 0 {
		port = 443
	}
	return admissionregistrationv1.WebhookClientConfig{CABundle: c.CABundle, Service: &admissionregistrationv1.ServiceReference{
		Namespace: c.ServiceNamespace, Name: c.ServiceName, Path: &path, Port: &port,
	}}
}

// MutatingConfiguration returns the sidecar injector's configuration. As
// Istio's, it selects pods two ways: in namespaces labelled
// istio-injection=enabled unless the pod opts out, and in unlabelled
// namespaces when the pod opts in with the sidecar.istio.io/inject=true label.
func MutatingConfiguration(name string, cc ClientConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	never := admissionregistrationv1.NeverReinvocationPolicy
	timeout := int32(10)
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
	}}
	hook := func(name string, nsSel, objSel *metav1.LabelSelector) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:                    name,
			ClientConfig:            cc.forPath(PathInject),
			Rules:                   rules,
			FailurePolicy:           &fail,
			SideEffects:             &none,
			ReinvocationPolicy:      &never,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
			NamespaceSelector:       nsSel,
			ObjectSelector:          objSel,
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook(NamespaceInjectWebhook,
				&metav1.LabelSelector{MatchLabels: map[string]string{inject.LabelInjection: "enabled"}},
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: inject.KeyInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}}}}),
			hook(ObjectInjectWebhook,
				&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: inject.LabelInjection, Operator: metav1.LabelSelectorOpDoesNotExist},
					{Key: inject.LabelRevision, Operator: metav1.LabelSelectorOpDoesNotExist},
				}},
				&metav1.LabelSelector{MatchLabels: map[string]string{inject.KeyInject: "true"}}),
		},
	}
}

// ValidatingConfiguration returns the configuration sending every Istio
// kind (all served versions) to /validate on CREATE and UPDATE.
func ValidatingConfiguration(name string, cc ClientConfig) *admissionregistrationv1.ValidatingWebhookConfiguration {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	timeout := int32(10)
	groups := map[string][]string{}
	versions := map[string]bool{}
	for _, s := range config.Schemas() {
		if s.Group == config.GroupGatewayAPI {
			// Gateway API objects may belong to other controllers; their
			// CRDs validate them, and the store reports what weft refuses.
			continue
		}
		groups[s.Group] = append(groups[s.Group], s.Plural)
		for _, v := range s.Versions {
			versions[v] = true
		}
	}
	vs := make([]string, 0, len(versions))
	for v := range versions {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	gs := make([]string, 0, len(groups))
	for g := range groups {
		gs = append(gs, g)
	}
	sort.Strings(gs)
	var rules []admissionregistrationv1.RuleWithOperations
	for _, g := range gs {
		rules = append(rules, admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{g}, APIVersions: vs, Resources: groups[g]},
		})
	}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    ValidationWebhook,
			ClientConfig:            cc.forPath(PathValidate),
			Rules:                   rules,
			FailurePolicy:           &fail,
			SideEffects:             &none,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}
