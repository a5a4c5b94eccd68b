package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/validation"
)

// requestTimeout bounds one CLI call to the admin API.
const requestTimeout = 30 * time.Second

func newApplyCmd() *cobra.Command {
	var (
		server      string
		files       []string
		dryRun      bool
		wait        bool
		waitTimeout time.Duration
		timeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "Validate Istio resources and store them in the control plane",
		Long: `Apply Istio resources from files, directories (every *.yaml, *.yml and
*.json, recursively) or standard input (-f -).

Every document is validated locally first; if any is invalid, every error is
printed and nothing is sent. The control plane applies all documents in one
transaction.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return &exitError{code: 2, err: errors.New("give at least one -f FILE, -f DIR or -f -")}
			}
			if wait && dryRun {
				return &exitError{code: 2, err: errors.New("--wait and --dry-run exclude each other")}
			}
			rs, err := readResources(cmd, files)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c := &admin.Client{BaseURL: server}
			resp, err := c.Apply(ctx, rs, dryRun)
			if err != nil {
				return apiError(err)
			}
			// resp.Warnings repeats the local warnings readResources
			// printed (with "request" as the file name), so it is not shown.
			suffix := ""
			if resp.DryRun {
				suffix = " (dry run)"
			}
			out := cmd.OutOrStdout()
			for _, r := range resp.Results {
				fmt.Fprintf(out, "%s %s%s\n", resourceName(r.Kind, r.Name), r.Result, suffix)
			}
			if !wait {
				return nil
			}
			wctx, wcancel := context.WithTimeout(cmd.Context(), waitTimeout+5*time.Second)
			defer wcancel()
			if err := c.WaitForSync(wctx, resp.Revision, waitTimeout); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("change stored, but not in effect everywhere: %w", err)}
			}
			fmt.Fprintf(out, "in effect: every connected proxy acknowledged revision %d\n", resp.Revision)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&files, "filename", "f", nil, "file, directory or - (stdin) to apply; repeatable")
	f.BoolVar(&dryRun, "dry-run", false, "validate on the server and report what would change, without storing")
	f.BoolVar(&wait, "wait", false, "return only when every connected proxy has acknowledged the change (fails naming the proxies that did not)")
	f.DurationVar(&waitTimeout, "wait-timeout", 30*time.Second, "how long --wait waits for proxies")
	f.DurationVar(&timeout, "timeout", requestTimeout, "how long to wait for the control plane")
	controlPlaneFlag(cmd, &server)
	return cmd
}

// readResources reads and validates -f inputs, printing warnings; on any
// error it prints every error and returns an exit-1 error.
func readResources(cmd *cobra.Command, files []string) ([]*config.Resource, error) {
	rs, problems := validation.ReadSources(files, cmd.InOrStdin())
	errOut := cmd.ErrOrStderr()
	for _, w := range problems.Warnings() {
		fmt.Fprintln(errOut, w.Error())
	}
	if errs := problems.Errors(); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(errOut, e.Error())
		}
		return nil, &exitError{code: 1, err: fmt.Errorf("%d error(s) in input; nothing was applied", len(errs))}
	}
	if len(rs) == 0 {
		return nil, &exitError{code: 1, err: errors.New("no resources found in input")}
	}
	return rs, nil
}

// resourceName is kubectl's "kind.group/name", e.g.
// virtualservice.networking.istio.io/reviews.
func resourceName(kind, name string) string { return qualifiedKind(kind) + "/" + name }

// qualifiedKind is "kind.group" in lower case, e.g. serviceentry.networking.istio.io.
func qualifiedKind(kind string) string {
	k := strings.ToLower(kind)
	if sch, ok := config.SchemaForKind(kind); ok {
		k = strings.ToLower(sch.WireKind()) + "." + sch.Group // gateway.gateway.networking.k8s.io, as kubectl
	}
	return k
}

// apiError prints an admin API error's details on their own lines.
func apiError(err error) error {
	var ae *admin.APIError
	if errors.As(err, &ae) {
		return &exitError{code: 1, err: ae}
	}
	return err
}
