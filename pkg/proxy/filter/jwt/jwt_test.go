package jwt_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/proxy/filter/authctx"
	"github.com/weftmesh/weft/pkg/proxy/filter/jwt"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/authn"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

var testNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return testNow }

// seedYAML is the seed's RequestAuthentication with an inline jwks (and
// extra optional documents).
func seedYAML(jwks, extra string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata:
  name: jwt-auth
  namespace: default
spec:
  selector:
    matchLabels:
      app: http-server
  jwtRules:
  - issuer: "your-issuer"
    audiences:
    - "your-audience"
    jwks: '%s'
%s`, jwks, extra)
}

const allowPolicy = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: http-server}
  rules:
  - from: [{source: {requestPrincipals: ["your-issuer/*"]}}]
`

// chain is an inbound HTTP filter chain built from translated configs, in
// the translator's order (jwt_authn, then RBAC), ending in an app that
// records what it received.
type chain struct {
	filters []listener.HTTPFilter
	seen    *http.Request
}

func buildChain(t *testing.T, yaml string, opts ...jwt.Option) *chain {
	t.Helper()
	return buildChainTB(t, yaml, opts...)
}

func buildChainTB(t testing.TB, yaml string, opts ...jwt.Option) *chain {
	t.Helper()
	rs, errs := config.DecodeAll("policies.yaml", []byte(yaml))
	if len(errs.Errors()) > 0 {
		t.Fatal(errs)
	}
	p := &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "http-server"}}
	ja, err := authn.Translate(rs, p, "", nil)
	if err != nil || ja == nil {
		t.Fatalf("authn.Translate: %v, %v", ja, err)
	}
	c := &chain{}
	a, err := anypb.New(ja)
	if err != nil {
		t.Fatal(err)
	}
	f, err := jwt.Factory(nil, append([]jwt.Option{jwt.WithClock(clock)}, opts...)...)(a)
	if err != nil {
		t.Fatal(err)
	}
	c.filters = append(c.filters, f)
	pol, err := authz.Translate(rs, p, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range pol.Configs() {
		a, err := anypb.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f, err := rbac.Factory(nil)(a)
		if err != nil {
			t.Fatal(err)
		}
		c.filters = append(c.filters, f)
	}
	return c
}

// do runs r through the chain: the status and body, 200 "app" when the
// request reached the app.
func (c *chain) do(r *http.Request) (int, string) {
	w := httptest.NewRecorder()
	c.seen = nil
	for _, f := range c.filters {
		if f.Filter(w, r) {
			return w.Code, w.Body.String()
		}
	}
	c.seen = r
	return 200, "app"
}

