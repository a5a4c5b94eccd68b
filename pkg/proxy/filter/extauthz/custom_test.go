package extauthz_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extauthznet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/filter/dynmeta"
	"github.com/weftmesh/weft/pkg/proxy/filter/extauthz"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// bodyAuthz records what each check carried and allows "x-ext-authz:
// allow" like Istio's sample.
type bodyAuthz struct {
	mu      sync.Mutex
	bodies  []string
	partial []string
	hits    atomic.Int64
}

func (b *bodyAuthz) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.bodies = append(b.bodies, string(body))
	b.partial = append(b.partial, r.Header.Get("x-envoy-auth-partial-body"))
	b.mu.Unlock()
	if r.Header.Get("x-ext-authz") == "allow" {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprint(w, denyBody)
}

func (b *bodyAuthz) last() (string, string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.bodies) == 0 {
		return "", ""
	}
	return b.bodies[len(b.bodies)-1], b.partial[len(b.partial)-1]
}

// markedApp runs filter f behind a stand-in for the CUSTOM shadow RBAC
// filter: paths under /check/ get the istio_ext_authz marker. The app
// echoes the body it received.
func markedApp(t *testing.T, f listener.HTTPFilter) string {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/check/") {
			markRequest(r)
		}
		if f.Filter(w, r) {
			return
		}
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "app body=%q", b)
	}))
}

// markRequest does what the CUSTOM shadow RBAC filter does on a match.
func markRequest(r *http.Request) {
	dynmeta.Set(r, "envoy.filters.http.rbac", "istio_ext_authz_shadow_effective_policy_id", "istio-ext-authz-ns[foo]-policy[p]-rule[0]")
}

func enabledMetadata() *matcherv3.MetadataMatcher {
	return &matcherv3.MetadataMatcher{Filter: "envoy.filters.http.rbac",
		Path:  []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "istio_ext_authz_shadow_effective_policy_id"}}},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "istio-ext-authz"}}}}}
}

func post(t *testing.T, addr, path, body string, hdr ...string) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, string(b), resp.Header}
}

// TestMarkedRequestsThroughCluster: checks run only for marked requests,
// go through the named cluster of the current cluster set (a real
// authorizer on 127.0.0.1), carry the body up to max_request_bytes, and
// the app still receives the whole body.
func TestMarkedRequestsThroughCluster(t *testing.T) {
	t.Parallel()
	az := &bodyAuthz{}
	azAddr := serve(t, az)
	const clusterName = "outbound|8000||ext-authz.foo.svc.cluster.local"
	var set atomic.Pointer[cluster.Set]
	set.Store(&cluster.Set{Clusters: map[string]*cluster.Cluster{clusterName: cluster.Static(clusterName, azAddr)}})
	mk := func(partial bool) listener.HTTPFilter {
		cfg := &extauthzv3.ExtAuthz{
			FilterEnabledMetadata: enabledMetadata(),
			WithRequestBody:       &extauthzv3.BufferSettings{MaxRequestBytes: 8, AllowPartialMessage: partial},
			AllowedHeaders:        names("x-ext-authz"),
			Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{ServerUri: &corev3.HttpUri{
				// The uri's host does not resolve: only the cluster can reach the service.
				Uri: "http://ext-authz.foo.svc.cluster.local", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: clusterName},
				Timeout: durationpb.New(5 * time.Second)}}},
		}
		tc, _ := anypb.New(cfg)
		f, err := extauthz.Factory(nil, extauthz.WithClusters(set.Load))(tc)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	strict, partial := markedApp(t, mk(false)), markedApp(t, mk(true))

	if r := post(t, strict, "/open", "not checked at all"); r.status != 200 || az.hits.Load() != 0 {
		t.Fatalf("unmarked request: %d %q, authorizer hits %d", r.status, r.body, az.hits.Load())
	}
	if r := post(t, strict, "/check/a", "short"); r.status != 403 || r.body != denyBody {
		t.Fatalf("marked, no allow header: %d %q", r.status, r.body)
	}
	if r := post(t, strict, "/check/a", "short", "x-ext-authz", "allow"); r.status != 200 || r.body != `app body="short"` {
		t.Fatalf("marked, allowed: %d %q", r.status, r.body)
	}
	if b, p := az.last(); b != "short" || p != "false" {
		t.Fatalf("authorizer saw body %q partial %q", b, p)
	}
	hits := az.hits.Load()
	if r := post(t, strict, "/check/a", "longer than eight", "x-ext-authz", "allow"); r.status != http.StatusRequestEntityTooLarge || az.hits.Load() != hits {
		t.Fatalf("body over max_request_bytes without allow_partial_message: %d (hits %d→%d)", r.status, hits, az.hits.Load())
	}
	if r := post(t, partial, "/check/a", "longer than eight", "x-ext-authz", "allow"); r.status != 200 || r.body != `app body="longer than eight"` {
		t.Fatalf("partial: %d %q", r.status, r.body)
	}
	if b, p := az.last(); b != "longer t" || p != "true" {
		t.Fatalf("authorizer saw body %q partial %q, want the first 8 bytes", b, p)
	}
	// The cluster disappears from the configuration: the check fails closed.
	set.Store(&cluster.Set{Clusters: map[string]*cluster.Cluster{}})
	if r := post(t, strict, "/check/a", "x", "x-ext-authz", "allow"); r.status != 403 {
		t.Fatalf("cluster gone: %d", r.status)
	}
	if r := post(t, strict, "/open", "x"); r.status != 200 {
		t.Fatalf("cluster gone, unmarked: %d", r.status)
	}
}

