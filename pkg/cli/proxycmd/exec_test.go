package proxycmd

import (
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestSameBuild(t *testing.T) {
	t.Parallel()
	base := func(mod ...func(*debug.BuildInfo)) *debug.BuildInfo {
		bi := &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/weftmesh/weft", Version: "(devel)"},
			Deps: []*debug.Module{
				{Path: "google.golang.org/grpc", Version: "v1.85.0", Sum: "h1:a"},
				{Path: "k8s.io/client-go", Version: "v0.34.0", Sum: "h1:b"},
			},
			Settings: []debug.BuildSetting{
				{Key: "-ldflags", Value: "-X x.Version=1"},
				{Key: "CGO_ENABLED", Value: "1"},
				{Key: "vcs.revision", Value: "abc"},
				{Key: "vcs.modified", Value: "false"},
			},
		}
		for _, m := range mod {
			m(bi)
		}
		return bi
	}
	setting := func(k, v string) func(*debug.BuildInfo) {
		return func(bi *debug.BuildInfo) {
			for i, s := range bi.Settings {
				if s.Key == k {
					bi.Settings[i].Value = v
					return
				}
			}
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: k, Value: v})
		}
	}
	now := time.Now()
	older, newer := now.Add(-time.Minute), now.Add(time.Minute)
	for _, tc := range []struct {
		name        string
		other       *debug.BuildInfo
		otherTime   time.Time
		self        *debug.BuildInfo
		wantWhyPart string // "" means the same build
	}{
		{name: "same, newer", other: base(), otherTime: newer},
		{name: "same revision, older file", other: base(), otherTime: older},
		{name: "proxy-only build: other tags, no cgo, fewer modules", otherTime: newer, other: base(setting("-tags", "weftproxy"), setting("CGO_ENABLED", "0"),
			func(bi *debug.BuildInfo) { bi.Deps = bi.Deps[:1] })},
		{name: "cgo flags", otherTime: newer, self: base(setting("CGO_CFLAGS", "-O2")), other: base()},
		{name: "other Go", other: base(func(bi *debug.BuildInfo) { bi.GoVersion = "go1.26.7" }), otherTime: newer, wantWhyPart: "go1.26.7"},
		{name: "other module version", other: base(func(bi *debug.BuildInfo) {
			bi.Deps = []*debug.Module{{Path: "google.golang.org/grpc", Version: "v1.84.0", Sum: "h1:z"}}
		}), otherTime: newer, wantWhyPart: "google.golang.org/grpc"},
		{name: "replaced module", other: base(func(bi *debug.BuildInfo) {
			bi.Deps = []*debug.Module{{Path: "google.golang.org/grpc", Version: "v1.85.0", Sum: "h1:a", Replace: &debug.Module{Path: "../grpc"}}}
		}), otherTime: newer, wantWhyPart: "google.golang.org/grpc"},
		{name: "other ldflags", other: base(setting("-ldflags", "-X x.Version=2")), otherTime: newer, wantWhyPart: "-ldflags"},
		{name: "other revision", other: base(setting("vcs.revision", "def")), otherTime: newer, wantWhyPart: "vcs.revision"},
		{name: "setting missing", other: base(func(bi *debug.BuildInfo) { bi.Settings = bi.Settings[1:] }), otherTime: newer, wantWhyPart: "-ldflags"},
		{name: "modified tree, newer", self: base(setting("vcs.modified", "true")), other: base(setting("vcs.modified", "true")), otherTime: newer},
		{name: "modified tree, older", self: base(setting("vcs.modified", "true")), other: base(setting("vcs.modified", "true")), otherTime: older, wantWhyPart: "older"},
		{name: "no version control, older", self: base(func(bi *debug.BuildInfo) { bi.Settings = bi.Settings[:2] }),
			other: base(func(bi *debug.BuildInfo) { bi.Settings = bi.Settings[:2] }), otherTime: older, wantWhyPart: "older"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			self := tc.self
			if self == nil {
				self = base()
			}
			ok, why := sameBuild(self, tc.other, now, tc.otherTime)
			if tc.wantWhyPart == "" {
				if !ok {
					t.Errorf("not the same build: %s", why)
				}
				return
			}
			if ok || !strings.Contains(why, tc.wantWhyPart) {
				t.Errorf("sameBuild = %v, %q; want false with %q", ok, why, tc.wantWhyPart)
			}
		})
	}
}

// TestProxyOnlyBuildDeps: the proxy-only build (cmd/weft -tags weftproxy)
// links neither Kubernetes nor the control plane's or CLI's packages, the
// package state it exists to leave out.
func TestProxyOnlyBuildDeps(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not in PATH")
	}
	cmd := exec.Command("go", "list", "-deps", "-tags", "weftproxy", "../../../cmd/weft")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 50 || !strings.Contains(string(out), "github.com/weftmesh/weft/pkg/proxy\n") {
		t.Fatalf("go list returned %d packages without pkg/proxy:\n%s", len(pkgs), out)
	}
	const weft = "github.com/weftmesh/weft/"
	for _, p := range pkgs {
		bad := strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") || strings.HasPrefix(p, "istio.io/client-go") ||
			p == weft+"pkg/cli" || p == weft+"pkg/ca"
		for _, tree := range []string{"pkg/xds/", "pkg/config", "pkg/registry", "pkg/kube", "pkg/dashboard", "pkg/demo", "pkg/cni"} {
			bad = bad || strings.HasPrefix(p, weft+tree)
		}
		if bad {
			t.Errorf("the proxy-only build links %s", p)
		}
	}
}

// TestExecProxyBinaryStaysInProcess covers the cases that must not exec:
// this test binary was not started as `weft proxy`.
func TestExecProxyBinaryStaysInProcess(t *testing.T) {
	var warn strings.Builder
	for _, flag := range []string{"", ProxyBinaryAuto} {
		if err := execProxyBinary(flag, &warn); err != nil {
			t.Errorf("--proxy-binary %q: %v", flag, err)
		}
	}
	if err := execProxyBinary("/nonexistent/weft-proxy", &warn); err == nil || !strings.Contains(err.Error(), "not started as") {
		t.Errorf("--proxy-binary PATH outside `weft proxy`: err = %v", err)
	}
	t.Setenv(execedEnv, "1")
	if err := execProxyBinary("/nonexistent/weft-proxy", &warn); err != nil {
		t.Errorf("already exec'd: %v", err)
	}
	if v, ok := os.LookupEnv(execedEnv); ok {
		t.Errorf("%s=%q left for the application", execedEnv, v)
	}
	if warn.Len() > 0 {
		t.Errorf("warnings: %s", warn.String())
	}
}
