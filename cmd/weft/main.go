//go:build !weftproxy

// Command weft is the single Weft binary: control plane, sidecar proxy and
// CLI. Built with -tags weftproxy (main_proxy.go) it is weft-proxy, the
// proxy-only build that `weft proxy` runs in its place when it finds it
// next to itself (pkg/cli/proxycmd).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/weftmesh/weft/pkg/cli"
	"github.com/weftmesh/weft/pkg/cni"
)

func main() {
	// Container runtimes run CNI plugins by their file name, without
	// arguments: `weft cni install` copies this binary as weft-cni.
	if filepath.Base(os.Args[0]) == cni.PluginType {
		cni.Main()
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.NewRoot(os.Stdin, os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(cli.ExitCode(err))
	}
}
