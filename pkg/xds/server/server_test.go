package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/bolt"
	"github.com/weftmesh/weft/pkg/xds/model"
)

const testNode = "sidecar~127.0.0.1~app.default~default.svc.cluster.local"

// clusterPerVS is a test generator: one STATIC cluster per VirtualService.
// It counts its preparations (one per push computation).
func clusterPerVS(prepared *atomic.Int64) Generator {
	return func(configs []*config.Resource) func(*model.Proxy) (*Resources, error) {
		prepared.Add(1)
		return func(*model.Proxy) (*Resources, error) {
			out := &Resources{}
			for _, c := range configs {
				if c.Kind == config.KindVirtualService {
					out.Clusters = append(out.Clusters, &clusterv3.Cluster{Name: c.Meta.Name,
						ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}})
				}
			}
			return out, nil
		}
	}
}

func vs(name string) *config.Resource {
	return &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindVirtualService,
		Meta: config.Meta{Name: name, Namespace: "default"}, Spec: &networking.VirtualService{Hosts: []string{name}}}
}

type harness struct {
	srv   *Server
	store store.Store
	addr  string
	gens  *atomic.Int64
}

// serve runs a server with o over a fresh bolt store holding cfgs, until
// the test ends; o.Store and (unless set) o.Logger are filled in.
func serve(t *testing.T, o Options, cfgs ...*config.Resource) (store.Store, *Server, string) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "weft.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if len(cfgs) > 0 {
		if _, err := st.Apply(context.Background(), store.Upsert, cfgs); err != nil {
			t.Fatal(err)
		}
	}
	o.Store = st
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	go func() { _ = srv.Serve(ctx, lis); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return st, srv, lis.Addr().String()
}

// startWith runs a server with generator gen (debounce 20ms).
func startWith(t *testing.T, gen Generator) (store.Store, *Server, string) {
	t.Helper()
	return serve(t, Options{Generate: gen, Debounce: 20 * time.Millisecond, RemoveGrace: 50 * time.Millisecond})
}

func start(t *testing.T, debounce time.Duration) *harness {
	t.Helper()
	gens := &atomic.Int64{}
	st, srv, addr := serve(t, Options{Generate: clusterPerVS(gens), Debounce: debounce, MaxDelay: 10 * debounce, RemoveGrace: 50 * time.Millisecond})
	return &harness{srv: srv, store: st, addr: addr, gens: gens}
}

func (h *harness) apply(t *testing.T, rs ...*config.Resource) int64 {
	t.Helper()
	out, err := h.store.Apply(context.Background(), store.Upsert, rs)
	if err != nil {
		t.Fatal(err)
	}
	var rev int64
	fmt.Sscan(out[len(out)-1].Meta.ResourceVersion, &rev)
	return rev
}

// rawStream is a raw ADS stream (SotW or delta) that records every
// response; next waits up to wait for one.
type rawStream[Req, Resp any] struct {
	stream interface {
		Send(Req) error
		Recv() (Resp, error)
		CloseSend() error
	}
	resps chan Resp
	wait  time.Duration
}

