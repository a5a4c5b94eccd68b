// Package authctx carries the result of request authentication (the JWT
// filter) to later HTTP filters (RBAC) through the request context.
package authctx

import "context"

// RequestAuth is a verified JWT's identity, as Istio exposes it to
// AuthorizationPolicy (request.auth.*).
type RequestAuth struct {
	// Principal is "iss/sub".
	Principal string
	Issuer    string
	Subject   string
	Audiences []string
	// Presenter is the azp claim.
	Presenter string
	// Claims maps claim paths ("groups", nested "a.b") to their string
	// values; a string claim is a one-element list (space-delimited
	// claims such as scope are split).
	Claims map[string][]string
}

type key struct{}

// With returns ctx carrying a.
func With(ctx context.Context, a *RequestAuth) context.Context {
	return context.WithValue(ctx, key{}, a)
}

// From returns the RequestAuth in ctx, if any.
func From(ctx context.Context) (*RequestAuth, bool) {
	a, ok := ctx.Value(key{}).(*RequestAuth)
	return a, ok && a != nil
}
