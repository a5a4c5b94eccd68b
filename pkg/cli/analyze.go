package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/config/analyze"
	"github.com/weftmesh/weft/pkg/config/validation"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

func newAnalyzeCmd() *cobra.Command {
	var (
		files          []string
		knownHosts     []string
		failOnWarnings bool
		meshConfig     string
	)
	cmd := &cobra.Command{
		Use:   "analyze -f FILE|DIR|- [-f ...]",
		Short: "Look across Istio resources offline for broken references and conflicts",
		Long: `Validates the given resources, then analyzes them together: destination
hosts that no ServiceEntry (or --known-host) defines, subsets no
DestinationRule declares, missing gateways, virtual services that claim the
same host, and more than one default Sidecar per namespace. Each message
carries a stable code (WEFT01xx). Exits 0 when only warnings are found unless
--fail-on-warnings is set; invalid input exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return &exitError{code: 2, err: fmt.Errorf("analyze: give at least one -f FILE, -f DIR or -f -")}
			}
			rs, problems := validation.ReadSources(files, cmd.InOrStdin())
			if err := printProblems(cmd.ErrOrStderr(), problems); err != nil {
				return err
			}
			if n := len(problems.Errors()); n > 0 {
				return &exitError{code: 1, err: fmt.Errorf("analyze: input is invalid (%s)", plural(n, "error"))}
			}
			var opts []analyze.Option
			if cmd.Flags().Changed("known-host") {
				opts = append(opts, analyze.WithKnownHosts(knownHosts...))
			}
			if meshConfig != "" {
				mesh, err := meshconfig.Load(meshConfig)
				if err != nil {
					return &exitError{code: 1, err: fmt.Errorf("--mesh-config: %w", err)}
				}
				opts = append(opts, analyze.WithMeshConfig(mesh))
			}
			msgs := analyze.Analyze(rs, opts...)
			out := cmd.OutOrStdout()
			nerr, nwarn, ninfo := 0, len(problems), 0
			for _, m := range msgs {
				if _, err := fmt.Fprintln(out, m.String()); err != nil {
					return fmt.Errorf("write: %w", err)
				}
				switch m.Severity {
				case analyze.Error:
					nerr++
				case analyze.Warning:
					nwarn++
				default:
					ninfo++
				}
			}
			if nerr == 0 && nwarn == 0 && ninfo == 0 {
				_, err := fmt.Fprintf(out, "No issues found when analyzing %s\n", plural(len(rs), "resource"))
				return err
			}
			if _, err := fmt.Fprintf(out, "Analyzed %s: %s, %s, %d info\n", plural(len(rs), "resource"), plural(nerr, "error"), plural(nwarn, "warning"), ninfo); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			if nerr > 0 || (failOnWarnings && nwarn > 0) {
				return &exitError{code: 1, err: fmt.Errorf("analyze found %s and %s", plural(nerr, "error"), plural(nwarn, "warning"))}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, `file, directory or "-" (stdin) to analyze; repeatable`)
	cmd.Flags().StringSliceVar(&knownHosts, "known-host", nil, "host the registry knows besides ServiceEntries (FQDN, e.g. reviews.default.svc.cluster.local); repeatable")
	cmd.Flags().StringVar(&meshConfig, "mesh-config", "", "MeshConfig file (as for weft control-plane): checks AuthorizationPolicy CUSTOM providers against its extensionProviders")
	cmd.Flags().BoolVar(&failOnWarnings, "fail-on-warnings", false, "exit 1 when warnings are found")
	return cmd
}