// openRaw opens a stream with open on a new connection to addr, buffering
// up to buf responses.
func openRaw[Req, Resp any, S interface {
	Send(Req) error
	Recv() (Resp, error)
	CloseSend() error
}](t *testing.T, addr string, buf int, wait time.Duration, open func(discoveryv3.AggregatedDiscoveryServiceClient, context.Context) (S, error)) *rawStream[Req, Resp] {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := open(discoveryv3.NewAggregatedDiscoveryServiceClient(cc), ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &rawStream[Req, Resp]{stream: s, resps: make(chan Resp, buf), wait: wait}
	go func() {
		for {
			r, err := s.Recv()
			if err != nil {
				close(c.resps)
				return
			}
			c.resps <- r
		}
	}()
	return c
}

func (c *rawStream[Req, Resp]) send(t *testing.T, r Req) {
	t.Helper()
	if err := c.stream.Send(r); err != nil {
		t.Fatal(err)
	}
}

func (c *rawStream[Req, Resp]) next(t *testing.T) Resp {
	t.Helper()
	select {
	case r, ok := <-c.resps:
		if !ok {
			t.Fatal("stream closed")
		}
		return r
	case <-time.After(c.wait):
		t.Fatalf("no xDS response within %s", c.wait)
	}
	var zero Resp
	return zero
}

// adsClient is a raw SotW ADS stream.
type adsClient = rawStream[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse]

func dial(t *testing.T, addr string) *adsClient {
	t.Helper()
	return openRaw[*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse](t, addr, 1000, 5*time.Second,
		func(c discoveryv3.AggregatedDiscoveryServiceClient, ctx context.Context) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
			return c.StreamAggregatedResources(ctx)
		})
}

func clusterNames(t *testing.T, r *discoveryv3.DiscoveryResponse) []string {
	t.Helper()
	var names []string
	for _, a := range r.GetResources() {
		var c clusterv3.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		names = append(names, c.GetName())
	}
	return names
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func statusOf(t *testing.T, s *Server, id string) ProxyStatus {
	t.Helper()
	for _, p := range s.Status() {
		if p.ID == id {
			return p
		}
	}
	return ProxyStatus{}
}

func TestDebounceCoalescesBursts(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const debounce = 500 * time.Millisecond
	h := start(t, debounce)
	waitFor(t, "initial push", func() bool { return h.gens.Load() >= 1 })
	time.Sleep(debounce + 200*time.Millisecond)
	before := h.gens.Load()
	// 20 writes back to back: one burst.
	var rev int64
	var maxGap time.Duration
	last := time.Now()
	for i := range 20 {
		rev = h.apply(t, vs(fmt.Sprintf("svc-%d", i)))
		maxGap = max(maxGap, time.Since(last))
		last = time.Now()
	}
	if maxGap >= debounce {
		t.Skipf("store writes too slow on this machine (gap %v) to form one burst", maxGap)
	}
	waitFor(t, "push of the burst", func() bool { return h.srv.Revision() >= rev })
	time.Sleep(debounce + 200*time.Millisecond)
	if got := h.gens.Load() - before; got != 1 {
		t.Errorf("burst of 20 writes caused %d push computations, want 1", got)
	}
	// Two writes separated by more than the debounce are two pushes.
	before = h.gens.Load()
	h.apply(t, vs("late-1"))
	time.Sleep(2*debounce + 200*time.Millisecond)
	h.apply(t, vs("late-2"))
	time.Sleep(2*debounce + 200*time.Millisecond)
	if got := h.gens.Load() - before; got != 2 {
		t.Errorf("two separated writes caused %d push computations, want 2", got)
	}
}

func TestMaxDelayCapsDebounce(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	h := start(t, 100*time.Millisecond) // MaxDelay 1s
	waitFor(t, "initial push", func() bool { return h.gens.Load() >= 1 })
	first := h.apply(t, vs("a"))
	start := time.Now()
	// Keep writing every 50ms for 2.5s: pushes must still happen about every second.
	var pushedAfter time.Duration
	for i := 0; time.Since(start) < 2500*time.Millisecond; i++ {
		h.apply(t, vs(fmt.Sprintf("b-%d", i)))
		if pushedAfter == 0 && h.srv.Revision() >= first {
			pushedAfter = time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pushedAfter == 0 || pushedAfter > 1800*time.Millisecond {
		t.Fatalf("first push during continuous writes came after %v, want about MaxDelay (1s)", pushedAfter)
	}
}

func TestACKNACKStatusAndHoldBack(t *testing.T) {
	h := start(t, 20*time.Millisecond)
	h.apply(t, vs("reviews"))
	waitFor(t, "config flushed", func() bool { return h.srv.Revision() > 0 })

	c := dial(t, h.addr)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.ClusterType})
	r1 := c.next(t)
	if got := clusterNames(t, r1); len(got) != 1 || got[0] != "reviews" {
		t.Fatalf("clusters = %v, want [reviews]", got)
	}
	st := statusOf(t, h.srv, testNode)
	if st.Types["CDS"].State != StateStale || st.Types["LDS"].State != StateNotSent || !st.Connected {
		t.Fatalf("before ACK: %+v, want CDS STALE, LDS NOT SENT, connected", st)
	}

	// ACK.
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce})
	waitFor(t, "SYNCED", func() bool { return statusOf(t, h.srv, testNode).Types["CDS"].State == StateSynced })

	// A new version, NACKed.
	h.apply(t, vs("ratings"))
	r2 := c.next(t)
	if r2.VersionInfo == r1.VersionInfo {
		t.Fatalf("new config kept version %s", r2.VersionInfo)
	}
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r1.VersionInfo, ResponseNonce: r2.Nonce,
		ErrorDetail: &status.Status{Code: 3, Message: "cluster ratings: unsupported lb_policy"}})
	waitFor(t, "NACKED", func() bool { return statusOf(t, h.srv, testNode).Types["CDS"].State == StateNacked })
	if e := statusOf(t, h.srv, testNode).Types["CDS"].Error; !strings.Contains(e, "unsupported lb_policy") {
		t.Errorf("NACK error = %q", e)
	}
	// The rejected version must not come back: count responses over 1s.
	n := 0
	timeout := time.After(time.Second)