// TestGRPCThroughCluster: an envoy_grpc service is reached through its
// cluster; the host is picked per connection from the current set.
func TestGRPCThroughCluster(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int64
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, countingAuthz{n: &checks})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	const clusterName = "outbound|9000||ext-authz.foo.svc.cluster.local"
	set := &cluster.Set{Clusters: map[string]*cluster.Cluster{clusterName: cluster.Static(clusterName, lis.Addr().String())}}
	cfg := &extauthzv3.ExtAuthz{FilterEnabledMetadata: enabledMetadata(), Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: clusterName, Authority: "ext-authz.foo.svc.cluster.local"}},
		Timeout:         durationpb.New(5 * time.Second)}}}
	tc, _ := anypb.New(cfg)
	f, err := extauthz.Factory(nil, extauthz.WithClusters(func() *cluster.Set { return set }))(tc)
	if err != nil {
		t.Fatal(err)
	}
	addr := markedApp(t, f)
	if r := get(t, addr, "/check/x", "x-ext-authz", "deny"); r.status != 403 || r.body != denyBody {
		t.Fatalf("deny: %d %q", r.status, r.body)
	}
	if r := get(t, addr, "/check/x", "x-ext-authz", "allow"); r.status != 200 {
		t.Fatalf("allow: %d %q", r.status, r.body)
	}
	if r := get(t, addr, "/other", "x-ext-authz", "deny"); r.status != 200 || checks.Load() != 2 {
		t.Fatalf("unmarked: %d, checks %d", r.status, checks.Load())
	}
}

type countingAuthz struct {
	grpcAuthz
	n *atomic.Int64
}

func (c countingAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	c.n.Add(1)
	return c.grpcAuthz.Check(ctx, req)
}

// TestNetworkFilter: the network ext_authz filter checks only connections
// the shadow network RBAC filter marked, through the cluster, with the
// source principal; a denial or an unreachable service (without
// failure_mode_allow) refuses the connection.
func TestNetworkFilter(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var checks atomic.Int64
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, principalAuthz{n: &checks})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	const name = "outbound|9000||ext-authz.foo.svc.cluster.local"
	set := &cluster.Set{Clusters: map[string]*cluster.Cluster{name: cluster.Static(name, lis.Addr().String())}}
	mk := func(failOpen bool, clusterName string) listener.ConnFilter {
		cfg := &extauthznet.ExtAuthz{FailureModeAllow: failOpen, GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: clusterName}},
			Timeout:         durationpb.New(5 * time.Second)}}
		cfg.FilterEnabledMetadata = enabledMetadata()
		cfg.FilterEnabledMetadata.Filter = "envoy.filters.network.rbac"
		tc, _ := anypb.New(cfg)
		f, err := extauthz.NetworkFilters(nil, extauthz.WithClusters(func() *cluster.Set { return set }))[extauthz.NetworkFilterName](tc)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	conn := func(principal string, marked bool) *listener.ConnInfo {
		c := &listener.ConnInfo{Principal: principal, Source: netip.MustParseAddrPort("127.0.0.1:5000")}
		if marked {
			c.SetMetadata("envoy.filters.network.rbac", "istio_ext_authz_shadow_effective_policy_id", "istio-ext-authz-ns[foo]-policy[p]-rule[0]")
		}
		return c
	}
	f := mk(false, name)
	if ok, _ := f.CheckConn(conn("spiffe://cluster.local/ns/foo/sa/bad", false)); !ok || checks.Load() != 0 {
		t.Fatalf("unmarked connection: allowed=%v checks=%d", ok, checks.Load())
	}
	if ok, d := f.CheckConn(conn("spiffe://cluster.local/ns/foo/sa/good", true)); !ok || checks.Load() != 1 {
		t.Fatalf("good principal: allowed=%v %q checks=%d", ok, d, checks.Load())
	}
	if ok, d := f.CheckConn(conn("spiffe://cluster.local/ns/foo/sa/bad", true)); ok || d != "ext_authz_denied" {
		t.Fatalf("bad principal: allowed=%v %q", ok, d)
	}
	missing := mk(false, "outbound|9000||missing")
	if ok, d := missing.CheckConn(conn("spiffe://cluster.local/ns/foo/sa/good", true)); ok || d != "ext_authz_error" {
		t.Fatalf("missing cluster: allowed=%v %q", ok, d)
	}
	if ok, _ := mk(true, "outbound|9000||missing").CheckConn(conn("spiffe://cluster.local/ns/foo/sa/good", true)); !ok {
		t.Fatal("missing cluster with failure_mode_allow: refused")
	}
}

type principalAuthz struct {
	authv3.UnimplementedAuthorizationServer
	n *atomic.Int64
}

func (p principalAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	p.n.Add(1)
	c := code.Code_PERMISSION_DENIED
	if strings.HasSuffix(req.GetAttributes().GetSource().GetPrincipal(), "/sa/good") {
		c = code.Code_OK
	}
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(c)}}, nil
}
