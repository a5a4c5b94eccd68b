// Package jwt executes the Envoy JWT authentication HTTP filter config
// (envoy.filters.http.jwt_authn, built from RequestAuthentication by
// pkg/xds/translate/authn) in the proxy: it extracts tokens from headers,
// query parameters and cookies, verifies their signature against an
// inline or remote JWKS, checks issuer, audiences and time claims, and
// answers 401 like Envoy when verification fails. A verified token's
// identity (request.auth.*) is handed to later filters (RBAC) through
// package authctx.
package jwt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/filter/authctx"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// FilterName is the http_filters name this package implements.
const FilterName = "envoy.filters.http.jwt_authn"

// DefaultClockSkew is Envoy's clock_skew_seconds default.
const DefaultClockSkew = 60 * time.Second

// Envoy's failure messages (the 401 body).
var (
	ErrMissing      = errors.New("Jwt is missing")
	ErrVerification = errors.New("Jwt verification fails")
	ErrExpired      = errors.New("Jwt is expired")
	ErrNotYetValid  = errors.New("Jwt not yet valid")
	ErrAudience     = errors.New("Audiences in Jwt are not allowed")
	ErrIssuer       = errors.New("Jwt issuer is not configured")
	ErrNoKey        = errors.New("Jwks doesn't have key to match kid or alg from Jwt")
	ErrFormat       = errors.New("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
	ErrRemoteFetch  = errors.New("Jwks remote fetch is failed")
)

// Option configures filters built by Filters / Factory / New.
type Option func(*env)

// WithClock sets the clock used for exp/nbf checks (default time.Now).
func WithClock(now func() time.Time) Option { return func(e *env) { e.now = now } }

// WithHTTPClient sets the client that fetches remote JWKS (default a
// client without redirects limit changes and the configured timeout).
func WithHTTPClient(c *http.Client) Option { return func(e *env) { e.client = c } }

type env struct {
	log    *slog.Logger
	now    func() time.Time
	client *http.Client
	cache  *jwksCache
}

func newEnv(log *slog.Logger, opts []Option) *env {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &env{log: log, now: time.Now, client: &http.Client{}}
	for _, o := range opts {
		o(e)
	}
	e.cache = newJWKSCache(e.client, e.now, log)
	return e
}

// Filters returns the filter factories this package provides (pass as
// proxy.Options.HTTPFilters, merged with others). Remote JWKS are cached
// across config updates.
func Filters(log *slog.Logger, opts ...Option) map[string]listener.FilterFactory {
	return map[string]listener.FilterFactory{FilterName: Factory(log, opts...)}
}

// Factory builds JWT filters from http_filters typed configs.
func Factory(log *slog.Logger, opts ...Option) listener.FilterFactory {
	e := newEnv(log, opts)
	return func(tc *anypb.Any) (listener.HTTPFilter, error) {
		cfg := &jwtauthnv3.JwtAuthentication{}
		if tc != nil {
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", FilterName, err)
			}
		}
		return e.build(cfg)
	}
}

// New builds one filter from cfg.
func New(cfg *jwtauthnv3.JwtAuthentication, log *slog.Logger, opts ...Option) (*Filter, error) {
	return newEnv(log, opts).build(cfg)
}

// Filter is one jwt_authn filter instance (listener.HTTPFilter).
type Filter struct {
	env        *env
	providers  map[string]*provider
	rules      []rule
	bypassCORS bool
	// strip are headers a verified token writes (payload, claims); they
	// are removed from every request so clients cannot forge them.
	strip []string
}

type rule struct {
	prefix, path string
	req          requirement
}

