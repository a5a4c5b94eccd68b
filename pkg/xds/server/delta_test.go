package server

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
	"github.com/weftmesh/weft/pkg/registry"
)

// startTranslated runs a server with the production generator over cfgs.
func startTranslated(t *testing.T, cfgs []*config.Resource) (store.Store, *Server, string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := registry.New(log)
	st, srv, addr := serve(t, Options{Registry: reg, Generate: TranslateGenerator(reg), Logger: log, Debounce: 10 * time.Millisecond}, cfgs...)
	waitFor(t, "config flushed", func() bool { return srv.Revision() > 0 })
	return st, srv, addr
}

func TestFeatureVHDSMatchesClient(t *testing.T) {
	if featureVHDS != xdsclient.FeatureVHDS {
		t.Fatalf("server feature %q, client feature %q", featureVHDS, xdsclient.FeatureVHDS)
	}
}

// normalRoutes returns route configurations with virtual hosts sorted by
// name (VHDS does not keep the translator's order; Envoy and weft proxy
// match virtual hosts by domain, not by position).
func normalRoutes(in map[string]*routev3.RouteConfiguration) map[string]*routev3.RouteConfiguration {
	out := map[string]*routev3.RouteConfiguration{}
	for n, rc := range in {
		c := proto.Clone(rc).(*routev3.RouteConfiguration)
		slices.SortFunc(c.VirtualHosts, func(a, b *routev3.VirtualHost) int { return strings.Compare(a.GetName(), b.GetName()) })
		out[n] = c
	}
	return out
}

