package translate

import (
	"testing"

	"github.com/weftmesh/weft/pkg/xds/model"
)

// TestGatewayAPISelection: a Gateway API Gateway's listeners go to the
// endpoints of its spec.addresses Service and to proxies labelled with its
// name in its namespace, and to no other gateway proxy.
func TestGatewayAPISelection(t *testing.T) {
	in, _ := loadCase(t, "testdata/gwapi_gateway_address.yaml")
	for _, tc := range []struct {
		id        string
		labels    map[string]string
		listeners int
	}{
		{"router~10.0.0.100~ingress-1.infra~infra.svc.cluster.local", nil, 1},                                                                  // endpoint of the address Service
		{"router~10.0.0.101~other-1.infra~infra.svc.cluster.local", nil, 0},                                                                    // another gateway
		{"router~10.0.0.102~public-1.infra~infra.svc.cluster.local", map[string]string{"gateway.networking.k8s.io/gateway-name": "public"}, 1}, // labelled, same namespace
		{"router~10.0.0.103~public-1.elsewhere~elsewhere.svc.cluster.local", map[string]string{"gateway.networking.k8s.io/gateway-name": "public"}, 0},
	} {
		p, err := model.ParseNodeID(tc.id)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.labels {
			p.Labels[k] = v
		}
		out, err := Build(in, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Listeners) != tc.listeners {
			t.Errorf("%s %v: %d listeners, want %d", tc.id, tc.labels, len(out.Listeners), tc.listeners)
		}
	}
}
