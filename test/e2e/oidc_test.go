package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestRequestAuthenticationOIDCDiscovery: a RequestAuthentication jwtRule
// with only an issuer. The control plane resolves the issuer's jwks_uri from
// its OpenID discovery document (a real provider on 127.0.0.1) and the proxy
// fetches the keys from it: a token signed by the provider passes, a forged
// one is 401. While the discovery document cannot be fetched, tokens are
// rejected (never a silent allow) and the failure is logged.
func TestRequestAuthenticationOIDCDiscovery(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	bin := weft.Binary(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var discoveryUp atomic.Bool
	var idp *httptest.Server
	idp = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			if !discoveryUp.Load() {
				http.Error(w, "maintenance", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, idp.URL, idp.URL+"/oauth2/keys")
		case "/oauth2/keys":
			_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
				"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes())}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(idp.Close)
	sign := func(k *rsa.PrivateKey) string {
		enc := func(v any) string {
			b, _ := json.Marshal(v)
			return base64.RawURLEncoding.EncodeToString(b)
		}
		in := enc(map[string]string{"alg": "RS256", "kid": "k1", "typ": "JWT"}) + "." +
			enc(map[string]any{"iss": idp.URL, "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
		h := sha256.Sum256([]byte(in))
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return in + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	forger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good, forged := sign(key), sign(forger)

	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "app") }))

	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "ra.yaml"), []byte(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: oidc, namespace: default}
spec:
  selector: {matchLabels: {app: shop}}
  jwtRules:
  - issuer: "`+idp.URL+`"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := harness.StartControlPlane(t, bin, "--config-dir", configDir, "--data-dir", t.TempDir(), "--xds-address", "127.0.0.1:0",
		"--monitoring-address", "", "--dashboard-address", "", "--debounce", "50ms")
	xds := cp.ListenAddress(t, "xDS server")
	addrs, proxy := startAppSidecar(t, bin, xds, "shop", appPort)
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addrs.Inbound+"/", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	waitCode := func(what, token string, want int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := get(token)
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: status %d, want %d\ncontrol plane:\n%s\nproxy:\n%s", what, got, want, cp.Stderr(), proxy.Stderr())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Discovery down: the provider has no keys, a valid token is refused,
	// a request without a token passes authentication (Istio semantics).
	waitCode("no token while discovery is down", "", 200)
	waitCode("valid token while discovery is down", good, 401)
	deadline := time.Now().Add(20 * time.Second)
	for !regexp.MustCompile(`OpenID discovery failed.*issuer=` + regexp.QuoteMeta(idp.URL)).MatchString(cp.Stderr()) {
		if time.Now().After(deadline) {
			t.Fatalf("control plane did not report the failed discovery:\n%s", cp.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The provider comes back: the resolver retries (5 s, then doubling),
	// the proxies are re-pushed with the jwks_uri.
	discoveryUp.Store(true)
	waitCode("valid token after discovery", good, 200)
	if got := get(forged); got != http.StatusUnauthorized {
		t.Fatalf("forged token: %d, want 401", got)
	}
	if got := get(""); got != 200 {
		t.Fatalf("no token: %d, want 200", got)
	}
}
