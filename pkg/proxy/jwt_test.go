package proxy_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/filter/jwt"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/authn"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

// rs256 signs claims with key (kid k1); alg "none" leaves it unsigned.
func rs256(t *testing.T, key *rsa.PrivateKey, alg string, claims map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	in := enc(map[string]string{"alg": alg, "kid": "k1"}) + "." + enc(claims)
	if alg == "none" {
		return in + "."
	}
	h := sha256.Sum256([]byte(in))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestJWTEnforcement runs the seed's RequestAuthentication (with an
// inline jwks) and an AuthorizationPolicy on request principals through
// the translators and a real proxy's inbound listener.
func TestJWTEnforcement(t *testing.T) {
	skipShort(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "RSA", "kid": "k1", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes())}}})
	app := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app auth=%q", r.Header.Get("Authorization"))
	})
	_, ps, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(ps)
	rs, errs := config.DecodeAll("policies.yaml", []byte(fmt.Sprintf(`apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt-auth, namespace: default}
spec:
  selector:
    matchLabels: {app: http-server}
  jwtRules:
  - issuer: "your-issuer"
    audiences: ["your-audience"]
    jwks: '%s'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: default}
spec:
  selector:
    matchLabels: {app: http-server}
  rules:
  - from: [{source: {requestPrincipals: ["your-issuer/*"]}}]
  - to: [{operation: {paths: ["/public/*"]}}]
`, jwks)))
	if len(errs.Errors()) > 0 {
		t.Fatal(errs)
	}
	mp := &model.Proxy{Namespace: ns, Labels: map[string]string{"app": "http-server"}}
	ja, err := authn.Translate(rs, mp, "", nil)
	if err != nil || ja == nil {
		t.Fatalf("authn: %v %v", ja, err)
	}
	pol, err := authz.Translate(rs, mp, "")
	if err != nil {
		t.Fatal(err)
	}
	var filters []*hcmv3.HttpFilter
	cfgs := []proto.Message{ja}
	names := []string{authn.FilterName}
	for _, c := range pol.Configs() {
		cfgs, names = append(cfgs, c), append(names, rbac.FilterName)
	}
	for i, c := range cfgs {
		a, err := anypb.New(c)
		if err != nil {
			t.Fatal(err)
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: names[i], ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	}
	filters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router"})
	inCluster := "inbound|" + ps + "||"
	rc := &routev3.RouteConfiguration{Name: "inbound|" + ps, VirtualHosts: []*routev3.VirtualHost{{
		Name: "inbound|http|" + ps, Domains: []string{"*"}, Routes: []*routev3.Route{xdstest.ToCluster("default", inCluster)}}}}
	h, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "inbound", HttpFilters: filters,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}})
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{Name: "virtualInbound",
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15006}}}},
		FilterChains: []*listenerv3.FilterChain{{
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(port))},
			Filters:          []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: h}}},
		}}}
	cp := xdstest.Start(t)
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{l}, Clusters: []types.Resource{staticCluster(inCluster, app.addr)}})
	p := startProxy(t, cp, func(o *proxy.Options) {
		o.AppPort = port
		o.HTTPFilters = rbac.Filters(nil, rbac.WithDestinationPort(port))
		maps.Copy(o.HTTPFilters, jwt.Filters(nil))
	})
	in := p.Addresses().Inbound
	eventually(t, "config applied", func() bool {
		code, _ := rawGet(t, in, "/public/x")
		return code == 200
	})
	now := time.Now()
	claims := func(over map[string]any) map[string]any {
		c := map[string]any{"iss": "your-issuer", "sub": "alice", "aud": "your-audience", "exp": now.Add(time.Hour).Unix()}
		maps.Copy(c, over)
		return c
	}
	valid := rs256(t, key, "RS256", claims(nil))
	tests := []struct {
		name, target, token string
		code                int
		body                string
	}{
		{name: "public, no token", target: "/public/x", code: 200, body: `app auth=""`},
		{name: "public, valid token (stripped)", target: "/public/x", token: valid, code: 200, body: `app auth=""`},
		{name: "public, expired", target: "/public/x", token: rs256(t, key, "RS256", claims(map[string]any{"exp": now.Add(-time.Hour).Unix()})), code: 401, body: "Jwt is expired"},
		{name: "secure, no token", target: "/secure", code: 403, body: rbac.DeniedBody},
		{name: "secure, valid token", target: "/secure", token: valid, code: 200, body: `app auth=""`},
		{name: "secure, wrong issuer", target: "/secure", token: rs256(t, key, "RS256", claims(map[string]any{"iss": "x"})), code: 401},
		{name: "secure, wrong audience", target: "/secure", token: rs256(t, key, "RS256", claims(map[string]any{"aud": "x"})), code: 401, body: "Audiences in Jwt are not allowed"},
		{name: "secure, alg none", target: "/secure", token: rs256(t, key, "none", claims(nil)), code: 401},
	}
	for _, tt := range tests {
		var hdr []string
		if tt.token != "" {
			hdr = []string{"Authorization", "Bearer " + tt.token}
		}
		code, body := rawGet(t, in, tt.target, hdr...)
		if code != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("%s: GET %s: %d %q, want %d %q", tt.name, tt.target, code, body, tt.code, tt.body)
		}
	}
}
