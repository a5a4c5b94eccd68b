package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

func TestProxyCommandRunsApp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and a proxy")
	}
	cp := xdstest.Start(t)
	cp.Set(t, xdstest.NodeID("app", "ns1"), &xdstest.Resources{Clusters: []types.Resource{xdstest.EDSCluster("c")},
		Endpoints: []types.Resource{xdstest.Endpoints("c", "w", "127.0.0.1:1")}})
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready.json")
	tests := []struct {
		name     string
		app      string
		wantCode int
	}{
		{"exit code passes through", "exit 3", 3},
		{"success", "test -s " + ready, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := NewRoot(strings.NewReader(""), &out, &errOut)
			root.SetArgs([]string{"proxy", "--control-plane", cp.Addr, "--namespace", "ns1", "--workload", "app", "--labels", "app=a,version=v1",
				"--outbound-address", "127.0.0.1:0", "--inbound-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0",
				"--metrics-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0", "--status-address", "127.0.0.1:0",
				"--ready-file", ready, "--service", "a:8080/http", "--", "sh", "-c", tc.app})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := root.ExecuteContext(ctx)
			code := 0
			if err != nil {
				code = ExitCode(err)
			}
			if code != tc.wantCode {
				t.Fatalf("exit code %d (%v), want %d\nstderr: %s", code, err, tc.wantCode, errOut.String())
			}
			b, err := os.ReadFile(ready)
			if err != nil {
				t.Fatal(err)
			}
			var addrs map[string]string
			if err := json.Unmarshal(b, &addrs); err != nil || strings.HasSuffix(addrs["inbound"], ":0") || addrs["status"] == "" {
				t.Fatalf("ready file %s: %v", b, err)
			}
		})
	}
}

func TestProxyCommandBadFlags(t *testing.T) {
	for name, args := range map[string][]string{
		"bad labels":  {"proxy", "--workload", "w", "--labels", "novalue"},
		"bad service": {"proxy", "--workload", "w", "--service", "nope"},
		"no workload": {"proxy"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := NewRoot(strings.NewReader(""), &out, &errOut)
			root.SetArgs(args)
			if err := root.Execute(); err == nil || ExitCode(err) != 2 {
				t.Fatalf("err %v code %d, want a usage error (2)", err, ExitCode(err))
			}
		})
	}
}
