package cli

import (
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/examples/bookinfo"
	"github.com/weftmesh/weft/pkg/demo"
)

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole mesh on this machine: control plane, Bookinfo with sidecars, ingress gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			return demo.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", "", "directory for the store and logs (default: a temporary directory removed on exit)")
	f.StringVar(&o.AdminAddress, "admin-address", "", "control plane admin API (default 127.0.0.1:8080)")
	f.StringVar(&o.XDSAddress, "xds-address", "", "control plane xDS address (default 127.0.0.1:15010)")
	f.StringVar(&o.MonitoringAddress, "monitoring-address", "", "control plane metrics address (default 127.0.0.1:15014)")
	f.StringVar(&o.DashboardAddress, "dashboard-address", "", "web dashboard address (default 127.0.0.1:20001)")
	f.StringVar(&o.IngressAddress, "ingress-address", "", "ingress gateway address (default 127.0.0.1:8000)")
	f.IntVar(&o.BasePort, "base-port", 21000, "first port of the block the workloads use; 0 picks free ports")
	f.IntVar(&o.Load, "load", 0, "send this many requests per second to the ingress so graphs move")
	f.StringVar(&o.CAAddress, "ca-address", "", "control plane workload CA address (default 127.0.0.1:15012)")
	f.Float64Var(&o.Tracing.Sampling, "trace-sampling", 100, "percentage of requests traced (to the control plane's built-in Zipkin collector)")
	f.StringVar(&o.Tracing.Address, "zipkin-address", "", "the control plane's built-in Zipkin collector (default 127.0.0.1:9411)")
	f.BoolVar(&o.Plaintext, "plaintext", false, "no CA and no mutual TLS: sidecars talk plaintext (default: STRICT mTLS mesh-wide)")
	f.StringVar(&o.Prometheus.ConfigPath, "prometheus", "", "write a Prometheus scrape config for every proxy and the control plane to this file (or DIR/prometheus.yml)")
	f.BoolVar(&o.Prometheus.Run, "prometheus-run", false, "also run the prometheus binary (Debian package prometheus) against that config")
	f.StringVar(&o.Prometheus.Address, "prometheus-address", "", "where --prometheus-run serves (default 127.0.0.1:9090)")
	f.DurationVar(&o.Prometheus.Interval, "prometheus-interval", 5*time.Second, "scrape interval in the written config")
	f.BoolVar(&o.NoGateway, "no-gateway", false, "do not start the ingress gateway; enter through productpage's sidecar")
	f.DurationVar(&o.ExitAfter, "exit-after", 0, "stop the mesh this long after it is ready (0: run until Ctrl-C)")
	f.DurationVar(&o.ReadyTimeout, "ready-timeout", 0, "how long start-up may take (default 60s)")
	return cmd
}

// newDemoAppCmd runs one Bookinfo service; weft demo starts it behind a sidecar.
func newDemoAppCmd() *cobra.Command {
	var o bookinfo.Options
	cmd := &cobra.Command{
		Use:    "demo-app",
		Short:  "Run one service of the Bookinfo sample app",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("service", o.Service, "version", o.Version)
			return bookinfo.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Service, "service", "", "productpage, details, reviews or ratings")
	f.StringVar(&o.Version, "version", "v1", "version label (reviews: v1 no stars, v2 black, v3 red)")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:9080", "address to serve on")
	f.StringVar(&o.Proxy, "proxy", "", "sidecar outbound address used as HTTP proxy for calls to other services")
	f.IntVar(&o.Port, "port", 9080, "port other services are called on")
	return cmd
}
