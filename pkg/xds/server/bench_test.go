package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
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
		addr := "10.255.0.1" // selected pods: not tracked here
		if eps := se.GetEndpoints(); len(eps) > 0 {
			addr = eps[0].GetAddress()
		}
		out.Endpoints = append(out.Endpoints, xdstest.Endpoints(name, c.Meta.Name, addr+":80"))
		r := xdstest.ToCluster(c.Meta.Name, name)
		r.GetRoute().Timeout = timeouts[host]
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: host + ":80", Domains: []string{host, host + ":80"}, Routes: []*routev3.Route{r}})
	}
	out.Routes = []types.Resource{rc}
	return func(*model.Proxy) (*Resources, error) { return out, nil }
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

// benchConfigs is the benchmark's Istio config: services ServiceEntries
// svc-I.bench.svc.cluster.local (HTTP port 80, target port 8080) in
// namespace bench. The first apps of them select their pods (the
// simulated clients, label app=svc-I) with a workloadSelector, the others
// have two static endpoints labelled version v1 and v2. Every fifth
// service has a DestinationRule (subsets v1/v2, connection pool, outlier
// detection) and a VirtualService (90/10 split, timeout, retries);
// svc-0's VirtualService has timeout vsTimeout.
func benchConfigs(services, apps int, vsTimeout time.Duration) []*config.Resource {
	var rs []*config.Resource
	for i := range services {
		name := fmt.Sprintf("svc-%d", i)
		host := name + ".bench.svc.cluster.local"
		se := &networking.ServiceEntry{Hosts: []string{host}, Location: networking.ServiceEntry_MESH_INTERNAL,
			Ports:      []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP", TargetPort: 8080}},
			Resolution: networking.ServiceEntry_STATIC}
		if i < apps {
			se.WorkloadSelector = &networking.WorkloadSelector{Labels: map[string]string{"app": name}}
		} else {
			for v := 1; v <= 2; v++ {
				se.Endpoints = append(se.Endpoints, &networking.WorkloadEntry{Address: fmt.Sprintf("10.%d.%d.%d", 100+i/250, i%250, v),
					Labels: map[string]string{"app": name, "version": fmt.Sprintf("v%d", v)}})
			}
		}
		rs = append(rs, &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindServiceEntry,
			Meta: config.Meta{Name: name, Namespace: "bench"}, Spec: se})
		if i%5 == 0 {
			rs = append(rs, benchVirtualService(i, vsTimeout), &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindDestinationRule,
				Meta: config.Meta{Name: name, Namespace: "bench"},
				Spec: &networking.DestinationRule{Host: host,
					TrafficPolicy: &networking.TrafficPolicy{
						ConnectionPool:   &networking.ConnectionPoolSettings{Http: &networking.ConnectionPoolSettings_HTTPSettings{Http1MaxPendingRequests: 100, MaxRequestsPerConnection: 10}},
						OutlierDetection: &networking.OutlierDetection{Consecutive_5XxErrors: wrapperspb.UInt32(5), Interval: durationpb.New(10 * time.Second), BaseEjectionTime: durationpb.New(30 * time.Second)},
					},
					Subsets: []*networking.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}},
				}})
		}
	}
	return rs
}

// benchVirtualService is svc-I's VirtualService: 90 % to subset v1, 10 %
// to v2, with a timeout and retries.
func benchVirtualService(i int, timeout time.Duration) *config.Resource {
	host := fmt.Sprintf("svc-%d.bench.svc.cluster.local", i)
	return &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindVirtualService,
		Meta: config.Meta{Name: fmt.Sprintf("svc-%d", i), Namespace: "bench"},
		Spec: &networking.VirtualService{Hosts: []string{host},
			Http: []*networking.HTTPRoute{{Timeout: durationpb.New(timeout),
				Retries: &networking.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(timeout / 4), RetryOn: "5xx,connect-failure"},
				Route: []*networking.HTTPRouteDestination{
					{Destination: &networking.Destination{Host: host, Subset: "v1"}, Weight: 90},
					{Destination: &networking.Destination{Host: host, Subset: "v2"}, Weight: 10},
				}}}}}
}

