package proxy

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// goldenListeners reads the listeners of a translator golden file by name.
func goldenListeners(t *testing.T, path string) map[string]*listenerv3.Listener {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Listeners []json.RawMessage }
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	ls := map[string]*listenerv3.Listener{}
	for _, raw := range doc.Listeners {
		l := &listenerv3.Listener{}
		if err := protojson.Unmarshal(raw, l); err != nil {
			t.Fatal(err)
		}
		ls[l.GetName()] = l
	}
	return ls
}

// TestGatewayGoldenCompat compiles the translator's gateway goldens: every
// listener compiles, and its chains keep their RDS names / clusters.
func TestGatewayGoldenCompat(t *testing.T) {
	files, _ := filepath.Glob("../xds/translate/testdata/gateway_*.golden.json")
	if len(files) == 0 {
		t.Skip("no gateway goldens")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".golden.json"), func(t *testing.T) {
			ls := goldenListeners(t, f)
			cfgs, warns, err := compileGateway(ls, false)
			if err != nil {
				t.Fatalf("gateway would NACK: %v", err)
			}
			if len(cfgs) == 0 {
				t.Fatal("no gateway listeners compiled")
			}
			for name, c := range cfgs {
				for _, ch := range c.chains {
					if ch.route == "" && ch.tcpCluster == "" {
						t.Errorf("%s: chain %q has neither route nor cluster", name, ch.name)
					}
				}
			}
			if len(warns) > 0 {
				t.Logf("warnings: %q", warns)
			}
		})
	}
}

func TestGatewayChainMatch(t *testing.T) {
	plain := &gwChain{name: "plain", route: "http.80"}
	exact := &gwChain{name: "exact", serverNames: []string{"a.example.com"}, route: "https.a"}
	wild := &gwChain{name: "wild", serverNames: []string{"*.example.com"}, route: "https.wild"}
	anyTLS := &gwChain{name: "anytls", route: "https.any", tls: &tls.Config{}}
	cfg := &gwConfig{chains: []*gwChain{plain, wild, exact}}
	withAny := &gwConfig{chains: []*gwChain{plain, anyTLS, exact}}
	tests := []struct {
		cfg   *gwConfig
		tls   bool
		sni   string
		want  *gwChain
		label string
	}{
		{cfg, false, "", plain, "plaintext"},
		{cfg, true, "a.example.com", exact, "exact beats wildcard"},
		{cfg, true, "B.example.com", wild, "wildcard, case-insensitive"},
		{cfg, true, "example.com", nil, "wildcard needs a label"},
		{cfg, true, "other.org", nil, "unknown SNI"},
		{withAny, true, "other.org", anyTLS, "TLS chain without server names"},
		{withAny, true, "a.example.com", exact, "server name beats catch-all"},
		{&gwConfig{chains: []*gwChain{exact}}, false, "", nil, "no plaintext chain"},
	}
	for _, tc := range tests {
		if got := tc.cfg.match(tc.tls, tc.sni); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.label, got, tc.want)
		}
	}
}

// An ISTIO_MUTUAL gateway chain (SDS "default"/"ROOTCA", from the
// translator's golden) terminates the mesh's mTLS with the proxy's
// workload certificate; a proxy without one skips the chain with a
// warning instead of refusing the whole update.
func TestGatewayIstioMutualChain(t *testing.T) {
	ls := goldenListeners(t, "../xds/translate/testdata/gateway_istio_mutual.golden.json")
	cfgs, warns, err := compileGateway(ls, true)
	if err != nil || len(warns) != 0 {
		t.Fatalf("with a workload certificate: err %v, warnings %q", err, warns)
	}
	c := cfgs["0.0.0.0_15443"]
	if c == nil || len(c.chains) != 1 || !c.chains[0].meshTLS || c.chains[0].tls != nil || c.chains[0].route == "" {
		t.Fatalf("want one mesh-TLS chain with a route, got %+v", c)
	}
	if ch := c.match(true, "productpage.default.svc.cluster.local"); ch != c.chains[0] {
		t.Errorf("TLS connection did not match the mesh chain")
	}
	if ch := c.match(false, ""); ch != nil {
		t.Errorf("plaintext matched %q", ch.name)
	}
	cfgs, warns, err = compileGateway(ls, false)
	if err != nil || len(warns) != 1 || !strings.Contains(warns[0], "ISTIO_MUTUAL") {
		t.Fatalf("without a workload certificate: err %v, warnings %q", err, warns)
	}
	if c := cfgs["0.0.0.0_15443"]; c == nil || len(c.chains) != 0 {
		t.Errorf("chain kept without a certificate: %+v", c)
	}
}