func (e *env) build(cfg *jwtauthnv3.JwtAuthentication) (*Filter, error) {
	f := &Filter{env: e, providers: map[string]*provider{}, bypassCORS: cfg.GetBypassCorsPreflight()}
	for name, pc := range cfg.GetProviders() {
		p, err := e.newProvider(name, pc)
		if err != nil {
			return nil, fmt.Errorf("%s: provider %q: %w", FilterName, name, err)
		}
		f.providers[name] = p
		if h := pc.GetForwardPayloadHeader(); h != "" {
			f.strip = append(f.strip, h)
		}
		for _, c := range pc.GetClaimToHeaders() {
			f.strip = append(f.strip, c.GetHeaderName())
		}
	}
	if len(cfg.GetRequirementMap()) > 0 || cfg.GetFilterStateRules() != nil {
		return nil, fmt.Errorf("%s: requirement_map and filter_state_rules are not supported", FilterName)
	}
	for i, rc := range cfg.GetRules() {
		var r rule
		switch {
		case rc.GetMatch().GetPrefix() != "" || rc.GetMatch().GetPathSpecifier() == nil:
			r.prefix = rc.GetMatch().GetPrefix()
		case rc.GetMatch().GetPath() != "":
			r.path = rc.GetMatch().GetPath()
		default:
			return nil, fmt.Errorf("%s: rules[%d]: only prefix and path matches are supported", FilterName, i)
		}
		if rc.GetMatch().GetHeaders() != nil || rc.GetMatch().GetQueryParameters() != nil {
			return nil, fmt.Errorf("%s: rules[%d]: header and query matches are not supported", FilterName, i)
		}
		if rc.GetRequires() == nil {
			return nil, fmt.Errorf("%s: rules[%d]: only requires is supported", FilterName, i)
		}
		req, err := f.compile(rc.GetRequires())
		if err != nil {
			return nil, fmt.Errorf("%s: rules[%d]: %w", FilterName, i, err)
		}
		r.req = req
		f.rules = append(f.rules, r)
	}
	return f, nil
}

// Filter verifies the request's JWT; it answers 401 itself (returning
// true) when the rule's requirement fails.
func (f *Filter) Filter(w http.ResponseWriter, r *http.Request) bool {
	for _, h := range f.strip {
		r.Header.Del(h)
	}
	if f.bypassCORS && r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		return false
	}
	var req requirement
	for _, ru := range f.rules {
		if (ru.path != "" && r.URL.Path == ru.path) || (ru.path == "" && strings.HasPrefix(r.URL.Path, ru.prefix)) {
			req = ru.req
			break
		}
	}
	if req == nil {
		return false
	}
	ev := &evaluation{f: f, r: r, cache: map[string]*result{}}
	res := req.eval(ev)
	if res.err != nil {
		f.env.log.Debug("jwt authentication failed", "error", res.err, "path", r.URL.Path)
		reply(w, r, res.err)
		return true
	}
	if res.v != nil {
		res.v.apply(r)
	}
	return false
}

// reply writes Envoy's 401 local reply (gRPC: status UNAUTHENTICATED).
func reply(w http.ResponseWriter, r *http.Request, err error) {
	msg := err.Error()
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "16")
		w.Header().Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Www-Authenticate", `Bearer realm="`+realm(r)+`", error="invalid_token"`)
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = fmt.Fprint(w, msg)
}

