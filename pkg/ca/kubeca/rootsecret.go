package kubeca

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// RootSecretName is the Secret that holds the self-signed CA root in
// Kubernetes mode, in the control plane's namespace (Istio keeps its own
// in istio-ca-secret).
const RootSecretName = "weft-ca-root"

// Keys of the root Secret; the same names as the files in DataDir/ca.
const (
	rootCertKey = "root-cert.pem"
	rootKeyKey  = "root-key.pem"
)

// RootSecret keeps the self-signed CA root in a Secret so every replica,
// and every restart, of the control plane signs with the same root (the
// data directory is an emptyDir in the chart). Load runs before the CA
// starts; Store after it generated a root.
type RootSecret struct {
	Client    kubernetes.Interface
	Namespace string
	// Dir is the CA's directory (DataDir/ca).
	Dir string
}

// Load writes the Secret's root into Dir when the Secret exists and
// reports whether it did.
func (r RootSecret) Load(ctx context.Context) (bool, error) {
	s, err := r.Client.CoreV1().Secrets(r.Namespace).Get(ctx, RootSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("CA root secret %s/%s: %w", r.Namespace, RootSecretName, err)
	}
	cert, key := s.Data[rootCertKey], s.Data[rootKeyKey]
	if len(cert) == 0 || len(key) == 0 {
		return false, fmt.Errorf("CA root secret %s/%s: missing %s or %s", r.Namespace, RootSecretName, rootCertKey, rootKeyKey)
	}
	if err := os.MkdirAll(r.Dir, 0o700); err != nil {
		return false, err
	}
	for name, data := range map[string][]byte{rootCertKey: cert, rootKeyKey: key} {
		if err := os.WriteFile(filepath.Join(r.Dir, name), data, 0o600); err != nil {
			return false, fmt.Errorf("CA root secret: %w", err)
		}
	}
	return true, nil
}

// ErrLostRace means another replica stored its root first; Load it and
// restart the CA with it.
var ErrLostRace = errors.New("another replica stored the CA root first")

// Store creates the Secret from Dir's root. If the Secret exists already
// it returns ErrLostRace (unless it holds this very root).
func (r RootSecret) Store(ctx context.Context) error {
	cert, err := os.ReadFile(filepath.Join(r.Dir, rootCertKey))
	if err != nil {
		return fmt.Errorf("CA root secret: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(r.Dir, rootKeyKey))
	if err != nil {
		return fmt.Errorf("CA root secret: %w", err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: RootSecretName, Namespace: r.Namespace, Labels: map[string]string{"app.kubernetes.io/part-of": "weft"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{rootCertKey: cert, rootKeyKey: key},
	}
	_, err = r.Client.CoreV1().Secrets(r.Namespace).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		cur, gerr := r.Client.CoreV1().Secrets(r.Namespace).Get(ctx, RootSecretName, metav1.GetOptions{})
		if gerr == nil && string(cur.Data[rootCertKey]) == string(cert) {
			return nil
		}
		return ErrLostRace
	}
	if err != nil {
		return fmt.Errorf("CA root secret %s/%s: %w", r.Namespace, RootSecretName, err)
	}
	return nil
}
