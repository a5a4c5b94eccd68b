package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// TestReleaseMemoryAfterUpdate: with Options.ReleaseMemoryAfterUpdate the
// proxy releases memory once after updates settle (2 s after the last one),
// counts it in server.memory_releases, and does not release again until the
// next update.
func TestReleaseMemoryAfterUpdate(t *testing.T) {
	res := func(route string) *xdstest.Resources {
		return &xdstest.Resources{
			Listeners: []types.Resource{xdstest.HTTPListener(9080)},
			Routes:    []types.Resource{xdstest.RouteConfig(9080, "reviews", xdstest.ToCluster("/", route))},
			Clusters:  []types.Resource{xdstest.EDSCluster(route)},
			Endpoints: []types.Resource{xdstest.Endpoints(route, "reviews-v1", "127.0.0.1:1")},
		}
	}
	cp := xdstest.Start(t)
	cp.Set(t, nodeID, res("outbound|9080||reviews.default.svc.cluster.local"))
	p := startProxy(t, cp, func(o *proxy.Options) { o.ReleaseMemoryAfterUpdate = true })
	if _, body := httpGet(t, "http://"+p.Addresses().Admin+"/stats"); !strings.Contains(body, "server.memory_releases: ") {
		t.Error("/stats does not list server.memory_releases")
	}
	releases := p.Stats().Counter("server.memory_releases")
	start := time.Now()
	eventually(t, "the release after the first configuration", func() bool { return releases.Load() == 1 })
	if d := time.Since(start); d < time.Second {
		t.Errorf("released %v after the configuration was applied, want ~2 s after it settled", d)
	}

	time.Sleep(2500 * time.Millisecond)
	if n := releases.Load(); n != 1 {
		t.Fatalf("%d releases without an update, want 1", n)
	}

	cp.Set(t, nodeID, res("outbound|9080|v2|reviews.default.svc.cluster.local"))
	eventually(t, "the release after the update", func() bool { return releases.Load() == 2 })
}
