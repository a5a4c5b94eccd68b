package extauthz_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/proxy/filter/extauthz"
)

const denyBody = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"

// serve runs h on a real 127.0.0.1 socket and returns its address.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(func() { s.Close() })
	return lis.Addr().String()
}

// httpAuthz is an ext-authz server like Istio's sample: "x-ext-authz:
// allow" passes (with a result header), anything else is 403 with a body;
// "/slow" answers after a second.
func httpAuthz(t *testing.T) string {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			time.Sleep(time.Second)
		}
		if r.Header.Get("x-ext-authz") == "allow" {
			w.Header().Set("x-ext-authz-check-result", "allowed")
			w.Header().Set("x-not-forwarded", "1")
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("x-ext-authz-check-result", "denied")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, denyBody)
	}))
}

type grpcAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (grpcAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	if h.GetHeaders()["x-ext-authz"] == "allow" {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-ext-authz-check-result", Value: "allowed " + h.GetMethod() + " " + h.GetPath()}}}}}}, nil
	}
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(code.Code_PERMISSION_DENIED)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-ext-authz-check-result", Value: "denied"}}},
			Body:    denyBody}}}, nil
}

func grpcServer(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, grpcAuthz{})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func names(ns ...string) *matcherv3.ListStringMatcher {
	l := &matcherv3.ListStringMatcher{}
	for _, n := range ns {
		l.Patterns = append(l.Patterns, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}, IgnoreCase: true})
	}
	return l
}

// app runs the filter in front of an app that echoes the check result
// header it received, on a real socket.
func app(t *testing.T, cfg *extauthzv3.ExtAuthz) string {
	t.Helper()
	tc, err := anypb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := extauthz.Factory(nil)(tc)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.Filter(w, r) {
			return
		}
		fmt.Fprintf(w, "app saw result=%q notfwd=%q", r.Header.Get("x-ext-authz-check-result"), r.Header.Get("x-not-forwarded"))
	}))
}

type result struct {
	status int
	body   string
	header http.Header
}

func get(t *testing.T, addr, path string, hdr ...string) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, string(b), resp.Header}
}

