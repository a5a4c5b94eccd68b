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
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/netnstest"
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

// helpers re-execute this test binary inside the test's namespaces.
var helpers = netnstest.Helpers{Env: helperEnv, Timeout: 10 * time.Second}

// TestCaptureInNetns builds two namespaces joined by a veth pair, applies
// the capture rules in both, and checks that an unmodified client calling
// the server by IP passes through the client's outbound capture and the
// server's inbound capture, with the original destination recovered.
func TestCaptureInNetns(t *testing.T) {
	netnstest.Require(t, "iptables", "iptables-restore", "iptables-save")
	pair := netnstest.NewPair(t, "wi", "10.213.0")
	cli, srv := pair.A, pair.B

	// Before capture: the client reaches the app directly.
	helpers.Start(t, srv, "app", 0)
	if got := helpers.Exec(t, cli, "client", "WEFT_TARGET=10.213.0.2:8080"); got != "app got: hello\n" {
		t.Fatalf("direct call before capture: %q", got)
	}

	helpers.Exec(t, cli, "apply")
	helpers.Exec(t, srv, "apply")
	// Re-applying must not duplicate jump rules.
	helpers.Exec(t, srv, "apply")
	if out, _ := exec.Command("ip", "netns", "exec", srv, "iptables-save", "-t", "nat").Output(); strings.Count(string(out), "-A PREROUTING -p tcp -j ISTIO_INBOUND") != 1 {
		t.Fatalf("re-apply duplicated the PREROUTING jump:\n%s", out)
	}

	// Capture proxies run with gid 1337, the excluded proxy identity.
	helpers.Start(t, cli, "capture", 1337, "WEFT_LISTEN=0.0.0.0:15001", "WEFT_NAME=client-outbound")
	helpers.Start(t, srv, "capture", 1337, "WEFT_LISTEN=0.0.0.0:15006", "WEFT_NAME=server-inbound", "WEFT_INBOUND=1")

	got := helpers.Exec(t, cli, "client", "WEFT_TARGET=10.213.0.2:8080")
	want := "via=client-outbound orig=10.213.0.2:8080\nvia=server-inbound orig=10.213.0.2:8080\napp got: hello\n"
	if got != want {
		t.Fatalf("captured call:\n got %q\nwant %q", got, want)
	}

	// Cleanup restores direct traffic.
	helpers.Exec(t, cli, "cleanup")
	helpers.Exec(t, srv, "cleanup")
	if got := helpers.Exec(t, cli, "client", "WEFT_TARGET=10.213.0.2:8080"); got != "app got: hello\n" {
		t.Fatalf("direct call after cleanup: %q", got)
	}
}
