package xdsclient_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

const node = "sidecar~127.0.0.1~a.default~default.svc.cluster.local"

type recorder struct {
	mu      sync.Mutex
	applied []*xdsclient.Resources
	reject  func(*xdsclient.Resources) error
}

func (r *recorder) update(res *xdsclient.Resources) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reject != nil {
		if err := r.reject(res); err != nil {
			return err
		}
	}
	r.applied = append(r.applied, res)
	return nil
}

func (r *recorder) last() *xdsclient.Resources {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.applied) == 0 {
		return nil
	}
	return r.applied[len(r.applied)-1]
}

func wait(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out: %s", what)
}

func start(t *testing.T, cp *xdstest.ControlPlane, rec *recorder) *xdsclient.Client {
	c, err := xdsclient.New(xdsclient.Config{Address: cp.Addr, Node: &corev3.Node{Id: node}, Update: rec.update,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
	return c
}

func TestFollowsReferencesAndCompletes(t *testing.T) {
	cp := xdstest.Start(t)
	cp.Set(t, node, &xdstest.Resources{
		Listeners: []types.Resource{xdstest.HTTPListener(9080)},
		Routes:    []types.Resource{xdstest.RouteConfig(9080, "a", xdstest.ToCluster("r", "c1"))},
		Clusters:  []types.Resource{xdstest.EDSCluster("c1")},
		Endpoints: []types.Resource{xdstest.Endpoints("c1", "w", "127.0.0.1:1")},
	})
	rec := &recorder{}
	c := start(t, cp, rec)
	wait(t, "complete set", func() bool { l := rec.last(); return l != nil && l.Complete() })
	res := c.Current()
	if res.Routes["9080"] == nil || res.Endpoints["c1"] == nil || res.Listeners["0.0.0.0_9080"] == nil {
		t.Fatalf("resources %v", res)
	}
	if got := res.RouteNames(); len(got) != 1 || got[0] != "9080" {
		t.Fatalf("route names %v", got)
	}
	if st := c.Stats(); st.ACKs < 4 || st.NACKs != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNACKKeepsLastGood(t *testing.T) {
	cp := xdstest.Start(t)
	good := xdstest.EDSCluster("c1")
	cp.Set(t, node, &xdstest.Resources{Clusters: []types.Resource{good}, Endpoints: []types.Resource{xdstest.Endpoints("c1", "w", "127.0.0.1:1")}})
	rec := &recorder{reject: func(r *xdsclient.Resources) error {
		if r.Clusters["veto"] != nil {
			return errors.New("cluster veto cannot be executed")
		}
		return nil
	}}
	c := start(t, cp, rec)
	wait(t, "first clusters", func() bool { return c.Current().Clusters["c1"] != nil })

	// Fails proto validation: negative connect timeout.
	bad := xdstest.EDSCluster("c2")
	bad.ConnectTimeout = durationpb.New(-time.Second)
	cp.Set(t, node, &xdstest.Resources{Clusters: []types.Resource{good, bad}})
	select {
	case n := <-cp.NACKs:
		if !strings.Contains(n.GetErrorDetail().GetMessage(), "c2") {
			t.Fatalf("NACK detail %q", n.GetErrorDetail().GetMessage())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no NACK for an invalid cluster")
	}
	// Fails the semantic check of the Update callback.
	veto := &clusterv3.Cluster{Name: "veto", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
	cp.Set(t, node, &xdstest.Resources{Clusters: []types.Resource{good, veto}})
	for found := false; !found; {
		select {
		case n := <-cp.NACKs: // earlier NACKs of c2 may still be queued
			found = strings.Contains(n.GetErrorDetail().GetMessage(), "veto")
		case <-time.After(5 * time.Second):
			t.Fatal("no NACK for a vetoed update")
		}
	}
	if cur := c.Current(); cur.Clusters["c2"] != nil || cur.Clusters["veto"] != nil || cur.Clusters["c1"] == nil {
		t.Fatalf("current clusters after NACKs: %v", cur.Clusters)
	}
	time.Sleep(time.Second) // the server keeps resending the vetoed version
	if st := c.Stats(); st.NACKs < 2 || st.NACKs > 12 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewValidates(t *testing.T) {
	ok := func(*xdsclient.Resources) error { return nil }
	for name, cfg := range map[string]xdsclient.Config{
		"no address": {Node: &corev3.Node{}, Update: ok},
		"no node":    {Address: "x:1", Update: ok},
		"no update":  {Address: "x:1", Node: &corev3.Node{}},
	} {
		if _, err := xdsclient.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestLargeResponse: a response above gRPC's default 4 MiB receive limit
// (a big route table, or wasm modules inline in a listener) is accepted.
func TestLargeResponse(t *testing.T) {
	var routes []*routev3.Route
	for i := range 6000 {
		routes = append(routes, xdstest.ToCluster(fmt.Sprintf("r%d-%s", i, strings.Repeat("x", 1000)), "c1"))
	}
	cp := xdstest.Start(t)
	cp.Set(t, node, &xdstest.Resources{
		Listeners: []types.Resource{xdstest.HTTPListener(9080)},
		Routes:    []types.Resource{xdstest.RouteConfig(9080, "a", routes...)},
		Clusters:  []types.Resource{xdstest.EDSCluster("c1")},
		Endpoints: []types.Resource{xdstest.Endpoints("c1", "w", "127.0.0.1:1")},
	})
	rec := &recorder{}
	start(t, cp, rec)
	wait(t, "complete set with a 6 MB route table", func() bool { l := rec.last(); return l != nil && l.Complete() })
}

// TestDeltaWithoutVHDS: over delta xDS with a server that does not know
// FeatureVHDS (go-control-plane's delta server), route configurations
// arrive whole and the client follows references and completes as with
// state of the world; a removed cluster is removed.
func TestDeltaWithoutVHDS(t *testing.T) {
	cp := xdstest.Start(t)
	set := &xdstest.Resources{
		Listeners: []types.Resource{xdstest.HTTPListener(9080)},
		Routes:    []types.Resource{xdstest.RouteConfig(9080, "a", xdstest.ToCluster("r", "c1"))},
		Clusters:  []types.Resource{xdstest.EDSCluster("c1"), xdstest.EDSCluster("c2")},
		Endpoints: []types.Resource{xdstest.Endpoints("c1", "w", "127.0.0.1:1"), xdstest.Endpoints("c2", "w", "127.0.0.1:2")},
	}
	cp.Set(t, node, set)
	rec := &recorder{}
	c, err := xdsclient.New(xdsclient.Config{Address: cp.Addr, Node: &corev3.Node{Id: node}, Update: rec.update, Delta: true,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait(t, "complete set", func() bool { l := rec.last(); return l != nil && l.Complete() && l.Endpoints["c2"] != nil })
	if vh := c.Current().Routes["9080"].GetVirtualHosts(); len(vh) != 1 {
		t.Fatalf("virtual hosts %v", vh)
	}
	set.Clusters, set.Endpoints = set.Clusters[:1], set.Endpoints[:1]
	cp.Set(t, node, set)
	wait(t, "c2 removed", func() bool { return c.Current().Clusters["c2"] == nil && c.Current().Clusters["c1"] != nil })
	if st := c.Stats(); st.NACKs != 0 {
		t.Fatalf("stats %+v", st)
	}
}