count:
	for {
		select {
		case <-c.resps:
			n++
		case <-timeout:
			break count
		}
	}
	if n > 0 {
		t.Errorf("after a NACK the server sent %d responses in 1s, want 0", n)
	}
	// An unrelated config change that does not alter CDS still holds.
	h.apply(t, &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindDestinationRule,
		Meta: config.Meta{Name: "dr", Namespace: "default"}, Spec: &networking.DestinationRule{Host: "x"}})
	select {
	case r := <-c.resps:
		t.Errorf("unchanged CDS was resent after NACK: version %s", r.VersionInfo)
	case <-time.After(300 * time.Millisecond):
	}
	// A real change produces a new version, which the client then ACKs.
	rev := h.apply(t, vs("details"))
	r3 := c.next(t)
	if r3.VersionInfo == r2.VersionInfo || len(clusterNames(t, r3)) != 3 {
		t.Fatalf("after change: version %s (rejected %s), clusters %v", r3.VersionInfo, r2.VersionInfo, clusterNames(t, r3))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	if err := h.srv.WaitForRevision(ctx, rev); err == nil {
		t.Error("WaitForRevision succeeded before the ACK")
	}
	cancel()
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r3.VersionInfo, ResponseNonce: r3.Nonce})
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.WaitForRevision(ctx, rev); err != nil {
		t.Fatalf("WaitForRevision after ACK: %v", err)
	}
	if st := statusOf(t, h.srv, testNode); st.Types["CDS"].State != StateSynced || st.Types["CDS"].Version != r3.VersionInfo {
		t.Errorf("after ACK: %+v", st.Types["CDS"])
	}

	// Disconnect: the proxy leaves after the grace period.
	c.stream.CloseSend()
	waitFor(t, "proxy removed", func() bool { return len(h.srv.Status()) == 0 })
}

func TestBadNodeIsRejected(t *testing.T) {
	h := start(t, 20*time.Millisecond)
	c := dial(t, h.addr)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "gateway~1~a.b~c"}, TypeUrl: resourcev3.ClusterType})
	select {
	case _, ok := <-c.resps:
		if ok {
			t.Fatal("got a response for a malformed node id")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream not closed")
	}
	if n := len(h.srv.Status()); n != 0 {
		t.Errorf("%d proxies registered", n)
	}
}