// benchEnvInt reads a positive integer knob.
func benchEnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkControlPlaneScale: 1000 services (benchConfigs: ServiceEntries,
// VirtualServices, DestinationRules) translated by the production
// generator (registry + translate.Build), 5000 ADS clients (sidecars of
// 200 deployments, each its own gRPC connection) on real streams over
// 127.0.0.1, run in 4 child processes (see startBenchClients). It reports
// the time until every client has its first full config (CDS, EDS, LDS,
// RDS) and the pushes have settled, the time from one VirtualService write
// to the store until each client decoded the new route table (p50/p99/max),
// the push computation time, the CPU time of the control plane and of the
// clients for each phase (wall times stretch on a busy machine; CPU time
// does much less), the control plane's RSS (clients excluded) and the
// machine's load average.
//
// Clients speak delta xDS with VHDS as weft proxy does (a change sends the
// virtual hosts it changed); WEFT_BENCH_XDS=sotw makes them
// state-of-the-world clients that get whole route tables, as Envoy and
// gRPC-Go.
//
// Knobs: WEFT_BENCH_CLIENTS, WEFT_BENCH_APPS (deployments), WEFT_BENCH_PROCS
// (client processes), WEFT_BENCH_EGRESS=N (a namespace Sidecar shows each
// client only N services), WEFT_BENCH_STREAMS_PER_CONN (streams per client
// connection, default 1), WEFT_BENCH_DECODE=walk|envelope|full (how much
// of each response the clients decode, see benchDecode), WEFT_BENCH_SYNTHETIC=1 (meshGenerator instead
// of the translator: every client gets the same hand-built resources),
// WEFT_BENCH_HEAP (heap profile once every client is served),
// WEFT_BENCH_FULL_CPU / WEFT_BENCH_CHANGE_CPU (CPU profiles of the control
// plane during the initial push / the change), WEFT_BENCH_CLIENT_CPU (CPU
// profile of the first client process during the change).
func BenchmarkControlPlaneScale(b *testing.B) {
	const services = 1000
	clients := benchEnvInt("WEFT_BENCH_CLIENTS", 5000)
	apps := min(benchEnvInt("WEFT_BENCH_APPS", 200), services)
	procs := benchEnvInt("WEFT_BENCH_PROCS", 4)
	for range b.N {
		st, err := bolt.Open(filepath.Join(b.TempDir(), "weft.db"), bolt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		cfgs := benchConfigs(services, apps, time.Second)
		scope := "every service visible to every client"
		if n := benchEnvInt("WEFT_BENCH_EGRESS", 0); n > 0 {
			// A namespace-wide Sidecar: each client sees only n services
			// (svc-0 among them), as meshes at this scale are often run.
			var hosts []string
			for i := range min(n, services) {
				hosts = append(hosts, fmt.Sprintf("./svc-%d.bench.svc.cluster.local", i))
			}
			cfgs = append(cfgs, &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindSidecar,
				Meta: config.Meta{Name: "default", Namespace: "bench"},
				Spec: &networking.Sidecar{Egress: []*networking.IstioEgressListener{{Hosts: hosts}}}})
			scope = fmt.Sprintf("a Sidecar limits every client to %d services", min(n, services))
		}
		if _, err := st.Apply(context.Background(), store.Upsert, cfgs); err != nil {
			b.Fatal(err)
		}
		mode := "real translator (registry + translate.Build)"
		reg := registry.New(slog.New(slog.DiscardHandler))
		opts := Options{Store: st, Registry: reg, Generate: TranslateGenerator(reg), Logger: slog.New(slog.DiscardHandler), RemoveGrace: time.Minute}
		if os.Getenv("WEFT_BENCH_SYNTHETIC") != "" {
			mode = "synthetic meshGenerator"
			opts.Registry, opts.Generate = nil, meshGenerator
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
		children, err := startBenchClients(ctx, lis.Addr().String(), clients, apps, procs)
		if err != nil {
			b.Fatal(err)
		}
		defer children.stop() // also when the benchmark fails
		served, err := children.await("READY", 5*time.Minute)
		if err != nil {
			b.Fatalf("clients not served: %v; server RSS %s", err, vmRSS())
		}
		firstServed := time.Since(start)
		// Endpoints change while the clients connect (each deployment's
		// pods join their service): wait until the pushes have settled.
		settled, err := srv.benchSettle(2*time.Minute, time.Second)
		if err != nil {
			b.Fatal(err)
		}
		full, fullCPU := settled.Sub(start), cpuTime()-cpu0
		stopFullProfile()
		if f := os.Getenv("WEFT_BENCH_HEAP"); f != "" {
			if out, err := os.Create(f); err == nil {
				_ = pprof.WriteHeapProfile(out)
				out.Close()
			}
		}
		var streamErrs int
		for i := 2; i < len(served); i += 2 {
			n, _ := strconv.Atoi(served[i])
			streamErrs += n
		}
		proto := "delta xDS with VHDS, as weft proxy"
		if os.Getenv("WEFT_BENCH_XDS") == "sotw" {
			proto = "state-of-the-world ADS, as Envoy and gRPC-Go"
		}
		b.Logf("%s; %d services (%s), %d clients (%s) of %d deployments in %d processes; load average %s", mode, services, scope, clients, proto, apps, procs, loadAvg())
		b.Logf("one client's config: %s", srv.benchSizes())
		b.Logf("full push: every client had CDS+EDS+LDS+RDS after %v, pushes settled after %v; control-plane CPU %v, clients CPU %v, %d stream errors; control-plane RSS %s, client processes RSS %s",
			firstServed.Round(time.Millisecond), full.Round(time.Millisecond), fullCPU.Round(time.Millisecond), children.cpu(), streamErrs, vmRSS(), children.rss())

		// One VirtualService change that reaches every client's route "80".
		stopProfile := func() {}
		if f := os.Getenv("WEFT_BENCH_CHANGE_CPU"); f != "" { // profile only the change
			if out, err := os.Create(f); err == nil && pprof.StartCPUProfile(out) == nil {
				stopProfile = func() { pprof.StopCPUProfile(); out.Close() }
			}
		}
		versions0 := srv.benchVersions()
		if err := children.send("GO"); err != nil {
			b.Fatal(err)
		}
		changed, cpu1, childCPU, sent0, marshals0 := time.Now(), cpuTime(), children.cpu(), srv.prepared.hits.Load(), srv.prepared.marshals.Load()
		if _, err := st.Apply(context.Background(), store.Upsert, []*config.Resource{benchVirtualService(0, 3*time.Second)}); err != nil {
			b.Fatal(err)
		}
		at, err := children.await("CHANGED", 3*time.Minute)
		if err != nil {
			b.Fatalf("VirtualService change did not reach every client: %v", err)
		}
		changeCPU, changeChildCPU := cpuTime()-cpu1, children.cpu()-childCPU
		sent, marshals := srv.prepared.hits.Load()-sent0, srv.prepared.marshals.Load()-marshals0
		// When the control plane handed its last response to gRPC (all but
		// at most one 64 KiB write quota of it written to the socket).
		lastSend := time.Unix(0, srv.lastSend.Load()).Sub(changed)
		stopProfile()
		lat := make([]time.Duration, 0, clients)
		for _, f := range at[1:] {
			_, ts, _ := strings.Cut(f, "=")
			n, err := strconv.ParseInt(ts, 10, 64)
			if err != nil {
				b.Fatalf("client process: bad time %q", f)
			}
			lat = append(lat, time.Unix(0, n).Sub(changed))
		}
		if len(lat) != clients {
			b.Fatalf("client processes reported %d of %d clients", len(lat), clients)
		}
		slices.Sort(lat)
		var changedTypes []string
		for i, v := range srv.benchVersions() {
			if v != versions0[i] {
				changedTypes = append(changedTypes, typeNames[i])
			}
		}
		b.Logf("VirtualService change reached %d clients: p50 %v, p99 %v, max %v (debounce %v; push computation %v; types changed for a client: %v; %d responses sent from %d encoded bodies, the last handed to gRPC after %v; CPU: control plane %v, clients %v); control-plane RSS %s (peak %s); load average %s",
			clients, lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), srv.opts.Debounce, time.Duration(srv.lastPushDur.Load()).Round(time.Millisecond), changedTypes, sent, marshals, lastSend.Round(time.Millisecond), changeCPU.Round(time.Millisecond), changeChildCPU, vmRSS(), procStatus("self", "VmHWM:"), loadAvg())
		b.ReportMetric(full.Seconds(), "full-push-s")
		b.ReportMetric(lat[len(lat)/2].Seconds()*1000, "change-p50-ms")
		b.ReportMetric(lat[len(lat)*99/100].Seconds()*1000, "change-p99-ms")
		rss, _ := strconv.Atoi(strings.Fields(vmRSS() + " 0")[0])
		b.ReportMetric(float64(rss)/1024, "cp-rss-MiB")

		children.stop()
		cancel()
		bg.Wait()
		_ = st.Close()
	}
}

// benchSettle waits until no push was pending or computed and no response
// handed to gRPC for quiet, polling; it fails after timeout. It returns
// when the last push or send happened.
func (s *Server) benchSettle(timeout, quiet time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	lastVersion, since := s.version.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if v := s.version.Load(); v != lastVersion || !s.idle() {
			lastVersion, since = v, time.Now()
			continue
		}
		lastSent := time.Unix(0, s.lastSend.Load())
		if lastSent.After(since) {
			since = lastSent
		}
		if time.Since(since) >= quiet {
			return since, nil
		}
	}
	return time.Time{}, fmt.Errorf("pushes did not settle within %v", timeout)
}

// loadAvg is the machine's 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// benchVersions are the set versions of one proxy (the same proxy while
// no proxy leaves), by type.
func (s *Server) benchVersions() [numTypes]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.proxies {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out [numTypes]string
	if len(ids) > 0 {
		for i := range numTypes {
			out[i] = s.proxies[ids[0]].gen[i].version
		}
	}
	return out
}

// benchSizes describes one proxy's generated sets: resources and encoded
// bytes per type.
func (s *Server) benchSizes() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.proxies {
		var parts []string
		for i := range numTypes {
			parts = append(parts, fmt.Sprintf("%s %d resources %d KB", typeNames[i], len(p.gen[i].resources), p.gen[i].size/1024))
		}
		return strings.Join(parts, ", ")
	}
	return "no proxy"
}
