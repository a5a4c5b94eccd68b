package controlplane_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/controlplane"
)

// start runs the control plane and waits for its ready file.
func start(t *testing.T, opts controlplane.Options) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	opts.AdminAddress = "127.0.0.1:0"
	opts.ReadyFile = filepath.Join(t.TempDir(), "ready")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- controlplane.Run(ctx, opts) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(opts.ReadyFile); err == nil {
			return strings.TrimSpace(string(b)), cancel, done
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("Run returned before ready: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	t.Fatal("control plane not ready within 10s")
	return "", nil, nil
}

func stop(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
}

const seYAML = `apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: ext-service
spec:
  hosts: [extsvc.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
`

func TestRunBoltExtensionsAndRestart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	ran := make(chan struct{})
	ext := controlplane.ExtensionFunc(func(_ context.Context, env *controlplane.Env) error {
		if env.Store == nil || env.Options.XDSAddress != "127.0.0.1:15010" {
			return errors.New("extension env not filled in")
		}
		env.Admin.HandleFunc("GET /api/v1/hello", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hi") })
		env.Go("waiter", func(ctx context.Context) error {
			close(ran)
			<-ctx.Done()
			return nil
		})
		return nil
	})
	url, cancel, done := start(t, controlplane.Options{DataDir: dataDir, Extensions: []controlplane.Extension{ext}})
	<-ran
	resp, err := http.Get(url + "/api/v1/hello")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hi" {
		t.Fatalf("extension route answered %q", b)
	}
	c := &admin.Client{BaseURL: url}
	if _, err := c.ApplyRaw(context.Background(), []byte(seYAML), "application/yaml", false); err != nil {
		t.Fatal(err)
	}
	stop(t, cancel, done)
	if _, err := os.Stat(filepath.Join(dataDir, "config.db")); err != nil {
		t.Fatalf("no database in data dir: %v", err)
	}

	// Same data dir: the resource is still there.
	url, cancel, done = start(t, controlplane.Options{DataDir: dataDir})
	defer stop(t, cancel, done)
	lr, err := (&admin.Client{BaseURL: url}).List(context.Background(), "ServiceEntry", "")
	if err != nil || len(lr.Items) != 1 || lr.Items[0].Meta.Name != "ext-service" {
		t.Fatalf("after restart List = %+v, %v", lr, err)
	}
}

func TestRunConfigDirIsReadOnly(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(seYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("apiVersion: networking.istio.io/v1\nkind: Gatewayy\nmetadata: {name: x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, cancel, done := start(t, controlplane.Options{ConfigDir: dir})
	defer stop(t, cancel, done)
	c := &admin.Client{BaseURL: url}
	lr, err := c.List(context.Background(), "", "")
	if err != nil || len(lr.Items) != 1 {
		t.Fatalf("List = %+v, %v", lr, err)
	}
	if len(lr.Warnings) == 0 || !strings.Contains(strings.Join(lr.Warnings, "\n"), "bad.yaml") {
		t.Fatalf("List warnings %q do not report bad.yaml", lr.Warnings)
	}
	if _, err := c.ApplyRaw(context.Background(), []byte(seYAML), "application/yaml", false); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Apply to --config-dir control plane: err = %v, want read-only", err)
	}
}

func TestRunFailures(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		opts controlplane.Options
		want string
	}{
		{"extension setup fails", controlplane.Options{
			AdminAddress: "127.0.0.1:0",
			Extensions: []controlplane.Extension{
				controlplane.ExtensionFunc(func(_ context.Context, env *controlplane.Env) error {
					env.Go("bg", func(ctx context.Context) error { <-ctx.Done(); return nil })
					return nil
				}),
				controlplane.ExtensionFunc(func(context.Context, *controlplane.Env) error { return boom }),
			},
		}, "boom"},
		{"extension goroutine fails", controlplane.Options{
			AdminAddress: "127.0.0.1:0",
			Extensions: []controlplane.Extension{controlplane.ExtensionFunc(func(_ context.Context, env *controlplane.Env) error {
				env.Go("xds", func(context.Context) error { return boom })
				return nil
			})},
		}, "xds: boom"},
		{"bad admin address", controlplane.Options{AdminAddress: "256.0.0.1:99999"}, "listen"},
		{"missing config dir", controlplane.Options{AdminAddress: "127.0.0.1:0", ConfigDir: "/nonexistent/weft"}, "file store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.DataDir = t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := controlplane.Run(ctx, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want error containing %q", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Fatal("Run only returned at the test deadline")
			}
		})
	}
}