func TestHTTPStatusAndConfig(t *testing.T) {
	h := start(t, 20*time.Millisecond)
	h.apply(t, vs("reviews"))
	waitFor(t, "config flushed", func() bool { return h.srv.Revision() > 0 })
	c := dial(t, h.addr)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.ClusterType})
	first := c.next(t)
	mux := http.NewServeMux()
	h.srv.RegisterHTTP(mux)
	ts := httptest.NewServer(mux)
	defer ts.Close()
	tests := []struct {
		path     string
		code     int
		contains string
	}{
		{"/api/v1/proxies", 200, `"STALE"`},
		{"/api/v1/proxies/" + testNode + "/config?type=clusters", 200, `"name":"reviews"`},
		{"/api/v1/proxies/" + testNode + "/config?type=listeners", 200, `"resources": []`},
		{"/api/v1/proxies/" + testNode + "/config?type=secrets", 400, "type must be one of"},
		{"/api/v1/proxies/nope/config?type=clusters", 404, "not found"},
		{"/api/v1/sync?revision=1&timeout=300ms", 504, "wait for revision 1"},
		{"/api/v1/sync?revision=x", 400, "revision must be"},
		{"/api/v1/sync?revision=1&timeout=-1s", 400, "timeout must be"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(ts.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b strings.Builder
			_, _ = fmt.Fprint(&b, readAll(t, resp))
			if resp.StatusCode != tc.code || !strings.Contains(strings.ReplaceAll(b.String(), `": "`, `":"`), strings.ReplaceAll(tc.contains, `": "`, `":"`)) {
				t.Errorf("GET %s = %d %s, want %d containing %s", tc.path, resp.StatusCode, b.String(), tc.code, tc.contains)
			}
		})
	}
	// After the ACK the sync endpoint answers at once.
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce})
	resp, err := http.Get(ts.URL + "/api/v1/sync?revision=1&timeout=5s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("sync after ACK = %d, want 200", resp.StatusCode)
	}
	// Metrics.
	rec := httptest.NewRecorder()
	h.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`weft_xds_connected_proxies{type="sidecar"} 1`, `weft_xds_pushes_total{type="CDS"} 1`,
		`weft_config_resources{kind="VirtualService"} 1`, "weft_xds_push_duration_seconds_count", "weft_xds_config_size_bytes_bucket"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func readAll(t *testing.T, r *http.Response) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

func TestHashResourcesIgnoresOrder(t *testing.T) {
	a := &clusterv3.Cluster{Name: "a"}
	b := &clusterv3.Cluster{Name: "b"}
	h1, _ := hashResources([]types.Resource{a, b}, nil)
	h2, _ := hashResources([]types.Resource{b, a}, &sync.Map{})
	h3, _ := hashResources([]types.Resource{a}, nil)
	if h1 != h2 {
		t.Error("order changed the hash")
	}
	if h1 == h3 {
		t.Error("different sets hash equal")
	}
}

func TestDeltaStreamStatus(t *testing.T) {
	h := start(t, 20*time.Millisecond)
	h.apply(t, vs("reviews"))
	waitFor(t, "config flushed", func() bool { return h.srv.Revision() > 0 })
	cc, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: testNode}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "reviews" {
		t.Fatalf("delta resources = %v", r.GetResources())
	}
	waitFor(t, "STALE before ACK", func() bool { return statusOf(t, h.srv, testNode).Types["CDS"].State == StateStale })
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SYNCED after delta ACK", func() bool { return statusOf(t, h.srv, testNode).Types["CDS"].State == StateSynced })
	// A change arrives as a delta with only the new resource.
	h.apply(t, vs("ratings"))
	r, err = st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "ratings" {
		t.Fatalf("second delta resources = %v, want only ratings", r.GetResources())
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResponseNonce: r.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "bad cluster ratings"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NACKED after delta NACK", func() bool { return statusOf(t, h.srv, testNode).Types["CDS"].State == StateNacked })
}
