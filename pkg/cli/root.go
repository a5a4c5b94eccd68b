// Package cli holds the cobra commands of the weft binary. Each subcommand
// lives in its own file and only parses flags and wires packages together.
package cli

import (
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/cli/proxycmd"
)

// Version is set at build time with -ldflags "-X .../pkg/cli.Version=...".
var Version = "dev"

// exitError carries a specific process exit code (e.g. 1 for validation errors).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// ExitCode maps an error returned by a command to the process exit code.
func ExitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var pe *proxycmd.ExitError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return 1
}

// NewRoot builds the weft command tree.
func NewRoot(in io.Reader, out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "weft",
		Short:         "Weft: an Istio-compatible service mesh in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddCommand(
		newVersionCmd(),
		newIptablesCmd(),
		newCNICmd(),
		newInstallCmd(),
		newUninstallCmd(),
		newManifestCmd(),
		newDemoCmd(),
		newDemoAppCmd(),
		proxycmd.New(proxycmd.Config{ExecProxyBinary: true}),
		newDashboardCmd(),
		newProxyStatusCmd(),
		newProxyConfigCmd(),
		newControlPlaneCmd(),
		newApplyCmd(),
		newGetCmd(),
		newDeleteCmd(),
		newValidateCmd(),
		newAnalyzeCmd(),
		newAuthzCmd(),
		newTokenCmd(),
		newKubeInjectCmd(),
		newWebhookCmd(),
		// Each subcommand adds one line here.
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the weft version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), "weft "+Version+"\n")
			return err
		},
	}
}
