package translate

import (
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	meshv1 "istio.io/api/mesh/v1alpha1"

	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

// TestAutoMTLSSubjectAltNames: auto mTLS towards endpoints that all name
// their service account checks the server's SPIFFE ID against them.
func TestAutoMTLSSubjectAltNames(t *testing.T) {
	meshed := map[string]string{TLSModeLabel: "istio"}
	ep := func(host, addr, ns, sa string) *registry.Endpoint {
		return &registry.Endpoint{Hostname: host, Address: addr, Namespace: ns, ServiceAccount: sa, Labels: meshed}
	}
	svc := func(host string, eps ...*registry.Endpoint) registry.SourceService {
		return registry.SourceService{Service: &registry.Service{Hostname: host, Namespace: "shop", Resolution: registry.ResolutionStatic,
			Ports: []registry.Port{{Name: "http", Number: 80, Protocol: "HTTP"}}}, Endpoints: eps}
	}
	reg := registry.New(nil)
	reg.UpdateSource("test", []registry.SourceService{
		svc("a.shop.svc.cluster.local", ep("a.shop.svc.cluster.local", "10.0.0.1", "shop", "a"), ep("a.shop.svc.cluster.local", "10.0.0.2", "shop", "a-canary")),
		svc("b.shop.svc.cluster.local", ep("b.shop.svc.cluster.local", "10.0.0.3", "shop", "b"), ep("b.shop.svc.cluster.local", "10.0.0.4", "", "")),
	}, nil)
	p := &model.Proxy{ID: "c.shop", Namespace: "shop", Workload: "c", Labels: map[string]string{}}
	for _, tc := range []struct {
		td           string
		wantA, wantB string
	}{
		{"", "[spiffe://cluster.local/ns/shop/sa/a spiffe://cluster.local/ns/shop/sa/a-canary]", "[]"},
		{"example.org", "[spiffe://example.org/ns/shop/sa/a spiffe://example.org/ns/shop/sa/a-canary]", "[]"},
	} {
		out, err := Build(&Input{Registry: reg.Snapshot(), MTLS: true, Mesh: &meshv1.MeshConfig{TrustDomain: tc.td}}, p)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range out.Clusters {
			c := r.(*clusterv3.Cluster)
			ts := c.GetTransportSocket()
			if ts == nil {
				continue
			}
			u := &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(u); err != nil {
				t.Fatal(err)
			}
			var sans []string
			for _, m := range u.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames() {
				if m.GetSanType() != tlsv3.SubjectAltNameMatcher_URI {
					t.Errorf("%s: SAN type %v", c.GetName(), m.GetSanType())
				}
				sans = append(sans, m.GetMatcher().GetExact())
			}
			got[c.GetName()] = fmt.Sprint(sans)
		}
		if a := got["outbound|80||a.shop.svc.cluster.local"]; a != tc.wantA {
			t.Errorf("trust domain %q: a SANs %s, want %s", tc.td, a, tc.wantA)
		}
		// One endpoint of b has no service account: no SAN check (any
		// mesh identity is accepted), but still mutual TLS.
		if b, ok := got["outbound|80||b.shop.svc.cluster.local"]; !ok || b != tc.wantB {
			t.Errorf("trust domain %q: b SANs %q (present %v), want %s", tc.td, b, ok, tc.wantB)
		}
	}
}
