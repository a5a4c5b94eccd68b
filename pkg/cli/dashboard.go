package cli

import (
	"fmt"
	"log/slog"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/dashboard"
)

func newDashboardCmd() *cobra.Command {
	var (
		address, server, logLevel string
		interval                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the web dashboard (service graph, health, config, proxy status)",
		Long: `Serves the Weft dashboard as a standalone process. It reads connected proxies
and applied resources from the control plane's admin API (--server), scrapes
every proxy's /stats/prometheus (the METRICS_ADDRESS each proxy announces) every
--scrape-interval, and serves the UI and its JSON API on --address.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lv := new(slog.LevelVar)
			if err := lv.UnmarshalText([]byte(strings.ToUpper(logLevel))); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
			}
			logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
			src, err := dashboard.NewHTTPSources(server, nil)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--server: %w", err)}
			}
			d, err := dashboard.New(dashboard.Options{Sources: src, Logger: logger, ScrapeInterval: interval, TracesURL: server})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return d.ListenAndServe(ctx, address, func(a net.Addr) {
				fmt.Fprintf(cmd.OutOrStdout(), "dashboard: http://%s/ (control plane %s)\n", a, server)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&address, "address", "127.0.0.1:20001", "address to serve the dashboard on")
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "control plane admin API URL")
	f.DurationVar(&interval, "scrape-interval", 5*time.Second, "time between scrapes of the proxies' metrics")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
