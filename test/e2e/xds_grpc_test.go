package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// greeter is a gRPC TestService that answers with its name in Hostname.
type greeter struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (g *greeter) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Hostname: g.name}, nil
}

func startGreeter(t *testing.T, name string) int {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &greeter{name: name})
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().(*net.TCPAddr).Port
}

// startXDSControlPlane runs `weft control-plane` on a config dir with
// port-0 listeners and returns it with its xDS address, read from its log
// ("xDS server listening" address=HOST:PORT), printed before it is ready.
func startXDSControlPlane(t *testing.T, configDir string) (*harness.ControlPlane, string) {
	t.Helper()
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--debounce", "50ms")
	m := regexp.MustCompile(`xDS server listening.*?address=([0-9.]+:[0-9]+)`).FindStringSubmatch(cp.Stderr())
	if m == nil {
		t.Fatalf("control plane log names no xDS address:\n%s", cp.Stderr())
	}
	return cp, m[1]
}

// monitoringURL is the control plane's /metrics URL, read from its log.
func monitoringURL(t *testing.T, cp *harness.ControlPlane) string {
	t.Helper()
	m := regexp.MustCompile(`monitoring listening.*?url=(\S+)`).FindStringSubmatch(cp.Stderr())
	if m == nil {
		t.Fatalf("control plane log names no monitoring URL:\n%s", cp.Stderr())
	}
	return m[1]
}

const greeterHost = "greeter.default.svc.cluster.local"

func greeterConfig(p1, p2, w1, w2 int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: greeter
  namespace: default
spec:
  hosts: [%[1]s]
  location: MESH_INTERNAL
  ports:
  - number: 50051
    name: grpc
    protocol: GRPC
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      grpc: %[2]d
    labels:
      version: v1
  - address: 127.0.0.1
    ports:
      grpc: %[3]d
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: greeter
  namespace: default
spec:
  host: %[1]s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: greeter
  namespace: default
spec:
  hosts: [%[1]s]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: %[1]s
        subset: v2
  - route:
    - destination:
        host: %[1]s
        subset: v1
      weight: %[4]d
    - destination:
        host: %[1]s
        subset: v2
      weight: %[5]d
`, greeterHost, p1, p2, w1, w2)
}

// writeAtomic replaces a file in one rename, as editors and kubectl-like
// tools do, so the watcher never sees half a file.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestGRPCProxylessTrafficShifting(t *testing.T) {
	harness.SkipShort(t)
	p1, p2 := startGreeter(t, "v1"), startGreeter(t, "v2")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "greeter.yaml")
	writeAtomic(t, cfg, greeterConfig(p1, p2, 80, 20))
	cp, xdsAddr := startXDSControlPlane(t, dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", cp.Stderr())
		}
	})

	bootstrap, err := json.Marshal(map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri":      xdsAddr,
			"channel_creds":   []any{map[string]any{"type": "insecure"}},
			"server_features": []string{"xds_v3"},
		}},
		"node": map[string]any{"id": "sidecar~127.0.0.1~client.default~default.svc.cluster.local"},
	})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+greeterHost+":50051", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	call := func(ctx context.Context, user string) (string, error) {
		if user != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "end-user", user)
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return r.GetHostname(), err
	}
	// The first RPC waits for LDS/RDS/CDS/EDS.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("first RPC through xDS: %v", err)
	}

	t.Run("weighted 80/20", func(t *testing.T) {
		counts := map[string]int{}
		for range 1000 {
			h, err := call(context.Background(), "")
			if err != nil {
				t.Fatalf("RPC: %v", err)
			}
			counts[h]++
		}
		t.Logf("1000 RPCs: %v", counts)
		if counts["v1"] < 730 || counts["v1"] > 870 || counts["v2"] < 130 || counts["v2"] > 270 {
			t.Errorf("split = %v, want v1 800±70 and v2 200±70", counts)
		}
	})

	t.Run("header match goes to v2", func(t *testing.T) {
		for i := range 100 {
			h, err := call(context.Background(), "jason")
			if err != nil {
				t.Fatalf("RPC: %v", err)
			}
			if h != "v2" {
				t.Fatalf("RPC %d with end-user: jason reached %s, want v2", i, h)
			}
		}
	})

	t.Run("edit shifts traffic without failures", func(t *testing.T) {
		var failures, calls atomic.Int64
		var lastV1 atomic.Int64 // unix nanos of the last RPC that reached v1
		var firstErr atomic.Value
		loopCtx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for loopCtx.Err() == nil {
					h, err := call(context.Background(), "")
					calls.Add(1)
					if err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					if h == "v1" {
						lastV1.Store(time.Now().UnixNano())
					}
				}
			}()
		}
		time.Sleep(300 * time.Millisecond)
		edited := time.Now()
		writeAtomic(t, cfg, greeterConfig(p1, p2, 0, 100))
		// Traffic has moved once no RPC reached v1 for 500ms.
		deadline := edited.Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if last := time.Unix(0, lastV1.Load()); time.Since(last) > 500*time.Millisecond {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		wg.Wait()
		moved := time.Unix(0, lastV1.Load()).Sub(edited)
		t.Logf("%d RPCs during the edit, %d failed; last v1 response %v after the edit", calls.Load(), failures.Load(), moved)
		if failures.Load() != 0 {
			t.Errorf("%d RPCs failed during the edit (first: %v)", failures.Load(), firstErr.Load())
		}
		if moved > 2*time.Second {
			t.Errorf("traffic moved %v after the edit, want within 2s", moved)
		}
		for range 50 {
			if h, err := call(context.Background(), ""); err != nil || h != "v2" {
				t.Fatalf("after the edit RPC reached %q (err %v), want v2", h, err)
			}
		}
	})

	t.Run("proxy-status shows the client synced", func(t *testing.T) {
		var out string
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			r := harness.Run(t, weft.Binary(t), nil, "proxy-status", "--server", cp.URL)
			out = r.Stdout
			if r.ExitCode == 0 && strings.Count(out, "SYNCED") >= 4 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		want := "sidecar~127.0.0.1~client.default~default.svc.cluster.local"
		if !strings.Contains(out, want) || strings.Count(out, "SYNCED") < 4 {
			t.Fatalf("proxy-status does not show %s SYNCED for CDS, LDS, EDS, RDS:\n%s", want, out)
		}
		r := harness.Run(t, weft.Binary(t), nil, "proxy-config", "listeners", want, "--server", cp.URL)
		if !strings.Contains(r.Stdout, greeterHost+":50051") || !strings.Contains(r.Stdout, "api_listener") {
			t.Errorf("proxy-config listeners:\n%s%s", r.Stdout, r.Stderr)
		}
	})

	t.Run("control-plane metrics", func(t *testing.T) {
		resp, err := http.Get(monitoringURL(t, cp))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`weft_xds_connected_proxies{type="proxyless"} 1`, `weft_config_resources{kind="VirtualService"} 1`,
			`weft_xds_pushes_total{type="RDS"}`, "weft_xds_push_duration_seconds_count"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}
