// Package netnstest builds network namespaces for tests that need real
// iptables and routing: two namespaces joined by a veth pair, and helper
// processes (the test binary re-executed with a role in an environment
// variable) started inside them. Everything is removed in t.Cleanup.
package netnstest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Require skips t unless it runs as root, not under -short, with ip and
// every extra binary named installed.
func Require(t testing.TB, bins ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("netns test skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, bin := range append([]string{"ip"}, bins...) {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
}

// Run runs a command and fails t with its output if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// New creates network namespace "<prefix><pid>" with loopback up and
// returns its name; it is deleted in t.Cleanup.
func New(t testing.TB, prefix string) string {
	t.Helper()
	ns := fmt.Sprintf("%s%d", prefix, os.Getpid()%100000)
	Run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

// Pair is two network namespaces joined by a veth pair on a /24.
type Pair struct {
	// A and B are the namespace names; AddrA and AddrB their veth IPs.
	A, B         string
	AddrA, AddrB string
}

// NewPair creates namespaces "<prefix>a<pid>" and "<prefix>b<pid>" (see
// New) joined by a veth pair, with net24 (e.g. "10.213.0") .1 in A and .2
// in B. The prefix keeps tests of different packages, which
// may run at the same time, apart.
func NewPair(t testing.TB, prefix, net24 string) *Pair {
	t.Helper()
	p := &Pair{A: New(t, prefix+"a"), B: New(t, prefix+"b"), AddrA: net24 + ".1", AddrB: net24 + ".2"}
	suffix := fmt.Sprintf("%d", os.Getpid()%100000)
	va, vb := prefix+"va"+suffix, prefix+"vb"+suffix
	Run(t, "ip", "link", "add", va, "netns", p.A, "type", "veth", "peer", "name", vb, "netns", p.B)
	Run(t, "ip", "-n", p.A, "addr", "add", p.AddrA+"/24", "dev", va)
	Run(t, "ip", "-n", p.B, "addr", "add", p.AddrB+"/24", "dev", vb)
	Run(t, "ip", "-n", p.A, "link", "set", va, "up")
	Run(t, "ip", "-n", p.B, "link", "set", vb, "up")
	return p
}

// Helpers re-executes the test binary inside namespaces with Env=role
// set; the binary's TestMain dispatches on it.
type Helpers struct {
	// Env is the environment variable carrying the role.
	Env string
	// Timeout bounds Start's wait for "ready" (default 15 s).
	Timeout time.Duration
}

func (h Helpers) command(ns, role string, env []string) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), append(env, h.Env+"="+role)...)
	return cmd
}

// Start starts role inside ns (as group gid when non-zero, the way the
// proxy's uid/gid 1337 is excluded from capture) and waits until it prints
// "ready" on its first line. The process is killed in t.Cleanup.
func (h Helpers) Start(t testing.TB, ns, role string, gid uint32, env ...string) {
	t.Helper()
	cmd := h.command(ns, role, env)
	if gid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: gid}}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	select {
	case l := <-ready:
		if strings.TrimSpace(l) != "ready" {
			t.Fatalf("%s in %s: %q", role, ns, l)
		}
	case <-time.After(timeout):
		t.Fatalf("%s in %s did not start within %v", role, ns, timeout)
	}
}

// Exec runs role inside ns to completion and returns its combined output;
// a non-zero exit fails t.
func (h Helpers) Exec(t testing.TB, ns, role string, env ...string) string {
	t.Helper()
	out, err := h.command(ns, role, env).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", role, ns, err, out)
	}
	return string(out)
}
