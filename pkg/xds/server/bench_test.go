package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	encodingproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/bolt"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// meshGenerator builds, once per push, one EDS cluster and load assignment
// per ServiceEntry, an outbound listener on port 80 and route config "80"
// with one virtual host per service; a VirtualService's first http timeout
// lands on its host's route. All proxies share the same resources, as a
// translator with per-push caching would.
func meshGenerator(configs []*config.Resource) func(*model.Proxy) (*Resources, error) {
	timeouts := map[string]*durationpb.Duration{}
	for _, c := range configs {
		if v, ok := c.Spec.(*networking.VirtualService); ok && len(v.GetHttp()) > 0 && v.GetHttp()[0].GetTimeout() != nil {
			for _, h := range v.GetHosts() {
				timeouts[h] = durationpb.New(v.GetHttp()[0].GetTimeout().AsDuration())
			}
		}
	}
	out := &Resources{Listeners: []types.Resource{xdstest.HTTPListener(80)}}
	rc := &routev3.RouteConfiguration{Name: "80"}
	for _, c := range configs {
		se, ok := c.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		host := se.GetHosts()[0]
		name := "outbound|80||" + host
		out.Clusters = append(out.Clusters, xdstest.EDSCluster(name))
		out.Endpoints = append(out.Endpoints, xdstest.Endpoints(name, c.Meta.Name, se.GetEndpoints()[0].GetAddress()+":80"))
		r := xdstest.ToCluster(c.Meta.Name, name)
		r.GetRoute().Timeout = timeouts[host]
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: host + ":80", Domains: []string{host, host + ":80"}, Routes: []*routev3.Route{r}})
	}
	out.Routes = []types.Resource{rc}
	return func(*model.Proxy) (*Resources, error) { return out, nil }
}

// benchClient is one simulated sidecar on an ADS stream: it asks for every
// cluster and route config "80", ACKs everything and records RDS versions.
type benchClient struct {
	ready      chan struct{} // closed when CDS and RDS first arrive
	readyOnce  sync.Once
	rdsVersion atomic.Value // string
	rdsAt      atomic.Int64 // unix nanos of the last RDS response
}

func (c *benchClient) run(ctx context.Context, cc *grpc.ClientConn, id string) error {
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx, grpc.ForceCodecV2(benchCodec{encoding.GetCodecV2(encodingproto.Name)}))
	if err != nil {
		return err
	}
	node := &corev3.Node{Id: id}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType}); err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.RouteType, ResourceNames: []string{"80"}}); err != nil {
		return err
	}
	var gotCDS, gotRDS bool
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}
		switch r.GetTypeUrl() {
		case resourcev3.ClusterType:
			gotCDS = true
		case resourcev3.RouteType:
			ack.ResourceNames = []string{"80"}
			c.rdsVersion.Store(r.GetVersionInfo())
			c.rdsAt.Store(time.Now().UnixNano())
			gotRDS = true
		}
		if err := st.Send(ack); err != nil {
			return err
		}
		if gotCDS && gotRDS {
			c.readyOnce.Do(func() { close(c.ready) })
		}
	}
}

// benchCodec is the simulated clients' codec: a DiscoveryResponse is
// decoded only as far as the client needs (version_info, type_url, nonce;
// the resources are counted, not decoded), so the client process, which
// shares this machine with the control plane, spends little CPU per
// response. Everything else goes to the proto codec.
type benchCodec struct{ base encoding.CodecV2 }

func (c benchCodec) Name() string { return c.base.Name() }