// TestDeltaVHDSMatchesSotW applies random sequences of changes (services
// added and removed, VirtualServices and DestinationRules edited, added,
// deleted) and checks after each that weft proxy's xdsclient over delta
// xDS with VHDS holds exactly what a state-of-the-world client of the same
// proxy class holds.
func TestDeltaVHDSMatchesSotW(t *testing.T) {
	const services = 12
	all := benchConfigs(services, 0, time.Second)
	byKey := map[config.Key]*config.Resource{}
	for _, r := range all {
		byKey[r.Key()] = r
	}
	st, srv, addr := startTranslated(t, all)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(uint64(seed), 1))

	type client struct {
		c    *xdsclient.Client
		last func() *xdsclient.Resources
	}
	var clients []client
	for i, delta := range []bool{true, false} {
		rec := &struct {
			mu  chan struct{}
			res *xdsclient.Resources
		}{mu: make(chan struct{}, 1)}
		rec.mu <- struct{}{}
		c, err := xdsclient.New(xdsclient.Config{Address: addr, Node: benchNode(i*5, 5), Delta: delta,
			BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
			Update: func(r *xdsclient.Resources) error { <-rec.mu; rec.res = r; rec.mu <- struct{}{}; return nil }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = c.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		clients = append(clients, client{c, func() *xdsclient.Resources { <-rec.mu; defer func() { rec.mu <- struct{}{} }(); return rec.res }})
	}
	compare := func(step string) {
		t.Helper()
		rev := srv.Revision()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var diff string
		for ctx.Err() == nil {
			if err := srv.WaitForRevision(ctx, rev); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			d, s := clients[0].last(), clients[1].last()
			if d != nil && s != nil && d.Complete() && s.Complete() {
				diff = cmp.Diff(s.Listeners, d.Listeners, protocmp.Transform()) +
					cmp.Diff(s.Clusters, d.Clusters, protocmp.Transform()) +
					cmp.Diff(s.Endpoints, d.Endpoints, protocmp.Transform()) +
					cmp.Diff(normalRoutes(s.Routes), normalRoutes(d.Routes), protocmp.Transform())
				if diff == "" {
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("%s: delta client differs from SotW client (-sotw +delta):\n%s", step, diff)
	}
	compare("initial")
	present := map[config.Key]bool{}
	for k := range byKey {
		present[k] = true
	}
	for step := range 25 {
		k := fmt.Sprintf("svc-%d", rnd.IntN(services))
		var what string
		switch rnd.IntN(4) {
		case 0: // edit a VirtualService (timeout)
			vs := benchVirtualService(rnd.IntN(services), time.Duration(1+rnd.IntN(9))*time.Second)
			if _, err := st.Apply(context.Background(), store.Upsert, []*config.Resource{vs}); err != nil {
				t.Fatal(err)
			}
			present[vs.Key()] = true
			what = "edit VirtualService " + vs.Meta.Name
		case 1: // delete or restore a ServiceEntry
			key := config.Key{Kind: config.KindServiceEntry, Namespace: "bench", Name: k}
			if present[key] {
				if _, err := st.Delete(context.Background(), key, ""); err != nil {
					t.Fatal(err)
				}
				present[key] = false
				what = "delete ServiceEntry " + k
			} else {
				if _, err := st.Apply(context.Background(), store.Upsert, []*config.Resource{byKey[key]}); err != nil {
					t.Fatal(err)
				}
				present[key] = true
				what = "restore ServiceEntry " + k
			}
		case 2: // delete a VirtualService
			key := config.Key{Kind: config.KindVirtualService, Namespace: "bench", Name: k}
			if !present[key] {
				continue
			}
			if _, err := st.Delete(context.Background(), key, ""); err != nil {
				t.Fatal(err)
			}
			present[key] = false
			what = "delete VirtualService " + k
		case 3: // restore a DestinationRule or delete one
			key := config.Key{Kind: config.KindDestinationRule, Namespace: "bench", Name: k}
			if byKey[key] == nil {
				continue
			}
			if present[key] {
				if _, err := st.Delete(context.Background(), key, ""); err != nil {
					t.Fatal(err)
				}
				what = "delete DestinationRule " + k
			} else {
				if _, err := st.Apply(context.Background(), store.Upsert, []*config.Resource{byKey[key]}); err != nil {
					t.Fatal(err)
				}
				what = "restore DestinationRule " + k
			}
			present[key] = !present[key]
		}
		waitFor(t, "push of "+what, func() bool { return srv.idle() })
		compare(fmt.Sprintf("step %d (%s)", step, what))
	}
}

// deltaRaw is a raw delta ADS stream.
type deltaRaw = rawStream[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse]

func dialDelta(t *testing.T, addr string) *deltaRaw {
	t.Helper()
	return openRaw[*discoveryv3.DeltaDiscoveryRequest, *discoveryv3.DeltaDiscoveryResponse](t, addr, 100, 10*time.Second,
		func(c discoveryv3.AggregatedDiscoveryServiceClient, ctx context.Context) (discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient, error) {
			return c.DeltaAggregatedResources(ctx)
		})
}

func resourceNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, x := range r.GetResources() {
		out = append(out, x.GetName())
	}
	return out
}

// TestDeltaSendsChangedVirtualHostOnly: one VirtualService change sends a
// VHDS client the one virtual host it changed (not the route table, not
// clusters); a deleted service's virtual host is removed; a NACK holds the
// type back until it changes and then everything is sent again; a
// reconnecting client is told which of its resources are gone.
func TestDeltaSendsChangedVirtualHostOnly(t *testing.T) {
	st, srv, addr := startTranslated(t, benchConfigs(20, 0, time.Second))
	node := benchNode(0, 1)
	node.ClientFeatures = []string{featureVHDS}
	d := dialDelta(t, addr)
	d.send(t, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{"80"}})
	r := d.next(t)
	if r.GetTypeUrl() != resourcev3.RouteType || len(r.GetResources()) != 1 {
		t.Fatalf("first response: %s %v", r.GetTypeUrl(), resourceNames(r))
	}
	var rc routev3.RouteConfiguration
	if err := r.GetResources()[0].GetResource().UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	if rc.GetName() != "80" || len(rc.GetVirtualHosts()) != 0 || rc.GetVhds().GetConfigSource().GetAds() == nil {
		t.Fatalf("route configuration in VHDS form: %v", &rc)
	}
	d.send(t, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.RouteType, ResponseNonce: r.GetNonce()})
	d.send(t, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.VirtualHostType, ResourceNamesSubscribe: []string{"80"}})
	r = d.next(t)
	if r.GetTypeUrl() != resourcev3.VirtualHostType || len(r.GetResources()) != 21 { // 20 services + allow_any
		t.Fatalf("virtual hosts: %s %v", r.GetTypeUrl(), resourceNames(r))
	}
	versions := map[string]string{}
	for _, x := range r.GetResources() {
		versions[x.GetName()] = x.GetVersion()
	}
	d.send(t, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.VirtualHostType, ResponseNonce: r.GetNonce()})
	waitFor(t, "RDS synced", func() bool { return statusOf(t, srv, node.Id).Types["RDS"].State == StateSynced })

	const vh0 = "80/svc-0.bench.svc.cluster.local:80"
	if _, err := st.Apply(context.Background(), store.Upsert, []*config.Resource{benchVirtualService(0, 3*time.Second)}); err != nil {
		t.Fatal(err)
	}
	r = d.next(t)
	if r.GetTypeUrl() != resourcev3.VirtualHostType || !slices.Equal(resourceNames(r), []string{vh0}) || len(r.GetRemovedResources()) != 0 {
		t.Fatalf("after a VirtualService change: %s %v removed %v", r.GetTypeUrl(), resourceNames(r), r.GetRemovedResources())
	}
	var vh routev3.VirtualHost
	if err := r.GetResources()[0].GetResource().UnmarshalTo(&vh); err != nil {
		t.Fatal(err)
	}
	if got := vh.GetRoutes()[0].GetRoute().GetTimeout().AsDuration(); got != 3*time.Second {
		t.Errorf("changed virtual host's timeout %v, want 3s", got)
	}
	if r.GetResources()[0].GetVersion() == versions[vh0] {
		t.Error("changed virtual host kept its version")
	}

	// NACK: held back until the type changes, then everything is resent.
	d.send(t, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.VirtualHostType, ResponseNonce: r.GetNonce(),
		ErrorDetail: statusErr("rejected")})
	waitFor(t, "NACK recorded", func() bool { return statusOf(t, srv, node.Id).Types["RDS"].State == StateNacked })
	if _, err := st.Delete(context.Background(), config.Key{Kind: config.KindServiceEntry, Namespace: "bench", Name: "svc-7"}, ""); err != nil {
		t.Fatal(err)
	}
	r = d.next(t)
	if r.GetTypeUrl() != resourcev3.VirtualHostType || len(r.GetResources()) != 20 ||
		!slices.Equal(r.GetRemovedResources(), []string{"80/svc-7.bench.svc.cluster.local:80"}) {
		t.Fatalf("after the NACK and a service deletion: %s %d resources, removed %v", r.GetTypeUrl(), len(r.GetResources()), r.GetRemovedResources())
	}
	d.send(t, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.VirtualHostType, ResponseNonce: r.GetNonce()})

	// Reconnect claiming the deleted service's virtual host: it is removed.
	d2 := dialDelta(t, addr)
	node2 := proto.Clone(node).(*corev3.Node)
	node2.Id = strings.Replace(node.Id, "svc-0-0", "svc-0-1", 1)
	d2.send(t, &discoveryv3.DeltaDiscoveryRequest{Node: node2, TypeUrl: resourcev3.VirtualHostType, ResourceNamesSubscribe: []string{"80"},
		InitialResourceVersions: map[string]string{"80/svc-7.bench.svc.cluster.local:80": "1", vh0: "2"}})
	r = d2.next(t)
	if len(r.GetResources()) != 20 || !slices.Equal(r.GetRemovedResources(), []string{"80/svc-7.bench.svc.cluster.local:80"}) {
		t.Fatalf("reconnect: %d resources, removed %v", len(r.GetResources()), r.GetRemovedResources())
	}
}

