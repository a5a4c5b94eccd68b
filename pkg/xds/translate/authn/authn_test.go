package authn

import (
	"testing"

	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
)

func decode(t *testing.T, y string) []*config.Resource {
	t.Helper()
	rs, errs := config.DecodeAll("t.yaml", []byte(y))
	if len(errs.Errors()) > 0 {
		t.Fatal(errs)
	}
	return rs
}

const policies = `apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt-auth, namespace: default}
spec:
  selector:
    matchLabels: {app: http-server}
  jwtRules:
  - issuer: your-issuer
    audiences: [your-audience]
    jwks: '{"keys":[]}'
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: weft-system}
spec:
  jwtRules:
  - issuer: mesh-issuer
    jwksUri: http://idp.mesh:8080/keys
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: legacy-root, namespace: istio-system}
spec:
  selector:
    matchLabels: {app: http-server}
  jwtRules:
  - issuer: istio-root-issuer
    jwks: 'not json'
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: other-ns, namespace: other}
spec:
  jwtRules:
  - issuer: other-issuer
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: gw, namespace: default}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]
  jwtRules:
  - issuer: gateway-issuer
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap, namespace: default}
spec: {}
`

func issuers(ja *jwtauthnv3.JwtAuthentication) []string {
	var out []string
	for i := 0; i < len(ja.GetProviders()); i++ {
		out = append(out, ja.GetProviders()[ProviderName(i)].GetIssuer())
	}
	return out
}

func TestSelection(t *testing.T) {
	rs := decode(t, policies)
	tests := []struct {
		name  string
		proxy *model.Proxy
		root  string
		want  []string // issuers in provider order; nil: no filter
	}{
		{name: "selected workload", proxy: &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "http-server"}}, want: []string{"istio-root-issuer", "mesh-issuer", "your-issuer"}},
		{name: "other label", proxy: &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "x"}}, want: []string{"mesh-issuer"}},
		{name: "other namespace", proxy: &model.Proxy{Namespace: "other"}, want: []string{"mesh-issuer", "other-issuer"}},
		{name: "custom root namespace", proxy: &model.Proxy{Namespace: "third"}, root: "mesh-root", want: nil},
		{name: "custom root, selected", proxy: &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "http-server"}}, root: "mesh-root", want: []string{"istio-root-issuer", "your-issuer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ja, err := Translate(rs, tt.proxy, tt.root, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if ja != nil {
					t.Fatalf("got a config for %v", issuers(ja))
				}
				return
			}
			if err := ja.Validate(); err != nil {
				t.Fatalf("invalid config: %v", err)
			}
			got := issuers(ja)
			if len(got) != len(tt.want) {
				t.Fatalf("issuers %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("issuers %q, want %q", got, tt.want)
				}
			}
			reqs := ja.GetRules()[0].GetRequires().GetRequiresAny().GetRequirements()
			if len(reqs) != len(tt.want)+1 || reqs[len(reqs)-1].GetAllowMissing() == nil {
				t.Fatalf("requirements %v: want every provider then allow_missing", reqs)
			}
			if ja.GetRules()[0].GetMatch().GetPrefix() != "/" {
				t.Fatalf("rule match %v", ja.GetRules()[0].GetMatch())
			}
		})
	}
	if _, err := Translate(rs, nil, "", nil); err == nil {
		t.Fatal("nil proxy: no error")
	}
}

func TestProvider(t *testing.T) {
	rs := decode(t, policies)
	ja, err := Translate(rs, &model.Proxy{Namespace: "default", Labels: map[string]string{"app": "http-server"}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	bad, mesh, seed := ja.Providers[ProviderName(0)], ja.Providers[ProviderName(1)], ja.Providers[ProviderName(2)]
	if got := bad.GetLocalJwks().GetInlineString(); got != EmptyJWKS {
		t.Errorf("invalid jwks inlined as %q, want %q", got, EmptyJWKS)
	}
	rj := mesh.GetRemoteJwks()
	if rj.GetHttpUri().GetUri() != "http://idp.mesh:8080/keys" || rj.GetHttpUri().GetCluster() != "outbound|8080||idp.mesh" ||
		rj.GetHttpUri().GetTimeout().AsDuration() != DefaultJWKSTimeout || rj.GetCacheDuration().AsDuration() != DefaultJWKSCacheDuration {
		t.Errorf("remote jwks %v", rj)
	}
	if seed.GetPayloadInMetadata() != "your-issuer" || len(seed.GetAudiences()) != 1 || seed.GetForward() || len(seed.GetFromHeaders()) != 0 {
		t.Errorf("seed provider %v", seed)
	}
	if !ja.GetBypassCorsPreflight() {
		t.Error("bypass_cors_preflight not set")
	}
}

func TestRequiredPresence(t *testing.T) {
	rs := decode(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: req, namespace: default}
spec:
  jwtRules:
  - issuer: a
    jwks: '{"keys":[]}'
    presence: REQUIRED
`)
	ja, err := Translate(rs, &model.Proxy{Namespace: "default"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := ja.GetRules()[0].GetRequires().GetProviderName(); got != ProviderName(0) {
		t.Fatalf("REQUIRED rule: requirement %v, want provider %s alone", ja.GetRules()[0].GetRequires(), ProviderName(0))
	}
}

func TestJWKSCluster(t *testing.T) {
	tests := []struct{ uri, want string }{
		{"https://idp.example.com/keys", "outbound|443||idp.example.com"},
		{"http://idp.example.com/keys", "outbound|80||idp.example.com"},
		{"http://10.0.0.1:9000/k", "outbound|9000||10.0.0.1"},
	}
	for _, tt := range tests {
		if got := jwksCluster(tt.uri); got != tt.want {
			t.Errorf("jwksCluster(%q) = %q, want %q", tt.uri, got, tt.want)
		}
	}
}

// TestDiscoveredJWKS: a rule with only an issuer gets the jwks_uri the
// resolver found; unresolved, it gets no keys.
func TestDiscoveredJWKS(t *testing.T) {
	rs := decode(t, `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: oidc, namespace: default}
spec:
  jwtRules:
  - issuer: https://idp.example.com
`)
	p := &model.Proxy{Namespace: "default"}
	resolved := func(issuer string) (string, bool) {
		if issuer == "https://idp.example.com" {
			return "https://keys.example.com:8443/jwks", true
		}
		return "", false
	}
	ja, err := Translate(rs, p, "", resolved)
	if err != nil {
		t.Fatal(err)
	}
	rj := ja.Providers[ProviderName(0)].GetRemoteJwks()
	if rj.GetHttpUri().GetUri() != "https://keys.example.com:8443/jwks" || rj.GetHttpUri().GetCluster() != "outbound|8443||keys.example.com" {
		t.Errorf("resolved issuer: remote jwks %v", rj)
	}
	for _, fn := range []func(string) (string, bool){nil, func(string) (string, bool) { return "", false }} {
		ja, err := Translate(rs, p, "", fn)
		if err != nil {
			t.Fatal(err)
		}
		if got := ja.Providers[ProviderName(0)].GetLocalJwks().GetInlineString(); got != EmptyJWKS {
			t.Errorf("unresolved issuer: jwks %q, want no keys %q", got, EmptyJWKS)
		}
	}
}
