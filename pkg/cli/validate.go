package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/validation"
)

func newValidateCmd() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate -f FILE|DIR|- [-f ...]",
		Short: "Check Istio configuration files offline",
		Long: `Decodes and validates Istio resources without contacting a control plane.
Every problem is printed on its own line as FILE:LINE: KIND NAMESPACE/NAME:
FIELD.PATH: MESSAGE. Directories are searched recursively for *.yaml, *.yml
and *.json; "-" reads standard input. Exits 1 if any error was found;
warnings alone do not fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return &exitError{code: 2, err: fmt.Errorf("validate: give at least one -f FILE, -f DIR or -f -")}
			}
			rs, problems := validation.ReadSources(files, cmd.InOrStdin())
			if err := printProblems(cmd.ErrOrStderr(), problems); err != nil {
				return err
			}
			nerr, nwarn := len(problems.Errors()), len(problems.Warnings())
			if nerr > 0 {
				return &exitError{code: 1, err: fmt.Errorf("validation failed: %s, %s", plural(nerr, "error"), plural(nwarn, "warning"))}
			}
			summary := plural(len(rs), "resource") + " valid"
			if nwarn > 0 {
				summary += " (" + plural(nwarn, "warning") + ")"
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), summary)
			return err
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, `file, directory or "-" (stdin) to validate; repeatable`)
	return cmd
}

func printProblems(w io.Writer, problems config.ErrorList) error {
	for _, p := range problems {
		if _, err := fmt.Fprintln(w, p.Error()); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
