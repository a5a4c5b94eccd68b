// Package kubeca runs Weft's CA inside Kubernetes: it authenticates
// workloads by their projected service-account tokens with the TokenReview
// API, and publishes the CA's roots in a ConfigMap in every namespace
// (istio-ca-root-cert, key root-cert.pem), as Istio does. It lives apart
// from pkg/ca so that the CA core does not depend on client-go.
package kubeca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/pkg/ca"
)

// DefaultAudience is the audience Istio's CA asks of workload tokens (the
// injector projects the token with it).
const DefaultAudience = "istio-ca"

// serviceAccountPrefix starts the user name of a service-account token.
const serviceAccountPrefix = "system:serviceaccount:"

// TokenReview authenticates bearer tokens with the API server's TokenReview
// API: the token must be a service-account token valid for one of
// Audiences, and the identity is the namespace and service account of its
// user name (system:serviceaccount:NS:SA). Safe for concurrent use.
type TokenReview struct {
	client    kubernetes.Interface
	audiences []string
}

var _ ca.Authenticator = (*TokenReview)(nil)

// NewTokenReview returns the authenticator; audiences default to
// ["istio-ca"].
func NewTokenReview(client kubernetes.Interface, audiences ...string) *TokenReview {
	if len(audiences) == 0 {
		audiences = []string{DefaultAudience}
	}
	return &TokenReview{client: client, audiences: audiences}
}

// Authenticate implements ca.Authenticator. Rejections wrap
// ca.ErrInvalidToken; a failing API call is returned as is.
func (a *TokenReview) Authenticate(ctx context.Context, token string) (ca.Identity, error) {
	if token == "" || strings.HasPrefix(token, ca.TokenPrefix) {
		// Join tokens are not for the API server: do not send them.
		return ca.Identity{}, ca.ErrInvalidToken
	}
	tr := &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.audiences}}
	res, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, tr, metav1.CreateOptions{})
	if err != nil {
		return ca.Identity{}, fmt.Errorf("kubeca: TokenReview: %w", err)
	}
	st := res.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return ca.Identity{}, fmt.Errorf("%w: TokenReview: %s", ca.ErrInvalidToken, msg)
	}
	if len(st.Audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(s string) bool { return slices.Contains(a.audiences, s) }) {
		return ca.Identity{}, fmt.Errorf("%w: token audiences %v do not include %v", ca.ErrInvalidToken, st.Audiences, a.audiences)
	}
	id, err := identityFromUsername(st.User.Username)
	if err != nil {
		return ca.Identity{}, err
	}
	return id, nil
}

// identityFromUsername parses system:serviceaccount:NS:SA.
func identityFromUsername(u string) (ca.Identity, error) {
	rest, ok := strings.CutPrefix(u, serviceAccountPrefix)
	if !ok {
		return ca.Identity{}, fmt.Errorf("%w: user %q is not a service account", ca.ErrInvalidToken, u)
	}
	ns, sa, ok := strings.Cut(rest, ":")
	if !ok || strings.Contains(sa, ":") {
		return ca.Identity{}, fmt.Errorf("%w: malformed service account user %q", ca.ErrInvalidToken, u)
	}
	id := ca.Identity{Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return ca.Identity{}, errors.Join(ca.ErrInvalidToken, err)
	}
	return id, nil
}
