package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
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

// xdsBuildWeft builds the weft binary once per test binary.
var xdsBuild struct {
	once sync.Once
	path string
	err  error
}

func xdsWeftBinary(t *testing.T) string {
	t.Helper()
	xdsBuild.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "weft-e2e-xds-")
		if err != nil {
			xdsBuild.err = err
			return
		}
		xdsBuild.path = filepath.Join(dir, "weft")
		cmd := exec.Command("go", "build", "-o", xdsBuild.path, "./cmd/weft")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			xdsBuild.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if xdsBuild.err != nil {
		t.Fatal(xdsBuild.err)
	}
	return xdsBuild.path
}

// startControlPlane runs `weft control-plane` on a config dir and returns
// its xDS address, parsed from its log ("xDS server listening" address=...).
func startControlPlane(t *testing.T, configDir string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, xdsWeftBinary(t), "control-plane", "--config-dir", configDir,
		"--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0")
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); pw.Close(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addrRE := regexp.MustCompile(`xDS server listening.*?address=([0-9.]+:[0-9]+)`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if testing.Verbose() || strings.Contains(line, "level=ERROR") || strings.Contains(line, "NACK") {
				t.Log("control-plane: " + line)
			}
			if m := addrRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case a := <-found:
		return a
	case <-done:
		t.Fatal("control plane exited before serving xDS")
	case <-time.After(30 * time.Second):
		t.Fatal("control plane did not print its xDS address in 30s")
	}
	return ""
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
	if testing.Short() {
		t.Skip("end-to-end test: builds weft and runs the control plane")
	}
	p1, p2 := startGreeter(t, "v1"), startGreeter(t, "v2")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "greeter.yaml")
	writeAtomic(t, cfg, greeterConfig(p1, p2, 80, 20))
	xdsAddr := startControlPlane(t, dir)

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
}
