// Package harness runs Weft's end-to-end tests: it builds the weft binary
// once per test binary, starts real processes on 127.0.0.1 with free ports,
// waits for them to be ready and stops them when the test ends.
//
// Typical use in a test package:
//
//	var weft = harness.NewBuilder("./cmd/weft")
//
//	func TestMain(m *testing.M) { os.Exit(weft.Main(m)) }
//
//	func TestX(t *testing.T) {
//		harness.SkipShort(t)
//		cp := harness.StartControlPlane(t, weft.Binary(t), "--data-dir", t.TempDir())
//		res := harness.Run(t, weft.Binary(t), []string{"WEFT_SERVER=" + cp.URL}, "get", "all")
//		...
//	}
package harness

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SkipShort skips the test under -short.
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
}

// Builder builds a Go main package of this module once, on first use
// (for ./cmd/weft also weft-proxy next to it, as `make build` does). It is
// safe for concurrent use.
type Builder struct {
	pkg  string
	once sync.Once
	dir  string
	bin  string
	err  error
}

// NewBuilder returns a builder for pkg, a package path relative to the
// module root (e.g. "./cmd/weft").
func NewBuilder(pkg string) *Builder { return &Builder{pkg: pkg} }

// Main runs the tests and removes the built binary; use it from TestMain:
// os.Exit(b.Main(m)).
func (b *Builder) Main(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	code := m.Run()
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	return code
}

// Binary returns the path of the built binary, building it on first call;
// a build failure fails t.
func (b *Builder) Binary(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			b.err = err
			return
		}
		b.dir, err = os.MkdirTemp("", "weft-e2e-bin-")
		if err != nil {
			b.err = fmt.Errorf("temp dir: %w", err)
			return
		}
		b.bin = filepath.Join(b.dir, filepath.Base(b.pkg))
		builds := [][]string{{"-o", b.bin}}
		if b.pkg == "./cmd/weft" {
			// As `make build`: weft-proxy, the proxy-only build that
			// `weft proxy` runs in its place, next to weft (built second,
			// so it is not older than weft), without cgo.
			builds = append(builds, []string{"-tags", "weftproxy", "-o", filepath.Join(b.dir, "weft-proxy")})
		}
		for i, args := range builds {
			cmd := exec.Command("go", append(append([]string{"build"}, args...), b.pkg)...)
			cmd.Dir = root
			if i > 0 {
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.err = fmt.Errorf("go build %s %s: %w\n%s", strings.Join(args, " "), b.pkg, err, out)
				return
			}
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// ModuleRoot returns the directory holding go.mod, searching upwards from
// the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreeAddr returns "127.0.0.1:PORT" with a port that was free a moment ago.
// Prefer port 0 when the program can report the port it bound.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// WaitForPort waits until addr accepts TCP connections.
func WaitForPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not accepting connections after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writing process and reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process is a started program.
type Process struct {
	Cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error // valid after done is closed
	name   string
}

// Start starts bin with args (env adds to the current environment). The
// process is stopped when the test ends, and its output is logged if the
// test failed.
func Start(t testing.TB, bin string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(bin, args...), done: make(chan struct{}), name: filepath.Base(bin) + " " + strings.Join(args, " ")}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout = &p.stdout
	p.Cmd.Stderr = &p.stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- %s (pid %d) stdout:\n%s--- stderr:\n%s", p.name, p.Cmd.Process.Pid, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// Stdout returns what the process wrote to stdout so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr returns what the process wrote to stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits up to grace for the process to exit, then
// kills it. It returns the process's exit error (nil for exit code 0) or an
// error saying it had to be killed. Stop is idempotent.
func (p *Process) Stop(grace time.Duration) error {
	if !p.Exited() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.Cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, grace)
		}
	}
	return p.err
}

// WaitForFile waits until path exists and is not empty, and returns its
// trimmed content. It fails early if proc (optional) exits first.
func WaitForFile(t testing.TB, path string, timeout time.Duration, proc *Process) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b))
		}
		if proc != nil && proc.Exited() {
			t.Fatalf("%s exited (%v) before writing %s; stderr:\n%s", proc.name, proc.err, path, proc.Stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within %s", path, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ControlPlane is a running `weft control-plane`.
type ControlPlane struct {
	*Process
	// URL is the admin API root, e.g. http://127.0.0.1:41234.
	URL string
	// XDSAddress is the --xds-address it was given.
	XDSAddress string
}

// ListenAddress returns the address the control plane logged for one of
// its listeners, e.g. "xDS server" or "CA" (`<what> listening ... address=`),
// which is how a test learns a port it asked the kernel to choose (":0").
func (cp *ControlPlane) ListenAddress(t testing.TB, what string) string {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(what) + ` listening.*?address=([0-9.]+:[0-9]+)`)
	// The ready file can appear before the log lines written just ahead of
	// it have been copied from the process's stderr pipe: wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(cp.Stderr()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane log has no %q listener address:\n%s", what, cp.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartControlPlane runs `bin control-plane args...` and waits until its
// admin API is serving. Unless args set them, it adds --admin-address
// 127.0.0.1:0, --dashboard-address "" (no dashboard), a free
// --xds-address and a --ready-file.
func StartControlPlane(t testing.TB, bin string, args ...string) *ControlPlane {
	t.Helper()
	has := func(flag string) (string, bool) {
		for i, a := range args {
			if a == flag && i+1 < len(args) {
				return args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v, true
			}
		}
		return "", false
	}
	full := append([]string{"control-plane"}, args...)
	if _, ok := has("--admin-address"); !ok {
		full = append(full, "--admin-address", "127.0.0.1:0")
	}
	if _, ok := has("--dashboard-address"); !ok {
		// The default 127.0.0.1:20001 is one port for every parallel
		// test: a second control plane would exit on it.
		full = append(full, "--dashboard-address", "")
	}
	xds, ok := has("--xds-address")
	if !ok {
		xds = FreeAddr(t)
		full = append(full, "--xds-address", xds)
	}
	ready, ok := has("--ready-file")
	if !ok {
		ready = filepath.Join(t.TempDir(), "ready")
		full = append(full, "--ready-file", ready)
	}
	p := Start(t, bin, nil, full...)
	url := WaitForFile(t, ready, 20*time.Second, p)
	return &ControlPlane{Process: p, URL: url, XDSAddress: xds}
}

// Result is the outcome of a finished command.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs bin with args to completion (at most 60 s) and returns its
// output and exit code; it fails t only if the program could not run.
func Run(t testing.TB, bin string, env []string, args ...string) Result {
	t.Helper()
	return RunStdin(t, bin, env, "", args...)
}

// RunStdin is Run with stdin content.
func RunStdin(t testing.TB, bin string, env []string, stdin string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := Result{Stdout: out.String(), Stderr: errOut.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		res.ExitCode = ee.ExitCode()
	default:
		t.Fatalf("run %s %s: %v\nstderr:\n%s", bin, strings.Join(args, " "), err, errOut.String())
	}
	return res
}
