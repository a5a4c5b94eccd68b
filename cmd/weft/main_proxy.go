//go:build weftproxy

// Command weft built with -tags weftproxy is weft-proxy: only the `proxy`
// and `version` commands, without the control plane's, the CLI's and
// Kubernetes' packages and their package-level state.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/weftmesh/weft/pkg/cli/proxycmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := proxycmd.NewRoot(os.Stdin, os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(proxycmd.ExitCode(err))
	}
}