func realm(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.NewReplacer(`"`, "", `\`, "").Replace(scheme + "://" + r.Host + r.URL.Path)
}

// ---- requirements

// result of evaluating a requirement: v is the verified token (nil when
// allowed without one); err is the failure; missing means every provider
// consulted found no token.
type result struct {
	v       *verified
	err     error
	missing bool
}

type evaluation struct {
	f     *Filter
	r     *http.Request
	cache map[string]*result // by provider name
}

type requirement interface{ eval(*evaluation) *result }

type reqProvider struct {
	name      string
	audiences []string // override (provider_and_audiences)
}

type reqAny struct {
	reqs                               []requirement
	allowMissing, allowMissingOrFailed bool
}

type reqAll struct{ reqs []requirement }

func (f *Filter) compile(jr *jwtauthnv3.JwtRequirement) (requirement, error) {
	switch t := jr.GetRequiresType().(type) {
	case *jwtauthnv3.JwtRequirement_ProviderName:
		if f.providers[t.ProviderName] == nil {
			return nil, fmt.Errorf("unknown provider %q", t.ProviderName)
		}
		return &reqProvider{name: t.ProviderName}, nil
	case *jwtauthnv3.JwtRequirement_ProviderAndAudiences:
		n := t.ProviderAndAudiences.GetProviderName()
		if f.providers[n] == nil {
			return nil, fmt.Errorf("unknown provider %q", n)
		}
		return &reqProvider{name: n, audiences: t.ProviderAndAudiences.GetAudiences()}, nil
	case *jwtauthnv3.JwtRequirement_RequiresAny:
		out := &reqAny{}
		for _, c := range t.RequiresAny.GetRequirements() {
			switch c.GetRequiresType().(type) {
			case *jwtauthnv3.JwtRequirement_AllowMissing:
				out.allowMissing = true
				continue
			case *jwtauthnv3.JwtRequirement_AllowMissingOrFailed:
				out.allowMissingOrFailed = true
				continue
			}
			r, err := f.compile(c)
			if err != nil {
				return nil, err
			}
			out.reqs = append(out.reqs, r)
		}
		return out, nil
	case *jwtauthnv3.JwtRequirement_RequiresAll:
		out := &reqAll{}
		for _, c := range t.RequiresAll.GetRequirements() {
			r, err := f.compile(c)
			if err != nil {
				return nil, err
			}
			out.reqs = append(out.reqs, r)
		}
		return out, nil
	case *jwtauthnv3.JwtRequirement_AllowMissing:
		return &reqAny{reqs: f.allProviders(), allowMissing: true}, nil
	case *jwtauthnv3.JwtRequirement_AllowMissingOrFailed:
		return &reqAny{reqs: f.allProviders(), allowMissingOrFailed: true}, nil
	default:
		return nil, fmt.Errorf("requirement %T is not supported", t)
	}
}

func (f *Filter) allProviders() []requirement {
	var out []requirement
	for n := range f.providers {
		out = append(out, &reqProvider{name: n})
	}
	return out
}

func (q *reqProvider) eval(ev *evaluation) *result {
	key := q.name + "\x00" + strings.Join(q.audiences, "\x00")
	if r, ok := ev.cache[key]; ok {
		return r
	}
	p := ev.f.providers[q.name]
	res := p.authenticate(ev.r, q.audiences, ev.f.env)
	ev.cache[key] = res
	return res
}

func (q *reqAny) eval(ev *evaluation) *result {
	var firstErr error
	allMissing := true
	for _, c := range q.reqs {
		r := c.eval(ev)
		if r.err == nil {
			return r
		}
		if !r.missing {
			allMissing = false
			if firstErr == nil {
				firstErr = r.err
			}
		}
	}
	switch {
	case q.allowMissingOrFailed:
		return &result{}
	case allMissing && q.allowMissing:
		return &result{missing: true}
	case firstErr != nil:
		return &result{err: firstErr}
	default:
		return &result{err: ErrMissing, missing: true}
	}
}

func (q *reqAll) eval(ev *evaluation) *result {
	var out *result
	for _, c := range q.reqs {
		r := c.eval(ev)
		if r.err != nil {
			return r
		}
		if out == nil || out.v == nil {
			out = r
		}
	}
	if out == nil {
		return &result{}
	}
	return out
}

// ---- verified tokens

type verified struct {
	p       *provider
	loc     location
	token   string
	payload string // base64url payload segment
	auth    *authctx.RequestAuth
	claims  map[string]any
}

// apply publishes the verified token: request context (for RBAC), payload
// and claim headers, and strips the token unless forward is set.
func (v *verified) apply(r *http.Request) {
	if !v.p.forward && v.loc.kind == locHeader {
		r.Header.Del(v.loc.name)
	}
	if v.p.payloadHeader != "" {
		pl := v.payload
		if v.p.padPayload {
			if b, err := base64.RawURLEncoding.DecodeString(pl); err == nil {
				pl = base64.URLEncoding.EncodeToString(b)
			}
		}
		r.Header.Set(v.p.payloadHeader, pl)
	}
	for _, c := range v.p.claimHeaders {
		if s, ok := scalar(v.claims[c.claim]); ok {
			r.Header.Set(c.header, s)
		}
	}
	*r = *r.WithContext(authctx.With(r.Context(), v.auth))
}

// ---- providers

type provider struct {
	name          string
	issuer        string
	audiences     []string
	locations     []location
	forward       bool
	payloadHeader string
	padPayload    bool
	claimHeaders  []claimHeader
	spaceClaims   map[string]bool
	skew          time.Duration
	requireExp    bool
	keys          func(ctx context.Context) (jwk.Set, error)
}

type claimHeader struct{ header, claim string }

func (e *env) newProvider(name string, pc *jwtauthnv3.JwtProvider) (*provider, error) {
	p := &provider{
		name: name, issuer: pc.GetIssuer(), audiences: pc.GetAudiences(),
		forward: pc.GetForward(), payloadHeader: pc.GetForwardPayloadHeader(), padPayload: pc.GetPadForwardPayloadHeader(),
		skew: DefaultClockSkew, requireExp: pc.GetRequireExpiration(), spaceClaims: map[string]bool{},
	}
	if s := pc.GetClockSkewSeconds(); s > 0 {
		p.skew = time.Duration(s) * time.Second
	}
	for _, c := range pc.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims() {
		p.spaceClaims[c] = true
	}
	for _, c := range pc.GetClaimToHeaders() {
		p.claimHeaders = append(p.claimHeaders, claimHeader{header: c.GetHeaderName(), claim: c.GetClaimName()})
	}
	p.locations = Locations(pc)
	switch src := pc.GetJwksSourceSpecifier().(type) {
	case *jwtauthnv3.JwtProvider_LocalJwks:
		var data []byte
		switch {
		case src.LocalJwks.GetInlineString() != "":
			data = []byte(src.LocalJwks.GetInlineString())
		case len(src.LocalJwks.GetInlineBytes()) > 0:
			data = src.LocalJwks.GetInlineBytes()
		default:
			return nil, fmt.Errorf("local_jwks: only inline_string and inline_bytes are supported")
		}
		set, err := jwk.Parse(data)
		if err != nil {
			// Fail closed without rejecting the whole listener update:
			// every token for this provider fails.
			e.log.Warn("jwt provider has an invalid inline jwks; its tokens will be rejected", "provider", name, "issuer", p.issuer, "error", err)
			set = jwk.NewSet()
		}
		p.keys = func(context.Context) (jwk.Set, error) { return set, nil }
	case *jwtauthnv3.JwtProvider_RemoteJwks:
		uri := src.RemoteJwks.GetHttpUri().GetUri()
		if _, err := url.ParseRequestURI(uri); err != nil {
			return nil, fmt.Errorf("remote_jwks uri %q: %w", uri, err)
		}
		timeout := src.RemoteJwks.GetHttpUri().GetTimeout().AsDuration()
		if timeout <= 0 {
			timeout = 5 * time.Second
		}
		ttl := src.RemoteJwks.GetCacheDuration().AsDuration()
		if ttl <= 0 {
			ttl = 10 * time.Minute // Envoy's default
		}
		p.keys = func(ctx context.Context) (jwk.Set, error) { return e.cache.get(ctx, uri, timeout, ttl) }
	default:
		return nil, fmt.Errorf("no jwks source")
	}
	return p, nil
}

// authenticate finds this provider's token in r and verifies it.
func (p *provider) authenticate(r *http.Request, audOverride []string, e *env) *result {
	toks := p.extract(r)
	if len(toks) == 0 {
		return &result{err: ErrMissing, missing: true}
	}
	var firstErr error
	for _, t := range toks {
		v, err := p.verify(r.Context(), t, audOverride, e)
		if err == nil {
			return &result{v: v}
		}
		if firstErr == nil || errors.Is(firstErr, ErrIssuer) {
			firstErr = err
		}
	}
	return &result{err: firstErr}
}

func (p *provider) extract(r *http.Request) []found {
	return extract(p.locations, r.Header, r.URL.RawQuery, r.Cookies)
}

// verify checks one token completely.
func (p *provider) verify(ctx context.Context, t found, audOverride []string, e *env) (*verified, error) {
	parts := strings.Split(t.token, ".")
	if len(parts) != 3 {
		return nil, ErrFormat
	}
	var hdr struct {
		Alg  string          `json:"alg"`
		Kid  string          `json:"kid"`
		Crit json.RawMessage `json:"crit"`
		B64  json.RawMessage `json:"b64"`
	}
	hb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[0], "="))
	if err != nil || json.Unmarshal(hb, &hdr) != nil || hdr.Crit != nil || hdr.B64 != nil {
		// No critical extensions (e.g. RFC 7797 unencoded payloads).
		return nil, ErrVerification
	}
	pb, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil, ErrVerification
	}
	claims := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(pb))
	dec.UseNumber()
	if err := dec.Decode(&claims); err != nil {
		return nil, ErrVerification
	}
	iss, _ := claims["iss"].(string)
	if p.issuer != "" && iss != p.issuer {
		return nil, ErrIssuer
	}
	alg, ok := allowedAlg(hdr.Alg)
	if !ok {
		return nil, ErrVerification
	}
	set, err := p.keys(ctx)
	if err != nil {
		e.log.Warn("jwks fetch failed; rejecting token", "provider", p.name, "issuer", p.issuer, "error", err)
		return nil, ErrRemoteFetch
	}
	cands := candidates(set, hdr.Kid, hdr.Alg)
	if len(cands) == 0 {
		return nil, ErrNoKey
	}
	okSig := false
	for _, k := range cands {
		if _, err := jws.Verify([]byte(t.token), jws.WithKey(alg, k)); err == nil {
			okSig = true
			break
		}
	}
	if !okSig {
		return nil, ErrVerification
	}
	now := e.now()
	exp, hasExp, err := numericDate(claims["exp"])
	if err != nil {
		return nil, ErrVerification
	}
	if hasExp && now.After(exp.Add(p.skew)) {
		return nil, ErrExpired
	}
	if !hasExp && p.requireExp {
		return nil, ErrVerification
	}
	nbf, hasNbf, err := numericDate(claims["nbf"])
	if err != nil {
		return nil, ErrVerification
	}
	if hasNbf && now.Add(p.skew).Before(nbf) {
		return nil, ErrNotYetValid
	}
	auds := stringList(claims["aud"])
	want := p.audiences
	if audOverride != nil {
		want = audOverride
	}
	if len(want) > 0 && !intersects(want, auds) {
		return nil, ErrAudience
	}
	sub, _ := claims["sub"].(string)
	azp, _ := claims["azp"].(string)
	a := &authctx.RequestAuth{Issuer: iss, Subject: sub, Audiences: auds, Presenter: azp, Claims: map[string][]string{}}
	if iss != "" || sub != "" {
		a.Principal = iss + "/" + sub
	}
	flatten("", claims, p.spaceClaims, a.Claims)
	return &verified{p: p, loc: t.loc, token: t.token, payload: strings.TrimRight(parts[1], "="), auth: a, claims: claims}, nil
}

// allowedAlg maps the JWS alg header to an algorithm; "none" and unknown
// algorithms are refused.
func allowedAlg(name string) (jwa.SignatureAlgorithm, bool) {
	switch name {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512":
		return jwa.LookupSignatureAlgorithm(name)
	}
	return jwa.SignatureAlgorithm{}, false
}

// candidates returns the keys that may verify a token with kid and alg:
// the key type must fit the algorithm (so an HS256 token is never checked
// against an RSA or EC public key), a key's own alg and kid must match
// when set.
func candidates(set jwk.Set, kid, alg string) []jwk.Key {
	var out []jwk.Key
	for i := 0; i < set.Len(); i++ {
		k, ok := set.Key(i)
		if !ok {
			continue
		}
		if kk, ok := k.KeyID(); ok && kk != "" && kid != "" && kk != kid {
			continue
		}
		if ka, ok := k.Algorithm(); ok && ka.String() != "" && ka.String() != alg {
			continue
		}
		if !keyFits(k, alg) {
			continue
		}
		if u, ok := k.KeyUsage(); ok && u != "" && u != "sig" {
			continue
		}
		out = append(out, k)
	}
	return out
}

func keyFits(k jwk.Key, alg string) bool {
	kt := k.KeyType()
	switch alg[:2] {
	case "RS", "PS":
		return kt == jwa.RSA()
	case "HS":
		return kt == jwa.OctetSeq()
	case "Ed":
		return kt == jwa.OKP()
	case "ES":
		if kt != jwa.EC() {
			return false
		}
		ek, ok := k.(jwk.ECDSAPublicKey)
		if !ok {
			return false
		}
		crv, _ := ek.Crv()
		switch alg {
		case "ES256":
			return crv == jwa.P256()
		case "ES384":
			return crv == jwa.P384()
		case "ES512":
			return crv == jwa.P521()
		}
	}
	return false
}

func numericDate(v any) (time.Time, bool, error) {
	if v == nil {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false, fmt.Errorf("not a number")
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1e12 {
		return time.Time{}, false, fmt.Errorf("bad numeric date %q", n)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

func stringList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func intersects(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}

// scalar formats a string, number or bool claim.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// flatten fills out with claim paths ("a", nested "a.b") and their string
// values; lists keep their string/scalar elements; space-delimited claims
// (top-level names in space) are split.
func flatten(prefix string, m map[string]any, space map[string]bool, out map[string][]string) {
	for k, v := range m {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		switch x := v.(type) {
		case map[string]any:
			flatten(key, x, space, out)
		case []any:
			var vs []string
			for _, e := range x {
				if s, ok := scalar(e); ok {
					vs = append(vs, s)
				}
			}
			out[key] = vs
		case string:
			if prefix == "" && space[k] {
				out[key] = strings.Fields(x)
			} else {
				out[key] = []string{x}
			}
		default:
			if s, ok := scalar(x); ok {
				out[key] = []string{s}
			}
		}
	}
}
