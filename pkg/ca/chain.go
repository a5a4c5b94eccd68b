package ca

import (
	"context"
	"errors"
)

// Chain tries its authenticators in order and returns the first identity
// one of them proves, so that join tokens (TokenStore) and Kubernetes
// service-account tokens (kubeca.TokenReview) work side by side. When all
// fail, the error joins theirs (errors.Is(err, ErrInvalidToken) holds when
// any of them said so).
type Chain []Authenticator

var _ Authenticator = Chain(nil)

// Authenticate implements Authenticator.
func (c Chain) Authenticate(ctx context.Context, credential string) (Identity, error) {
	if len(c) == 0 {
		return Identity{}, ErrInvalidToken
	}
	errs := make([]error, 0, len(c))
	for _, a := range c {
		id, err := a.Authenticate(ctx, credential)
		if err == nil {
			return id, nil
		}
		errs = append(errs, err)
	}
	return Identity{}, errors.Join(errs...)
}
