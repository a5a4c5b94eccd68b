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

// TestGatewayGoldenCompat compiles the translator's gateway goldens: every
// listener compiles, and its chains keep their RDS names / clusters.
func TestGatewayGoldenCompat(t *testing.T) {
	files, _ := filepath.Glob("../xds/translate/testdata/gateway_*.golden.json")
	if len(files) == 0 {
		t.Skip("no gateway goldens")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".golden.json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
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
			cfgs, warns, err := compileGateway(ls)
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