func (c benchCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c benchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*discoveryv3.DiscoveryResponse)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	rd := data.Reader()
	defer rd.Close()
	resources := 0
	for rd.Remaining() > 0 {
		tag, err := binary.ReadUvarint(rd)
		if err != nil {
			return fmt.Errorf("response tag: %w", err)
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		if typ != protowire.BytesType {
			return fmt.Errorf("response field %d: unexpected wire type %d", num, typ)
		}
		n, err := binary.ReadUvarint(rd)
		if err != nil || n > uint64(rd.Remaining()) {
			return fmt.Errorf("response field %d: bad length", num)
		}
		if num == 2 { // a resource: counted, skipped
			resources++
			if _, err := rd.Discard(int(n)); err != nil {
				return err
			}
			continue
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(rd, b); err != nil {
			return err
		}
		switch num {
		case 1:
			r.VersionInfo = string(b)
		case 4:
			r.TypeUrl = string(b)
		case 5:
			r.Nonce = string(b)
		}
	}
	if resources == 0 {
		return fmt.Errorf("%s response %s carries no resources", r.TypeUrl, r.VersionInfo)
	}
	return nil
}

// vmRSS is this process's resident set: in the benchmark, the control
// plane alone (the clients run in a child process).
func vmRSS() string { return procStatus("self", "VmRSS:") }

// cpuTime is the CPU time (user+system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatus reads one field of /proc/PID/status.
func procStatus(pid, field string) string {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			return strings.TrimSpace(strings.TrimPrefix(l, field))
		}
	}
	return "?"
}

