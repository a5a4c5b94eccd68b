package proxy_test

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// BenchmarkMeshRequest measures one HTTP/1.1 keep-alive request through
// two sidecars, client outbound → server inbound → backend: the hop on
// which both reporters record telemetry and the metadata exchange runs
// (client, both proxies and backend share the machine's cores).
func BenchmarkMeshRequest(b *testing.B) {
	cp := xdstest.Start(b)
	be := startBackend(b, "v1", nil)
	_, ps, _ := net.SplitHostPort(be.addr)
	port, _ := strconv.Atoi(ps)
	cp.Set(b, xdstest.NodeID("reviews-v1", ns), &xdstest.Resources{Listeners: []types.Resource{}, Clusters: []types.Resource{}})
	server := startProxy(b, cp, func(o *proxy.Options) {
		o.Workload = "reviews-v1"
		o.Labels = map[string]string{"app": "reviews", "version": "v1"}
		o.AppPort = port
		o.Services = []string{"reviews:9080/http"}
	})
	cp.Set(b, nodeID, oneRoute(xdstest.HTTPListener(9080), server.Addresses().Inbound))
	benchGets(b, client(startProxy(b, cp)))
	b.StopTimer()
	resp, err := http.Get("http://" + server.Addresses().Metrics + "/stats/prometheus")
	if err != nil {
		b.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `istio_requests_total{reporter="destination"`) {
		b.Fatalf("the requests did not pass the server sidecar:\n%s", m)
	}
}
