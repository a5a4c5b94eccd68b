// Package proxycmd is the `weft proxy` command: flags, wiring of the
// sidecar (pkg/proxy, its filters, the workload-certificate client) and
// the application it starts. It imports no control-plane, Kubernetes or
// other CLI packages, so that the proxy-only build of cmd/weft
// (`go build -tags weftproxy`, bin/weft-proxy) links only what the sidecar
// runs; the full weft binary registers the same command through pkg/cli.
package proxycmd

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X .../pkg/cli/proxycmd.Version=..."
// (the Makefile sets it to the same value as pkg/cli.Version).
var Version = "dev"

// ProxyBinaryName is the file name of the proxy-only build that the full
// weft binary looks for next to itself.
const ProxyBinaryName = "weft-proxy"

// ProxyBinaryAuto is --proxy-binary's default: ProxyBinaryName next to the
// running executable, when it is there and from the same build.
const ProxyBinaryAuto = "auto"

// Config configures the command.
type Config struct {
	// ExecProxyBinary makes the command replace its process with the
	// proxy-only build (--proxy-binary) before it starts the proxy. The
	// full weft binary sets it; the proxy-only build itself does not.
	ExecProxyBinary bool
}

// ExitError carries the process exit code of a failed command: 2 for
// usage errors, 127 when the application cannot be started, the
// application's own code when it exits non-zero.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// NewRoot is the command tree of the proxy-only build: `proxy` and
// `version`, with the same arguments as in the full weft binary, so that
// `weft proxy ARGS` can become `weft-proxy proxy ARGS`.
func NewRoot(in io.Reader, out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           ProxyBinaryName,
		Short:         "Weft's sidecar proxy alone (the proxy-only build of weft)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(New(Config{}), &cobra.Command{
		Use:   "version",
		Short: "Print the weft version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), "weft "+Version+" (proxy-only build)\n")
			return err
		},
	})
	return root
}

// ExitCode maps an error returned by the command to the process exit code.
func ExitCode(err error) int {
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}