func statusErr(msg string) *status.Status { return &status.Status{Code: 3, Message: msg} }

// A view's diff memo must not keep the views it was computed from alive:
// each push's sets would otherwise hold every earlier push's.
func TestDeltaBodiesDoNotKeepOldViews(t *testing.T) {
	mk := func(version string, timeout time.Duration) *deltaView {
		sr := &sharedResources{version: version, resources: []types.Resource{
			&clusterv3.Cluster{Name: "a", ConnectTimeout: durationpb.New(timeout)}, &clusterv3.Cluster{Name: "b"}}}
		return sr.view()
	}
	old := mk("1", time.Second)
	w := weak.Make(old)
	cur := mk("2", 2*time.Second)
	all := nameKey{all: true}
	body, empty, err := cur.body(&prepStats{}, resourcev3.ClusterType, deltaKey{base: old, prev: old, had: all, want: all})
	if err != nil || empty {
		t.Fatalf("diff: empty %v, err %v", empty, err)
	}
	var resp discoveryv3.DeltaDiscoveryResponse
	if err := proto.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if got := resourceNames(&resp); !slices.Equal(got, []string{"a"}) {
		t.Errorf("diff sends %v, want [a] (b is unchanged)", got)
	}
	old = nil
	runtime.GC()
	runtime.GC()
	if w.Value() != nil {
		t.Error("the new view's diff memo keeps the old view alive")
	}
	runtime.KeepAlive(cur)
}
