package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

// rawGet sends a request line verbatim (no client-side path cleaning).
func rawGet(t *testing.T, addr, target string, hdr ...string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + target + " HTTP/1.1\r\nHost: web\r\nConnection: close\r\n"
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRBACEnforcement runs AuthorizationPolicies through the translator and
// the proxy's inbound listener (envoy.filters.http.rbac http filters).
func TestRBACEnforcement(t *testing.T) {
	skipShort(t)
	app := startBackend(t, "app", nil)
	_, ps, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(ps)
	rs, errs := config.DecodeAll("policies.yaml", []byte(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-port, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {ports: ["`+ps+`"], paths: ["/public/port-denied"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
  - when: [{key: "request.headers[x-evil]", values: ["1"]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public, namespace: default}
spec:
  rules:
  - to: [{operation: {paths: ["/public/*"], methods: ["GET"]}}]
`))
	if len(errs.Errors()) > 0 {
		t.Fatal(errs)
	}
	pol, err := authz.Translate(rs, &model.Proxy{Namespace: ns, Labels: map[string]string{}}, "")
	if err != nil {
		t.Fatal(err)
	}
	cp := xdstest.Start(t)

	var filters []*hcmv3.HttpFilter
	for _, c := range pol.Configs() {
		a, err := anypb.New(c)
		if err != nil {
			t.Fatal(err)
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: rbac.FilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
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
	cp.Set(t, nodeID, &xdstest.Resources{Listeners: []types.Resource{l}, Clusters: []types.Resource{staticCluster(inCluster, app.addr)}})
	var accessLog syncBuffer
	p := startProxy(t, cp, func(o *proxy.Options) {
		o.AppPort = port
		o.HTTPFilters = rbac.Filters(nil, rbac.WithDestinationPort(port))
		o.AccessLog = &accessLog
	})
	in := p.Addresses().Inbound
	eventually(t, "config applied", func() bool {
		code, _ := rawGet(t, in, "/public/x")
		return code == 200
	})
	tests := []struct {
		target   string
		hdr      []string
		code     int
		body     string
		upstream string // path the app must receive
	}{
		{target: "/public/index.html", code: 200, body: "app", upstream: "/public/index.html"},
		{target: "/public/a/../b?q=1", code: 200, body: "app", upstream: "/public/b?q=1"},
		{target: "/%70ublic/x", code: 200, body: "app", upstream: "/public/x"},
		{target: "/public/..%2Fadmin", code: 200, body: "app", upstream: "/public/..%2Fadmin"}, // BASE keeps %2F, forwarded encoded
		{target: "/admin", code: 403, body: rbac.DeniedBody},
		{target: "/admin/users", code: 403, body: rbac.DeniedBody},
		{target: "/public/../admin", code: 403, body: rbac.DeniedBody},
		{target: "/public/%2e%2e/admin", code: 403, body: rbac.DeniedBody},
		{target: "/%61dmin", code: 403, body: rbac.DeniedBody},
		{target: "/public\\..\\admin", code: 403, body: rbac.DeniedBody},
		{target: "/private", code: 403, body: rbac.DeniedBody},
		{target: "/public/x", hdr: []string{"X-Evil", "1"}, code: 403, body: rbac.DeniedBody},
		{target: "/public/%00", code: 400},
		{target: "/public/port-denied", code: 403, body: rbac.DeniedBody},
	}
	for _, tt := range tests {
		before := len(app.seenPaths())
		code, body := rawGet(t, in, tt.target, tt.hdr...)
		if code != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("GET %s: %d %q, want %d %q", tt.target, code, body, tt.code, tt.body)
			continue
		}
		seen := app.seenPaths()[before:]
		switch {
		case tt.upstream != "" && (len(seen) != 1 || seen[0] != tt.upstream):
			t.Errorf("GET %s: app saw %q, want %q", tt.target, seen, tt.upstream)
		case tt.upstream == "" && len(seen) != 0:
			t.Errorf("GET %s: denied request reached the app: %q", tt.target, seen)
		}
	}
	// The access log says which policy denied.
	eventually(t, "access log names the deny policy", func() bool {
		return strings.Contains(accessLog.String(), `"response_code":403,`) &&
			strings.Contains(accessLog.String(), `"response_code_details":"RBAC: access denied (rbac_access_denied_matched_policy[ns[default]-policy[deny-admin]`)
	})
}
