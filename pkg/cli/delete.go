package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
)

func newDeleteCmd() *cobra.Command {
	var (
		server         string
		namespace      string
		files          []string
		ignoreNotFound bool
		timeout        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "delete (KIND NAME... | -f FILE|DIR|-)",
		Short: "Delete Istio resources from the control plane",
		Example: `  weft delete vs reviews
  weft delete -f routes.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var keys []config.Key
			switch {
			case len(files) > 0 && len(args) > 0:
				return &exitError{code: 2, err: errors.New("give either KIND NAME... or -f, not both")}
			case len(files) > 0:
				rs, err := readResources(cmd, files)
				if err != nil {
					return err
				}
				for _, r := range rs {
					keys = append(keys, r.Key())
				}
			case len(args) >= 2:
				sch, err := config.ResolveKind(args[0])
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				for _, name := range args[1:] {
					keys = append(keys, config.Key{Kind: sch.Kind, Namespace: namespace, Name: name})
				}
			default:
				return &exitError{code: 2, err: errors.New("give KIND NAME... or -f FILE")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c := &admin.Client{BaseURL: server}
			var failed error
			for _, k := range keys {
				_, err := c.Delete(ctx, k, "")
				switch {
				case err == nil:
					fmt.Fprintf(cmd.OutOrStdout(), "%s %q deleted\n", qualifiedKind(k.Kind), k.Name)
				case errors.Is(err, store.ErrNotFound) && ignoreNotFound:
				case errors.Is(err, store.ErrNotFound):
					fmt.Fprintf(cmd.ErrOrStderr(), "Error: %s %q not found in namespace %q\n", qualifiedKind(k.Kind), k.Name, k.Namespace)
					failed = &exitError{code: 1, err: errors.New("not every resource was found")}
				default:
					return apiError(err)
				}
			}
			return failed
		},
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", config.DefaultNamespace, "namespace of the named resources")
	f.StringSliceVarP(&files, "filename", "f", nil, "delete the resources defined in this file, directory or - (stdin)")
	f.BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat missing resources as deleted")
	f.DurationVar(&timeout, "timeout", requestTimeout, "how long to wait for the control plane")
	controlPlaneFlag(cmd, &server)
	return cmd
}