func httpCfg(authz string, mod func(*extauthzv3.HttpService, *extauthzv3.ExtAuthz)) *extauthzv3.ExtAuthz {
	hs := &extauthzv3.HttpService{
		ServerUri:             &corev3.HttpUri{Uri: "http://" + authz, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|8000||ext-authz.foo.svc.cluster.local"}, Timeout: durationpb.New(5 * time.Second)},
		AuthorizationRequest:  &extauthzv3.AuthorizationRequest{AllowedHeaders: names("x-ext-authz")},
		AuthorizationResponse: &extauthzv3.AuthorizationResponse{AllowedUpstreamHeaders: names("x-ext-authz-check-result"), AllowedClientHeaders: names("x-ext-authz-check-result")},
	}
	c := &extauthzv3.ExtAuthz{Services: &extauthzv3.ExtAuthz_HttpService{HttpService: hs}}
	if mod != nil {
		mod(hs, c)
	}
	return c
}

func TestHTTPService(t *testing.T) {
	authz := httpAuthz(t)
	a := app(t, httpCfg(authz, nil))
	// allow: the request reaches the app with headersToUpstreamOnAllow only.
	if r := get(t, a, "/headers", "x-ext-authz", "allow"); r.status != 200 || r.body != `app saw result="allowed" notfwd=""` {
		t.Fatalf("allow: %d %q", r.status, r.body)
	}
	// deny: 403 with the server's body and headersToDownstreamOnDeny.
	r := get(t, a, "/headers", "x-ext-authz", "deny")
	if r.status != 403 || r.body != denyBody || r.header.Get("x-ext-authz-check-result") != "denied" {
		t.Fatalf("deny: %d %q %v", r.status, r.body, r.header)
	}
	// A header not in includeRequestHeadersInCheck never reaches the service.
	b := app(t, httpCfg(authz, func(hs *extauthzv3.HttpService, _ *extauthzv3.ExtAuthz) {
		hs.AuthorizationRequest.AllowedHeaders = names("x-other")
	}))
	if r := get(t, b, "/", "x-ext-authz", "allow"); r.status != 403 {
		t.Fatalf("header outside includeRequestHeadersInCheck reached the service: %d %q", r.status, r.body)
	}
	// headersToDownstreamOnDeny limits what the client sees.
	c := app(t, httpCfg(authz, func(hs *extauthzv3.HttpService, _ *extauthzv3.ExtAuthz) {
		hs.AuthorizationResponse.AllowedClientHeaders = names("x-unrelated")
	}))
	if r := get(t, c, "/"); r.status != 403 || r.header.Get("x-ext-authz-check-result") != "" {
		t.Fatalf("client header not in headersToDownstreamOnDeny leaked: %d %v", r.status, r.header)
	}
}

func TestFailureModes(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	authz := httpAuthz(t)
	for _, tc := range []struct {
		name     string
		cfg      *extauthzv3.ExtAuthz
		path     string
		want     int
		wantBody string
	}{
		{"unreachable, fail closed", httpCfg(deadAddr, nil), "/", 403, ""},
		{"unreachable, failOpen", httpCfg(deadAddr, func(_ *extauthzv3.HttpService, c *extauthzv3.ExtAuthz) { c.FailureModeAllow = true }), "/", 200, `app saw result="" notfwd=""`},
		{"unreachable, status_on_error", httpCfg(deadAddr, func(_ *extauthzv3.HttpService, c *extauthzv3.ExtAuthz) {
			c.StatusOnError = &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}
		}), "/", 503, ""},
		{"timeout, fail closed", httpCfg(authz, func(hs *extauthzv3.HttpService, _ *extauthzv3.ExtAuthz) {
			hs.ServerUri.Timeout = durationpb.New(200 * time.Millisecond)
		}), "/slow", 403, ""},
		{"timeout, failOpen", httpCfg(authz, func(hs *extauthzv3.HttpService, c *extauthzv3.ExtAuthz) {
			hs.ServerUri.Timeout = durationpb.New(200 * time.Millisecond)
			c.FailureModeAllow = true
		}), "/slow", 200, `app saw result="" notfwd=""`},
		{"slow but within timeout", httpCfg(authz, nil), "/slow", 403, denyBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get(t, app(t, tc.cfg), tc.path)
			if r.status != tc.want || r.body != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", r.status, r.body, tc.want, tc.wantBody)
			}
		})
	}
}

func TestGRPCService(t *testing.T) {
	addr := grpcServer(t)
	host, port, _ := net.SplitHostPort(addr)
	cfg := &extauthzv3.ExtAuthz{Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|" + port + "||" + host}},
		Timeout:         durationpb.New(5 * time.Second)}}}
	a := app(t, cfg)
	if r := get(t, a, "/x?y=1", "x-ext-authz", "allow"); r.status != 200 || r.body != `app saw result="allowed GET /x?y=1" notfwd=""` {
		t.Fatalf("allow: %d %q", r.status, r.body)
	}
	r := get(t, a, "/x", "x-ext-authz", "nope")
	if r.status != 403 || r.body != denyBody || r.header.Get("x-ext-authz-check-result") != "denied" {
		t.Fatalf("deny: %d %q %v", r.status, r.body, r.header)
	}
	// gRPC server down, fail closed.
	cfg.GetGrpcService().TargetSpecifier = &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|1||127.0.0.1"}}
	cfg.GetGrpcService().Timeout = durationpb.New(time.Second)
	if r := get(t, app(t, cfg), "/", "x-ext-authz", "allow"); r.status != 403 {
		t.Fatalf("unreachable gRPC service: %d, want 403", r.status)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]*extauthzv3.ExtAuthz{
		"no service":  {},
		"https uri":   httpCfg("x", func(hs *extauthzv3.HttpService, _ *extauthzv3.ExtAuthz) { hs.ServerUri.Uri = "https://x:1" }),
		"bad cluster": {Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "authz"}}}}},
		"request body without max_request_bytes": httpCfg("x:1", func(_ *extauthzv3.HttpService, c *extauthzv3.ExtAuthz) {
			c.WithRequestBody = &extauthzv3.BufferSettings{}
		}),
	} {
		tc, _ := anypb.New(cfg)
		if _, err := extauthz.Factory(nil)(tc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