func get(target string, hdr ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func TestSeedRequestAuthentication(t *testing.T) {
	k := newKeys(t)
	valid := k.sign(t, "RS256", "rsa-1", claims(testNow, nil), nil)
	other := strings.Split(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"sub": "mallory"}), nil), ".")
	tampered := valid[:strings.LastIndex(valid, ".")] + "." + other[2] // another token's signature
	parts := strings.Split(valid, ".")
	payloadSwap := parts[0] + "." + segment(t, claims(testNow, map[string]any{"sub": "admin"})) + "." + parts[2]
	tests := []struct {
		name      string
		req       *http.Request
		code      int
		body      string
		principal string // request principal the RBAC/app sees ("" none)
	}{
		{name: "valid RS256", req: get("/", bearer(valid)...), code: 200, principal: "your-issuer/alice"},
		{name: "valid ES256", req: get("/", bearer(k.sign(t, "ES256", "ec-1", claims(testNow, nil), nil))...), code: 200, principal: "your-issuer/alice"},
		{name: "valid without kid", req: get("/", bearer(k.sign(t, "RS256", "", claims(testNow, nil), nil))...), code: 200, principal: "your-issuer/alice"},
		{name: "lowercase bearer", req: get("/", "Authorization", "bearer "+valid), code: 200, principal: "your-issuer/alice"},
		{name: "access_token param", req: get("/x?access_token=" + valid), code: 200, principal: "your-issuer/alice"},
		{name: "no token", req: get("/"), code: 200},
		{name: "other auth scheme is no token", req: get("/", "Authorization", "Basic YTpi"), code: 200},
		{name: "expired", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"exp": testNow.Add(-2 * time.Minute).Unix()}), nil))...), code: 401, body: "Jwt is expired"},
		{name: "expired within clock skew", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"exp": testNow.Add(-30 * time.Second).Unix()}), nil))...), code: 200, principal: "your-issuer/alice"},
		{name: "not yet valid", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"nbf": testNow.Add(time.Hour).Unix()}), nil))...), code: 401, body: "Jwt not yet valid"},
		{name: "wrong issuer", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"iss": "evil-issuer"}), nil))...), code: 401, body: "Jwt issuer is not configured"},
		{name: "wrong audience", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"aud": "other"}), nil))...), code: 401, body: "Audiences in Jwt are not allowed"},
		{name: "no audience", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"aud": nil}), nil))...), code: 401, body: "Audiences in Jwt are not allowed"},
		{name: "bad signature", req: get("/", bearer(tampered)...), code: 401, body: "Jwt verification fails"},
		{name: "payload swapped", req: get("/", bearer(payloadSwap)...), code: 401, body: "Jwt verification fails"},
		{name: "alg none", req: get("/", bearer(k.sign(t, "none", "", claims(testNow, nil), nil))...), code: 401, body: "Jwt verification fails"},
		{name: "alg none with kid", req: get("/", bearer(k.sign(t, "none", "rsa-1", claims(testNow, nil), nil))...), code: 401, body: "Jwt verification fails"},
		{name: "HS256 with RSA public key PEM", req: get("/", bearer(k.sign(t, "HS256", "", claims(testNow, nil), k.rsaPublicPEM(t)))...), code: 401},
		{name: "HS256 with RSA kid", req: get("/", bearer(k.sign(t, "HS256", "rsa-1", claims(testNow, nil), k.rsaPublicPEM(t)))...), code: 401},
		{name: "RS256 with EC kid", req: get("/", bearer(k.sign(t, "RS256", "ec-1", claims(testNow, nil), nil))...), code: 401},
		{name: "unknown kid", req: get("/", bearer(k.sign(t, "RS256", "rsa-9", claims(testNow, nil), nil))...), code: 401},
		{name: "crit header", req: get("/", bearer(k.signHeader(t, map[string]any{"alg": "RS256", "kid": "rsa-1", "crit": []string{"exp"}}, claims(testNow, nil), nil))...), code: 401, body: "Jwt verification fails"},
		{name: "embedded jwk header is not trusted", req: get("/", bearer(k.signHeader(t, map[string]any{"alg": "HS256", "jwk": map[string]string{"kty": "oct", "k": "c2VjcmV0"}}, claims(testNow, nil), []byte("secret")))...), code: 401},
		{name: "not a jwt", req: get("/", bearer("abc")...), code: 401},
		{name: "garbage segments", req: get("/", bearer("a.b.c")...), code: 401, body: "Jwt verification fails"},
		{name: "string exp", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"exp": "tomorrow"}), nil))...), code: 401},
		{name: "valid header token and invalid param: header wins", req: get("/?access_token=bad", bearer(valid)...), code: 200, principal: "your-issuer/alice"},
	}
	c := buildChain(t, seedYAML(k.jwks, ""))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := c.do(tt.req)
			if code != tt.code || (tt.body != "" && body != tt.body) {
				t.Fatalf("got %d %q, want %d %q", code, body, tt.code, tt.body)
			}
			if code == 401 && tt.req.Context() != nil {
				if _, ok := authctx.From(tt.req.Context()); ok {
					t.Fatal("failed request carries a request principal")
				}
			}
			if code != 200 {
				return
			}
			a, ok := authctx.From(c.seen.Context())
			got := ""
			if ok {
				got = a.Principal
			}
			if got != tt.principal {
				t.Fatalf("principal %q, want %q", got, tt.principal)
			}
			if ok && c.seen.Header.Get("Authorization") != "" {
				t.Fatal("token forwarded although forwardOriginalToken is false")
			}
		})
	}
}

