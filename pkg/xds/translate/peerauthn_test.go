package translate

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

func pa(ns, name, body string) string {
	return "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: " + name + ", namespace: " + ns + "}\nspec:\n" + body + "\n---\n"
}

func TestPeerAuthnModes(t *testing.T) {
	proxy := &model.Proxy{Namespace: "default", Workload: "reviews-v1", Labels: map[string]string{"app": "reviews"}}
	cases := []struct {
		name  string
		yaml  string
		def   MTLSMode
		ports map[uint32]MTLSMode
	}{
		{"none: permissive", "", MTLSPermissive, nil},
		{"mesh strict weft-system", pa("weft-system", "default-mtls", "  mtls: {mode: STRICT}"), MTLSStrict, nil},
		{"mesh strict istio-system", pa("istio-system", "default", "  mtls: {mode: STRICT}"), MTLSStrict, nil},
		{"strict in another namespace does not apply", pa("other", "x", "  mtls: {mode: STRICT}"), MTLSPermissive, nil},
		{"namespace overrides mesh", pa("weft-system", "m", "  mtls: {mode: STRICT}") + pa("default", "n", "  mtls: {mode: DISABLE}"), MTLSDisable, nil},
		{"namespace UNSET inherits mesh", pa("weft-system", "m", "  mtls: {mode: STRICT}") + pa("default", "n", "  mtls: {mode: UNSET}"), MTLSStrict, nil},
		{"workload overrides namespace", pa("default", "n", "  mtls: {mode: STRICT}") + pa("default", "w", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: PERMISSIVE}"), MTLSPermissive, nil},
		{"non-matching selector ignored", pa("default", "n", "  mtls: {mode: STRICT}") + pa("default", "w", "  selector: {matchLabels: {app: ratings}}\n  mtls: {mode: DISABLE}"), MTLSStrict, nil},
		{"port level", pa("default", "w", "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n  portLevelMtls: {9080: {mode: DISABLE}, 9090: {mode: UNSET}}"),
			MTLSStrict, map[uint32]MTLSMode{9080: MTLSDisable}},
		{"port level without selector ignored", pa("default", "n", "  mtls: {mode: STRICT}\n  portLevelMtls: {9080: {mode: DISABLE}}"), MTLSStrict, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cfgs []*config.Resource
			if tc.yaml != "" {
				var err error
				if cfgs, err = config.Decode("pa.yaml", []byte(tc.yaml)); err != nil {
					t.Fatal(err)
				}
			}
			def, ports := PeerAuthnModes(cfgs, proxy, map[string]bool{"weft-system": true, "istio-system": true})
			if def != tc.def {
				t.Errorf("default mode = %v, want %v", def, tc.def)
			}
			if len(ports) != len(tc.ports) {
				t.Fatalf("ports = %v, want %v", ports, tc.ports)
			}
			for p, m := range tc.ports {
				if ports[p] != m {
					t.Errorf("port %d = %v, want %v", p, ports[p], m)
				}
			}
		})
	}
}

func TestApplyPeerAuthn(t *testing.T) {
	mk := func() *listenerv3.Listener {
		return &listenerv3.Listener{Name: VirtualInbound, FilterChains: []*listenerv3.FilterChain{
			{Name: "inbound|9080||", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080)}},
			{Name: "inbound|9090||", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9090)}},
		}}
	}
	type chain struct {
		port  uint32
		proto string
		tls   bool
	}
	cases := []struct {
		name  string
		def   MTLSMode
		ports map[uint32]MTLSMode
		want  []chain
	}{
		{"strict", MTLSStrict, nil, []chain{{9080, "tls", true}, {9090, "tls", true}}},
		{"permissive", MTLSPermissive, nil, []chain{{9080, "tls", true}, {9080, "raw_buffer", false}, {9090, "tls", true}, {9090, "raw_buffer", false}}},
		{"disable", MTLSDisable, nil, []chain{{9080, "", false}, {9090, "", false}}},
		{"strict with port disable", MTLSStrict, map[uint32]MTLSMode{9090: MTLSDisable}, []chain{{9080, "tls", true}, {9090, "", false}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := mk()
			ApplyPeerAuthn(l, tc.def, tc.ports)
			if len(l.FilterChains) != len(tc.want) {
				t.Fatalf("%d chains, want %d", len(l.FilterChains), len(tc.want))
			}
			anyTLS := false
			for i, fc := range l.FilterChains {
				w := tc.want[i]
				m := fc.GetFilterChainMatch()
				if m.GetDestinationPort().GetValue() != w.port || m.GetTransportProtocol() != w.proto || (fc.GetTransportSocket() != nil) != w.tls {
					t.Errorf("chain %d = port %d proto %q tls %v, want %+v", i, m.GetDestinationPort().GetValue(), m.GetTransportProtocol(), fc.GetTransportSocket() != nil, w)
				}
				if ts := fc.GetTransportSocket(); ts != nil {
					anyTLS = true
					d := &tlsv3.DownstreamTlsContext{}
					if err := ts.GetTypedConfig().UnmarshalTo(d); err != nil {
						t.Fatal(err)
					}
					if !d.GetRequireClientCertificate().GetValue() || d.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()[0].GetName() != WorkloadCertSecret ||
						d.GetCommonTlsContext().GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName() != RootCASecret {
						t.Errorf("chain %d: tls context %v", i, d)
					}
				}
			}
			if got := len(l.ListenerFilters) == 1 && l.ListenerFilters[0].GetName() == TLSInspectorFilter; got != anyTLS {
				t.Errorf("tls_inspector present = %v, want %v", got, anyTLS)
			}
			if err := l.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestBuildMTLS checks the wiring in Build: STRICT applies only with
// Input.MTLS, and auto mTLS only towards endpoints that advertise tlsMode.
func TestBuildMTLS(t *testing.T) {
	se := func(name, labels string) string {
		return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name + ", namespace: default}\nspec:\n" +
			"  hosts: [" + name + ".default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n" +
			"  endpoints: [{address: 10.1.1.1, labels: {" + labels + "}}]\n---\n"
	}
	cfgs, err := config.Decode("pa.yaml", []byte(pa("weft-system", "default-mtls", "  mtls: {mode: STRICT}")+
		se("meshed", "app: meshed, security.istio.io/tlsMode: istio")+se("plain", "app: plain")))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(nil)
	reg.SetConfigs(cfgs)
	p := &model.Proxy{ID: "c.default", Namespace: "default", Workload: "c", AppPorts: []uint32{8080}, Labels: map[string]string{"app": "c"}}
	for _, mtls := range []bool{false, true} {
		out, err := Build(&Input{Configs: cfgs, Registry: reg.Snapshot(), MTLS: mtls}, p)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range out.Clusters {
			c := r.(*clusterv3.Cluster)
			got[c.GetName()] = c.GetTransportSocket() != nil
		}
		if got["outbound|80||meshed.default.svc.cluster.local"] != mtls || got["outbound|80||plain.default.svc.cluster.local"] {
			t.Errorf("MTLS=%v: cluster TLS %v", mtls, got)
		}
		strict := false
		for _, r := range out.Listeners {
			if l := r.(*listenerv3.Listener); l.GetName() == VirtualInbound {
				for _, fc := range l.GetFilterChains() {
					strict = strict || fc.GetFilterChainMatch().GetTransportProtocol() == TransportTLS
				}
			}
		}
		if strict != mtls {
			t.Errorf("MTLS=%v: inbound tls chain present = %v", mtls, strict)
		}
	}
}
