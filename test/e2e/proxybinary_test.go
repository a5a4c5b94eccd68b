package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestProxyRunsProxyOnlyBuild: `weft proxy` replaces itself (same PID)
// with weft-proxy, the proxy-only build next to it, which serves inbound
// traffic; with --proxy-binary "" or without weft-proxy next to it, weft
// proxy runs in its own process.
func TestProxyRunsProxyOnlyBuild(t *testing.T) {
	harness.SkipShort(t)
	bin := weft.Binary(t)
	if v := harness.Run(t, filepath.Join(filepath.Dir(bin), "weft-proxy"), nil, "version"); v.ExitCode != 0 || !strings.Contains(v.Stdout, "proxy-only") {
		t.Fatalf("weft-proxy version: exit %d, %q %q", v.ExitCode, v.Stdout, v.Stderr)
	}
	cp := harness.StartControlPlane(t, bin, "--data-dir", t.TempDir())
	appPort := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "app") }))

	// weft alone in a directory (a hard link, or a copy across file systems).
	alone := filepath.Join(t.TempDir(), "weft")
	if err := os.Link(bin, alone); err != nil {
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(alone, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range []struct {
		name, bin string
		extra     []string
		wantExe   string
	}{
		{"weft-proxy next to weft", bin, nil, "weft-proxy"},
		{"--proxy-binary empty", bin, []string{"--proxy-binary", ""}, "weft"},
		{"no weft-proxy next to weft", alone, nil, "weft"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs, proc := startAppSidecar(t, tc.bin, cp.XDSAddress, "pb"+strconv.Itoa(i), appPort, tc.extra...)
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", proc.Cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(exe) != tc.wantExe {
				t.Errorf("pid %d runs %s, want %s", proc.Cmd.Process.Pid, exe, tc.wantExe)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				code, err := plainGet(addrs.Inbound)
				if code == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("inbound %s: %d %v", addrs.Inbound, code, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := proc.Stop(10 * time.Second); err != nil {
				t.Errorf("stop: %v\n%s", err, proc.Stderr())
			}
		})
	}
}