func TestSeedWithAllowPolicy(t *testing.T) {
	k := newKeys(t)
	c := buildChain(t, seedYAML(k.jwks, allowPolicy))
	tests := []struct {
		name string
		req  *http.Request
		code int
		body string
	}{
		{name: "no token", req: get("/"), code: 403, body: rbac.DeniedBody},
		{name: "valid token", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, nil), nil))...), code: 200},
		{name: "invalid token", req: get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, map[string]any{"aud": "x"}), nil))...), code: 401},
		{name: "forged payload header does not authenticate", req: get("/", "X-Jwt-Payload", segment(t, claims(testNow, nil))), code: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := c.do(tt.req)
			if code != tt.code || (tt.body != "" && body != tt.body) {
				t.Fatalf("got %d %q, want %d %q", code, body, tt.code, tt.body)
			}
		})
	}
}

// TestClaimsForRBAC checks claims, audiences and presenter reach RBAC.
func TestClaimsForRBAC(t *testing.T) {
	k := newKeys(t)
	c := buildChain(t, seedYAML(k.jwks, `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: claims, namespace: default}
spec:
  rules:
  - when:
    - {key: "request.auth.claims[groups]", values: ["ops"]}
    - {key: "request.auth.claims[scope]", values: ["write"]}
    - {key: "request.auth.claims[org][team]", values: ["blue"]}
    - {key: "request.auth.audiences", values: ["your-audience"]}
    - {key: "request.auth.presenter", values: ["web-app"]}
`))
	good := claims(testNow, map[string]any{"azp": "web-app", "org": map[string]any{"team": "blue"}})
	tests := []struct {
		name   string
		claims map[string]any
		code   int
	}{
		{name: "all match", claims: good, code: 200},
		{name: "group missing", claims: claims(testNow, map[string]any{"azp": "web-app", "org": map[string]any{"team": "blue"}, "groups": []string{"dev"}}), code: 403},
		{name: "scope not split match", claims: claims(testNow, map[string]any{"azp": "web-app", "org": map[string]any{"team": "blue"}, "scope": "read"}), code: 403},
		{name: "nested claim differs", claims: claims(testNow, map[string]any{"azp": "web-app", "org": map[string]any{"team": "red"}}), code: 403},
		{name: "presenter differs", claims: claims(testNow, map[string]any{"azp": "cli", "org": map[string]any{"team": "blue"}}), code: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := c.do(get("/", bearer(k.sign(t, "RS256", "rsa-1", tt.claims, nil))...))
			if code != tt.code {
				t.Fatalf("got %d %q, want %d", code, body, tt.code)
			}
		})
	}
}

func TestForwardingAndHeaders(t *testing.T) {
	k := newKeys(t)
	c := buildChain(t, fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: fwd, namespace: default}
spec:
  jwtRules:
  - issuer: your-issuer
    jwks: '%s'
    fromHeaders: [{name: x-jwt, prefix: "Token "}]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-user, claim: sub}]
