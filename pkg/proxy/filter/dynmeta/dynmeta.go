// Package dynmeta is the proxy's per-request dynamic metadata, Envoy's
// StreamInfo dynamic metadata reduced to string values: one HTTP filter
// sets filter/key = value (e.g. the RBAC filter's
// istio_ext_authz_shadow_effective_policy_id) and a later filter reads it
// (e.g. ext_authz's filter_enabled_metadata). It lives in the request
// context; filters of one request run serially, Set and Get are safe for
// concurrent use anyway.
package dynmeta

import (
	"context"
	"net/http"
	"sync"
)

type key struct{}

type metadata struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

// Set stores filter/key = value for r, attaching the metadata to r's
// context on first use (r is updated in place).
func Set(r *http.Request, filter, k, value string) {
	md, ok := r.Context().Value(key{}).(*metadata)
	if !ok {
		md = &metadata{m: map[string]map[string]string{}}
		*r = *r.WithContext(context.WithValue(r.Context(), key{}, md))
	}
	md.mu.Lock()
	defer md.mu.Unlock()
	f := md.m[filter]
	if f == nil {
		f = map[string]string{}
		md.m[filter] = f
	}
	f[k] = value
}

// Get returns filter/key from ctx.
func Get(ctx context.Context, filter, k string) (string, bool) {
	md, ok := ctx.Value(key{}).(*metadata)
	if !ok {
		return "", false
	}
	md.mu.Lock()
	defer md.mu.Unlock()
	v, ok := md.m[filter][k]
	return v, ok
}
