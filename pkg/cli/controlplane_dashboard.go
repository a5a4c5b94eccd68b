package cli

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/controlplane"
	"github.com/weftmesh/weft/pkg/dashboard"
)

// newDashboardExtension serves the web dashboard from inside the control
// plane on --dashboard-address (Kiali's port 20001 by default). It reads
// proxies and config through the control plane's own admin API.
func newDashboardExtension(cmd *cobra.Command) controlplane.Extension {
	var addr string
	cmd.Flags().StringVar(&addr, "dashboard-address", "127.0.0.1:20001", "web dashboard listen address (empty disables)")
	return controlplane.ExtensionFunc(func(ctx context.Context, env *controlplane.Env) error {
		if addr == "" {
			return nil
		}
		src, err := dashboard.NewHTTPSources(env.AdminURL, &http.Client{Timeout: 5 * time.Second})
		if err != nil {
			return err
		}
		log := env.Logger.With("component", "dashboard")
		d, err := dashboard.New(dashboard.Options{Sources: src, Logger: log, TracesURL: env.AdminURL})
		if err != nil {
			return err
		}
		env.Go("dashboard", func(ctx context.Context) error {
			return d.ListenAndServe(ctx, addr, func(a net.Addr) {
				log.Info("dashboard listening", "url", "http://"+a.String())
			})
		})
		return nil
	})
}