`, k.jwks))
	tok := k.sign(t, "ES256", "ec-1", claims(testNow, nil), nil)
	payload := strings.Split(tok, ".")[1]

	// header with prefix, forwarded
	r := get("/", "X-Jwt", "Token "+tok, "X-User", "forged")
	if code, body := c.do(r); code != 200 {
		t.Fatalf("x-jwt: %d %s", code, body)
	}
	if got := c.seen.Header.Get("X-Jwt"); got != "Token "+tok {
		t.Errorf("forwarded token %q", got)
	}
	if got := c.seen.Header.Get("X-Jwt-Payload"); got != payload {
		t.Errorf("payload header %q, want %q", got, payload)
	}
	if got := c.seen.Header.Get("X-User"); got != "alice" {
		t.Errorf("x-user %q, want alice", got)
	}
	// cookie
	r = get("/")
	r.AddCookie(&http.Cookie{Name: "session", Value: tok})
	if code, body := c.do(r); code != 200 || c.seen.Header.Get("X-User") != "alice" {
		t.Fatalf("cookie: %d %s", code, body)
	}
	// Authorization is not a configured location: no token, and the
	// forged x-user header is stripped.
	r = get("/", append(bearer(tok), "X-User", "root", "X-Jwt-Payload", payload)...)
	if code, _ := c.do(r); code != 200 {
		t.Fatalf("bearer: %d", code)
	}
	if _, ok := authctx.From(c.seen.Context()); ok || c.seen.Header.Get("X-User") != "" || c.seen.Header.Get("X-Jwt-Payload") != "" {
		t.Errorf("unconfigured location authenticated or forged headers kept: %v", c.seen.Header)
	}
	// wrong prefix in x-jwt
	if code, _ := c.do(get("/", "X-Jwt", "Bearer "+tok)); code != 200 {
		t.Fatalf("x-jwt wrong prefix: %d", code)
	}
	if _, ok := authctx.From(c.seen.Context()); ok {
		t.Error("token with a wrong prefix authenticated")
	}
}

func TestRemoteJWKS(t *testing.T) {
	k := newKeys(t)
	var fetches atomic.Int32
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, k.jwks)
	}))
	defer srv.Close()
	now := testNow
	clk := func() time.Time { return now }
	yaml := fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: remote, namespace: default}
spec:
  jwtRules:
  - issuer: your-issuer
    jwksUri: %s/jwks.json
`, srv.URL)
	c := buildChain(t, yaml, jwt.WithClock(clk), jwt.WithHTTPClient(srv.Client()))
	ok := func(tag string) {
		t.Helper()
		tok := k.sign(t, "RS256", "rsa-1", claims(now, nil), nil)
		if code, body := c.do(get("/", bearer(tok)...)); code != 200 {
			t.Fatalf("%s: %d %s", tag, code, body)
		}
	}
	ok("first")
	ok("cached")
	if n := fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d, want 1 (cached)", n)
	}
	now = now.Add(authn.DefaultJWKSCacheDuration + time.Second)
	ok("after expiry")
	if n := fetches.Load(); n != 2 {
		t.Fatalf("fetches = %d, want 2 (refetch after cache duration)", n)
	}
	// A failed refresh keeps the previous keys.
	failing.Store(true)
	now = now.Add(authn.DefaultJWKSCacheDuration + time.Second)
	ok("stale keys on failed refresh")

	// No keys at all and the fetch fails: tokens fail, no token passes.
	c2 := buildChain(t, yaml, jwt.WithClock(clk), jwt.WithHTTPClient(srv.Client()))
	tok := k.sign(t, "RS256", "rsa-1", claims(now, nil), nil)
	if code, body := c2.do(get("/", bearer(tok)...)); code != 401 || body != jwt.ErrRemoteFetch.Error() {
		t.Fatalf("fetch failure: %d %q, want 401 %q", code, body, jwt.ErrRemoteFetch)
	}
	if code, _ := c2.do(get("/")); code != 200 {
		t.Fatalf("no token with failing jwks: %d, want 200", code)
	}
	// Unreachable server.
	srv.Close()
	c3 := buildChain(t, yaml, jwt.WithClock(clk), jwt.WithHTTPClient(&http.Client{Timeout: time.Second}))
	if code, _ := c3.do(get("/", bearer(tok)...)); code != 401 {
		t.Fatalf("unreachable jwks: %d, want 401", code)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *jwtauthnv3.JwtAuthentication
		ok   bool
	}{
		{name: "empty", cfg: &jwtauthnv3.JwtAuthentication{}, ok: true},
		{name: "unknown provider", cfg: &jwtauthnv3.JwtAuthentication{Rules: []*jwtauthnv3.RequirementRule{{
			RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: "nope"}}}}}}},
		{name: "no jwks source", cfg: &jwtauthnv3.JwtAuthentication{Providers: map[string]*jwtauthnv3.JwtProvider{"p": {Issuer: "i"}}}},
		{name: "requirement map", cfg: &jwtauthnv3.JwtAuthentication{RequirementMap: map[string]*jwtauthnv3.JwtRequirement{"r": {}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := jwt.New(tt.cfg, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestInvalidInlineJWKSFailsClosed: a broken jwks does not reject the
// config; its tokens fail.
func TestInvalidInlineJWKSFailsClosed(t *testing.T) {
	k := newKeys(t)
	c := buildChain(t, seedYAML(`{"keys":[{"kty":"RSA"}]}`, ""))
	if code, _ := c.do(get("/", bearer(k.sign(t, "RS256", "rsa-1", claims(testNow, nil), nil))...)); code != 401 {
		t.Fatalf("token against broken jwks: %d, want 401", code)
	}
	if code, _ := c.do(get("/")); code != 200 {
		t.Fatalf("no token: %d, want 200", code)
	}
}

// FuzzVerify: no token string, however malformed, panics the filter or
// authenticates a request (the fuzzer cannot forge signatures).
func FuzzVerify(f *testing.F) {
	k := newKeys(f)
	c := buildChainTB(f, seedYAML(k.jwks, ""))
	valid := k.sign(f, "RS256", "rsa-1", claims(testNow, nil), nil)
	parts := strings.Split(valid, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(k.sign(f, "none", "", claims(testNow, nil), nil))
	f.Add(k.sign(f, "HS256", "rsa-1", claims(testNow, nil), k.rsaPublicPEM(f)))
	f.Add("e30.e30.e30")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		code, _ := c.do(r)
		if code == 200 {
			if a, ok := authctx.From(c.seen.Context()); ok {
				t.Fatalf("token %q authenticated as %q", tok, a.Principal)
			}
		} else if code != 401 {
			t.Fatalf("token %q: status %d", tok, code)
		}
	})
}

// TestRemoteJWKSConcurrent: concurrent first requests share one fetch.
func TestRemoteJWKSConcurrent(t *testing.T) {
	k := newKeys(t)
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		time.Sleep(20 * time.Millisecond)
		fmt.Fprint(w, k.jwks)
	}))
	defer srv.Close()
	f, err := jwt.New(&jwtauthnv3.JwtAuthentication{
		Providers: map[string]*jwtauthnv3.JwtProvider{"p": {Issuer: "your-issuer", JwksSourceSpecifier: &jwtauthnv3.JwtProvider_RemoteJwks{
			RemoteJwks: &jwtauthnv3.RemoteJwks{HttpUri: &corev3.HttpUri{Uri: srv.URL}}}}},
		Rules: []*jwtauthnv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtauthnv3.RequirementRule_Requires{Requires: &jwtauthnv3.JwtRequirement{RequiresType: &jwtauthnv3.JwtRequirement_ProviderName{ProviderName: "p"}}}}},
	}, nil, jwt.WithClock(clock), jwt.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	tok := k.sign(t, "RS256", "rsa-1", claims(testNow, nil), nil)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := httptest.NewRecorder()
			if f.Filter(w, get("/", bearer(tok)...)) {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 || fetches.Load() != 1 {
		t.Fatalf("failed %d, fetches %d; want 0, 1", failed.Load(), fetches.Load())
	}
	// provider_name alone: a missing token is rejected.
	w := httptest.NewRecorder()
	if !f.Filter(w, get("/")) || w.Code != 401 || w.Body.String() != jwt.ErrMissing.Error() {
		t.Fatalf("missing token: %d %q, want 401 %q", w.Code, w.Body.String(), jwt.ErrMissing)
	}
}
