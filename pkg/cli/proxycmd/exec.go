package proxycmd

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// execedEnv marks a process started by execProxyBinary, so that a
// --proxy-binary pointing at a full weft binary cannot loop.
const execedEnv = "WEFT_PROXY_EXECED"

// execProxyBinary replaces this process with the proxy-only build when
// flag (--proxy-binary) names one, keeping PID, arguments and environment:
// "" never does, ProxyBinaryAuto does when ProxyBinaryName next to the
// executable is from the same build (otherwise it says why on warn and
// returns nil: the proxy runs in this process), a path always does. It
// returns only when the proxy runs in this process, or with an error.
func execProxyBinary(flag string, warn io.Writer) error {
	if os.Getenv(execedEnv) != "" {
		os.Unsetenv(execedEnv) // not inherited by the application
		return nil
	}
	// Only a process started as `weft proxy ...` can be replaced by
	// `weft-proxy proxy ...` with the same arguments.
	startedAsProxy := len(os.Args) > 1 && os.Args[1] == "proxy"
	if flag == "" || (flag == ProxyBinaryAuto && !startedAsProxy) {
		return nil
	}
	if !startedAsProxy {
		return errors.New("the process was not started as `weft proxy ...`")
	}
	bin := flag
	if flag == ProxyBinaryAuto {
		self, err := executable()
		if err != nil {
			fmt.Fprintf(warn, "weft proxy: running in this process: %v\n", err)
			return nil
		}
		bin = filepath.Join(filepath.Dir(self), ProxyBinaryName)
		switch ok, why, err := sameBuildAs(self, bin); {
		case errors.Is(err, fs.ErrNotExist):
			return nil
		case err != nil:
			fmt.Fprintf(warn, "weft proxy: running in this process: %v\n", err)
			return nil
		case !ok:
			fmt.Fprintf(warn, "weft proxy: running in this process, not %s: %s\n", bin, why)
			return nil
		}
	} else if _, err := os.Stat(bin); err != nil {
		return err
	}
	env := append(os.Environ(), execedEnv+"=1")
	err := syscall.Exec(bin, append([]string{bin}, os.Args[1:]...), env)
	return fmt.Errorf("exec %s: %w", bin, err)
}

// executable is the running binary's path with symlinks resolved, so the
// sibling is looked up where the binary really is.
func executable() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the weft executable: %w", err)
	}
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	return self, nil
}

// sameBuildAs reports whether the binary at other was built from the same
// source and settings as the running one at self (see sameBuild).
func sameBuildAs(self, other string) (bool, string, error) {
	st, err := os.Stat(other)
	if err != nil {
		return false, "", err
	}
	oi, err := buildinfo.ReadFile(other)
	if err != nil {
		return false, "", fmt.Errorf("read build info of %s: %w", other, err)
	}
	si, ok := debug.ReadBuildInfo()
	if !ok {
		return false, "", errors.New("no build info in the weft executable")
	}
	sst, err := os.Stat(self)
	if err != nil {
		return false, "", err
	}
	ok, why := sameBuild(si, oi, sst.ModTime(), st.ModTime())
	return ok, why, nil
}

// sameBuild reports whether other (modified at otherTime) was built from
// the same source as self (modified at selfTime): same Go version, main
// module, dependencies and build settings (apart from ignoredSetting's). Build info cannot tell two builds of a modified
// work tree (or one without version control) apart, so then other must
// also be at least as new as self: `make build` writes weft first and
// weft-proxy second, and a weft rebuilt alone is newer than a stale
// weft-proxy. why says what differs.
func sameBuild(self, other *debug.BuildInfo, selfTime, otherTime time.Time) (ok bool, why string) {
	switch {
	case self.GoVersion != other.GoVersion:
		return false, fmt.Sprintf("built with %s, weft with %s", other.GoVersion, self.GoVersion)
	case self.Main.Path != other.Main.Path || self.Main.Version != other.Main.Version || self.Main.Sum != other.Main.Sum:
		return false, fmt.Sprintf("main module %s@%s, weft's %s@%s", other.Main.Path, other.Main.Version, self.Main.Path, self.Main.Version)
	}
	deps := map[string]string{}
	for _, d := range self.Deps {
		deps[d.Path] = moduleString(d)
	}
	for _, d := range other.Deps {
		// The proxy-only build links a subset of weft's modules.
		if v, ok := deps[d.Path]; !ok || v != moduleString(d) {
			return false, fmt.Sprintf("module %s is %s, in weft %q", d.Path, moduleString(d), v)
		}
	}
	settings := map[string]string{}
	for _, s := range self.Settings {
		if !ignoredSetting(s.Key) {
			settings[s.Key] = s.Value
		}
	}
	seen := map[string]bool{}
	for _, s := range other.Settings {
		if ignoredSetting(s.Key) {
			continue
		}
		seen[s.Key] = true
		if settings[s.Key] != s.Value {
			return false, fmt.Sprintf("build setting %s=%q, weft's %q", s.Key, s.Value, settings[s.Key])
		}
	}
	for k, v := range settings {
		if !seen[k] {
			return false, fmt.Sprintf("build setting %s=%q missing", k, v)
		}
	}
	if (settings["vcs.revision"] == "" || settings["vcs.modified"] == "true") && otherTime.Before(selfTime) {
		return false, "older than the weft executable (a work tree with changes: rebuild both with make build)"
	}
	return true, ""
}

// ignoredSetting: build settings in which the proxy-only build may differ
// from weft: -tags (it adds weftproxy) and cgo (make builds it with
// CGO_ENABLED=0: the sidecar needs no C library, and not mapping one saves
// its pages).
func ignoredSetting(key string) bool {
	return key == "-tags" || key == "CGO_ENABLED" || strings.HasPrefix(key, "CGO_")
}

func moduleString(m *debug.Module) string {
	s := m.Version + " " + m.Sum
	if m.Replace != nil {
		s += " => " + moduleString(m.Replace)
	}
	return s
}