// BenchmarkControlPlaneScale: 1000 services, 5000 ADS clients on real gRPC
// streams over 127.0.0.1 (100 streams per connection), run in a child
// process (see startBenchClients). It reports the time to serve every
// client its first full config, the time for one VirtualService change to
// reach every client (p50/p99/max), the push computation time, the control
// plane's CPU time for each phase (wall times stretch on a busy machine;
// CPU time does much less) and its RSS, clients excluded.
// WEFT_BENCH_CLIENTS scales it down; WEFT_BENCH_TRANSLATE=1 uses the
// registry and the real translator instead of meshGenerator; WEFT_BENCH_HEAP writes a heap profile
// once every client is served, WEFT_BENCH_CHANGE_CPU a CPU profile of the
// change alone.
func BenchmarkControlPlaneScale(b *testing.B) {
	const (
		services      = 1000
		streamsPerCon = 100
	)
	clients := 5000
	if n, err := strconv.Atoi(os.Getenv("WEFT_BENCH_CLIENTS")); err == nil && n > 0 {
		clients = n // for profiling at a smaller scale
	}
	for range b.N {
		st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		var rs []*config.Resource
		for i := range services {
			host := fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)
			rs = append(rs, &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindServiceEntry,
				Meta: config.Meta{Name: fmt.Sprintf("svc-%d", i), Namespace: "bench"},
				Spec: &networking.ServiceEntry{Hosts: []string{host}, Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
					Resolution: networking.ServiceEntry_STATIC, Endpoints: []*networking.WorkloadEntry{{Address: fmt.Sprintf("10.%d.%d.1", i/250, i%250)}}}})
		}
		vsRes := func(timeout time.Duration) *config.Resource {
			return &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindVirtualService,
				Meta: config.Meta{Name: "svc-0", Namespace: "bench"},
				Spec: &networking.VirtualService{Hosts: []string{"svc-0.bench.svc.cluster.local"},
					Http: []*networking.HTTPRoute{{Timeout: durationpb.New(timeout),
						Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "svc-0.bench.svc.cluster.local"}}}}}}}
		}
		rs = append(rs, vsRes(time.Second))
		if _, err := st.Apply(context.Background(), store.Upsert, rs); err != nil {
			b.Fatal(err)
		}
		opts := Options{Store: st, Generate: meshGenerator, Logger: slog.New(slog.DiscardHandler), RemoveGrace: time.Minute}
		if os.Getenv("WEFT_BENCH_TRANSLATE") != "" { // the production generator
			reg := registry.New(slog.New(slog.DiscardHandler))
			opts.Registry, opts.Generate = reg, TranslateGenerator(reg)
		}
		srv, err := New(opts)
		if err != nil {
			b.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var bg sync.WaitGroup
		bg.Add(2)
		go func() { defer bg.Done(); _ = srv.Run(ctx) }()
		go func() { defer bg.Done(); _ = srv.Serve(ctx, lis) }()
		for srv.Revision() == 0 {
			time.Sleep(10 * time.Millisecond)
		}

		stopFullProfile := func() {}
		if f := os.Getenv("WEFT_BENCH_FULL_CPU"); f != "" { // profile the initial push
			if out, err := os.Create(f); err == nil && pprof.StartCPUProfile(out) == nil {
				stopFullProfile = func() { pprof.StopCPUProfile(); out.Close() }
			}
		}
		start, cpu0 := time.Now(), cpuTime()
		child, err := startBenchClients(ctx, lis.Addr().String(), clients)
		if err != nil {
			b.Fatal(err)
		}
		served, err := child.await("READY", 3*time.Minute)
		if err != nil {
			b.Fatalf("clients not served: %v; server RSS %s", err, vmRSS())
		}
		full, fullCPU := time.Since(start), cpuTime()-cpu0
		stopFullProfile()
		if f := os.Getenv("WEFT_BENCH_HEAP"); f != "" {
			if out, err := os.Create(f); err == nil {
				_ = pprof.WriteHeapProfile(out)
				out.Close()
			}
		}
		b.Logf("initial full config (%d clusters + %d endpoints + 1 route of %d vhosts) to %d clients: %v, control-plane CPU %v (clients, stream errors: %s); control-plane RSS %s, client process RSS %s",
			services, services, services, clients, full, fullCPU.Round(time.Millisecond), strings.Join(served[1:], " "), vmRSS(), child.rss())

		// One VirtualService change that reaches every client's route "80".
		stopProfile := func() {}
		if f := os.Getenv("WEFT_BENCH_CHANGE_CPU"); f != "" { // profile only the change
			if out, err := os.Create(f); err == nil && pprof.StartCPUProfile(out) == nil {
				stopProfile = func() { pprof.StopCPUProfile(); out.Close() }
			}
		}
		changed, cpu1, childCPU, sent0, marshals0 := time.Now(), cpuTime(), child.cpu(), srv.prepared.hits.Load(), srv.prepared.marshals.Load()
		if _, err := st.Apply(context.Background(), store.Upsert, []*config.Resource{vsRes(3 * time.Second)}); err != nil {
			b.Fatal(err)
		}
		at, err := child.await("CHANGED", 2*time.Minute)
		if err != nil {
			b.Fatalf("VirtualService change did not reach every client: %v", err)
		}
		changeCPU, changeChildCPU := cpuTime()-cpu1, child.cpu()-childCPU
		sent, marshals := srv.prepared.hits.Load()-sent0, srv.prepared.marshals.Load()-marshals0
		// When the control plane handed its last response to gRPC (all but
		// at most one 64 KiB write quota of it written to the socket).
		lastSend := time.Unix(0, srv.lastSend.Load()).Sub(changed)
		stopProfile()
		lat := make([]time.Duration, 0, clients)
		for _, f := range at[1:] {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				b.Fatalf("client process: bad time %q", f)
			}
			lat = append(lat, time.Unix(0, n).Sub(changed))
		}
		if len(lat) != clients {
			b.Fatalf("client process reported %d of %d clients", len(lat), clients)
		}
		slices.Sort(lat)
		b.Logf("VirtualService change reached %d clients: p50 %v, p99 %v, max %v (debounce %v; push computation %v; %d responses sent from %d encoded bodies, the last handed to gRPC after %v; CPU: control plane %v, clients %v); control-plane RSS %s (peak %s), client process RSS %s",
			clients, lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1], srv.opts.Debounce, time.Duration(srv.lastPushDur.Load()), sent, marshals, lastSend.Round(time.Millisecond), changeCPU.Round(time.Millisecond), changeChildCPU, vmRSS(), procStatus("self", "VmHWM:"), child.rss())
		b.ReportMetric(full.Seconds(), "full-push-s")
		b.ReportMetric(lat[len(lat)/2].Seconds()*1000, "change-p50-ms")
		b.ReportMetric(lat[len(lat)*99/100].Seconds()*1000, "change-p99-ms")
		rss, _ := strconv.Atoi(strings.Fields(vmRSS() + " 0")[0])
		b.ReportMetric(float64(rss)/1024, "cp-rss-MiB")

		child.stop()
		cancel()
		bg.Wait()
		_ = st.Close()
	}
}
