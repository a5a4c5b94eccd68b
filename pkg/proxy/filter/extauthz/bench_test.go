package extauthz_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/filter/extauthz"
)

// BenchmarkCustomCheck measures a request through an app with the
// ext_authz filter on 127.0.0.1: unmarked (the CUSTOM rules did not match:
// no check, the baseline), and marked with an HTTP and a gRPC authorizer
// reached through a cluster. It reports each mode's latency as a ratio of
// the baseline measured in the same run (x-baseline).
func BenchmarkCustomCheck(b *testing.B) {
	httpAz := serveB(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-ext-authz") != "allow" {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, grpcAuthz{})
	go func() { _ = gs.Serve(lis) }()
	b.Cleanup(gs.Stop)
	set := &cluster.Set{Clusters: map[string]*cluster.Cluster{
		"outbound|8000||authz": cluster.Static("outbound|8000||authz", httpAz),
		"outbound|9000||authz": cluster.Static("outbound|9000||authz", lis.Addr().String()),
	}}
	mk := func(cfg *extauthzv3.ExtAuthz) string {
		cfg.FilterEnabledMetadata = enabledMetadata()
		tc, _ := anypb.New(cfg)
		f, err := extauthz.Factory(nil, extauthz.WithClusters(func() *cluster.Set { return set }))(tc)
		if err != nil {
			b.Fatal(err)
		}
		return markedAppB(b, f)
	}
	httpApp := mk(&extauthzv3.ExtAuthz{AllowedHeaders: names("x-ext-authz"), Services: &extauthzv3.ExtAuthz_HttpService{HttpService: &extauthzv3.HttpService{
		ServerUri: &corev3.HttpUri{Uri: "http://authz", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|8000||authz"}, Timeout: durationpb.New(5 * time.Second)}}}})
	grpcApp := mk(&extauthzv3.ExtAuthz{Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "outbound|9000||authz"}},
		Timeout:         durationpb.New(5 * time.Second)}}})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
	do := func(b *testing.B, url string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("x-ext-authz", "allow")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %d", url, resp.StatusCode)
		}
	}
	var baseline float64
	for _, m := range []struct{ name, url string }{
		{"unmarked", "http://" + httpApp + "/open"},
		{"http-check", "http://" + httpApp + "/check/x"},
		{"grpc-check", "http://" + grpcApp + "/check/x"},
	} {
		b.Run(m.name, func(b *testing.B) {
			do(b, m.url) // warm connections
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				do(b, m.url)
			}
			ns := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			if m.name == "unmarked" {
				baseline = ns
			}
			if baseline > 0 {
				b.ReportMetric(ns/baseline, "x-baseline")
			}
		})
	}
}

func serveB(b *testing.B, h http.Handler) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &http.Server{Handler: h}
	go func() { _ = s.Serve(lis) }()
	b.Cleanup(func() { s.Close() })
	return lis.Addr().String()
}

// markedAppB is markedApp for benchmarks.
func markedAppB(b *testing.B, f interface {
	Filter(http.ResponseWriter, *http.Request) bool
}) string {
	return serveB(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/check/") {
			markRequest(r)
		}
		if f.Filter(w, r) {
			return
		}
		_, _ = io.WriteString(w, "app")
	}))
}
