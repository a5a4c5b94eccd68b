package iptables

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The netns test re-executes this test binary inside network namespaces it
// creates; helperEnv selects the helper's role.
const helperEnv = "WEFT_IPTABLES_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "app":
		runApp()
	case "capture":
		runCapture(os.Getenv("WEFT_LISTEN"), os.Getenv("WEFT_NAME"), os.Getenv("WEFT_INBOUND") == "1")
	case "apply":
		if err := Apply(context.Background(), Defaults()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "cleanup":
		if err := Cleanup(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "client":
		runClient(os.Getenv("WEFT_TARGET"))
	}
	os.Exit(0)
}

// runApp is an unmodified server: it answers "app got: LINE".
func runApp() {
	ln, err := net.Listen("tcp", "0.0.0.0:8080")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func(c net.Conn) {
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "app got: %s", line)
		}(c)
	}
}

// runCapture is a minimal transparent proxy: it recovers the original
// destination, announces itself, and splices bytes. Inbound captures dial the
// app on 127.0.0.1; outbound captures dial the original destination.
func runCapture(listen, name string, inbound bool) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func(c *net.TCPConn) {
			defer c.Close()
			dst, err := OriginalDst(c)
			if err != nil {
				fmt.Fprintf(c, "error: %v\n", err)
				return
			}
			target := dst.String()
			if inbound {
				target = fmt.Sprintf("127.0.0.1:%d", dst.Port())
			}
			up, err := net.DialTimeout("tcp", target, 2*time.Second)
			if err != nil {
				fmt.Fprintf(c, "error: %v\n", err)
				return
			}
			defer up.Close()
			fmt.Fprintf(c, "via=%s orig=%s\n", name, dst)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(c, up)
			wg.Wait()
		}(c.(*net.TCPConn))
	}
}

func runClient(target string) {
	c, err := net.DialTimeout("tcp", target, 3*time.Second)
	if err != nil {
		fmt.Println("dial error:", err)
		os.Exit(1)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "hello\n")
	_ = c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	fmt.Print(string(b))
}

func requireNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("netns test skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, bin := range []string{"ip", "iptables", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startInNS starts a helper inside ns and waits for its "ready" line.
func startInNS(t *testing.T, ns, role string, gid uint32, env ...string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+role)...)
	if gid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: gid}}
	}
	stdout, _ := cmd.StdoutPipe()
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
	select {
	case l := <-ready:
		if strings.TrimSpace(l) != "ready" {
			t.Fatalf("%s in %s: %q", role, ns, l)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s in %s did not start", role, ns)
	}
}

func inNS(t *testing.T, ns, role string, env ...string) string {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0])
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+role)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", role, ns, err, out)
	}
	return string(out)
}

// TestCaptureInNetns builds two namespaces joined by a veth pair, applies
// the capture rules in both, and checks that an unmodified client calling
// the server by IP passes through the client's outbound capture and the
// server's inbound capture, with the original destination recovered.
func TestCaptureInNetns(t *testing.T) {
	requireNetns(t)
	suffix := fmt.Sprintf("%d", os.Getpid()%100000)
	cli, srv := "weftc"+suffix, "wefts"+suffix
	vc, vs := "wvc"+suffix, "wvs"+suffix
	run(t, "ip", "netns", "add", cli)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", cli).Run() })
	run(t, "ip", "netns", "add", srv)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", srv).Run() })
	run(t, "ip", "link", "add", vc, "netns", cli, "type", "veth", "peer", "name", vs, "netns", srv)
	run(t, "ip", "-n", cli, "addr", "add", "10.213.0.1/24", "dev", vc)
	run(t, "ip", "-n", srv, "addr", "add", "10.213.0.2/24", "dev", vs)
	for _, ns := range []string{cli, srv} {
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", cli, "link", "set", vc, "up")
	run(t, "ip", "-n", srv, "link", "set", vs, "up")

	// Before capture: the client reaches the app directly.
	startInNS(t, srv, "app", 0)
	if got := inNS(t, cli, "client", "WEFT_TARGET=10.213.0.2:8080"); got != "app got: hello\n" {
		t.Fatalf("direct call before capture: %q", got)
	}

	inNS(t, cli, "apply")
	inNS(t, srv, "apply")
	// Re-applying must not duplicate jump rules.
	inNS(t, srv, "apply")
	if out, _ := exec.Command("ip", "netns", "exec", srv, "iptables-save", "-t", "nat").Output(); strings.Count(string(out), "-A PREROUTING -p tcp -j ISTIO_INBOUND") != 1 {
		t.Fatalf("re-apply duplicated the PREROUTING jump:\n%s", out)
	}

	// Capture proxies run with gid 1337, the excluded proxy identity.
	startInNS(t, cli, "capture", 1337, "WEFT_LISTEN=0.0.0.0:15001", "WEFT_NAME=client-outbound")
	startInNS(t, srv, "capture", 1337, "WEFT_LISTEN=0.0.0.0:15006", "WEFT_NAME=server-inbound", "WEFT_INBOUND=1")

	got := inNS(t, cli, "client", "WEFT_TARGET=10.213.0.2:8080")
	want := "via=client-outbound orig=10.213.0.2:8080\nvia=server-inbound orig=10.213.0.2:8080\napp got: hello\n"
	if got != want {
		t.Fatalf("captured call:\n got %q\nwant %q", got, want)
	}

	// Cleanup restores direct traffic.
	inNS(t, cli, "cleanup")
	inNS(t, srv, "cleanup")
	if got := inNS(t, cli, "client", "WEFT_TARGET=10.213.0.2:8080"); got != "app got: hello\n" {
		t.Fatalf("direct call after cleanup: %q", got)
	}
}
