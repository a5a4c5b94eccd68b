package cli

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/controlplane"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

func newControlPlaneCmd() *cobra.Command {
	var (
		o          controlplane.Options
		logLevel   string
		meshConfig string
	)
	cmd := &cobra.Command{
		Use:   "control-plane",
		Short: "Run the control plane: config store, admin API and xDS server",
		Long: `Run the Weft control plane.

By default Istio resources are kept in an embedded database under --data-dir
and changed with 'weft apply' / 'weft delete'. With --config-dir the control
plane serves the YAML files of that directory instead (read-only, reloaded
when they change).

The admin API address may use port 0; the bound address is logged
("admin API listening on http://...") and written to --ready-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lv := new(slog.LevelVar)
			if err := lv.UnmarshalText([]byte(logLevel)); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
			}
			mesh, err := meshconfig.Load(meshConfig)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			o.Mesh = mesh
			o.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
			o.Version = Version
			// Components that run inside the control plane (xDS server,
			// CA, dashboard, ...) are added to o.Extensions here; see
			// controlplane.Extension.
			return controlplane.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", controlplane.DefaultDataDir(), "directory of the embedded config database (config.db)")
	f.BoolVar(&o.Kube, "kube", false, "Kubernetes mode: Istio CRDs are the config store and the cluster the registry (in-cluster or kubectl's kubeconfig)")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "Kubernetes mode with this kubeconfig (implies --kube)")
	f.StringVar(&o.ConfigDir, "config-dir", "", "serve the YAML files of this directory, read-only, instead of the embedded database")
	f.StringVar(&o.AdminAddress, "admin-address", "127.0.0.1:8080", "admin API listen address (port 0: pick a free port)")
	f.StringVar(&o.XDSAddress, "xds-address", "127.0.0.1:15010", "xDS (ADS) gRPC listen address")
	f.StringVar(&o.MonitoringAddress, "monitoring-address", "127.0.0.1:15014", "Prometheus metrics listen address")
	f.StringVar(&o.ReadyFile, "ready-file", "", "write the admin API URL to this file once serving")
	f.StringVar(&meshConfig, "mesh-config", "", "Istio MeshConfig YAML (rootNamespace, extensionProviders, defaultProviders, ...); default: built-in defaults")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	caExt, caf := newCAExtension(cmd)
	o.Extensions = append(o.Extensions, caExt, newXDSExtension(cmd, caf), newDashboardExtension(cmd), newTracingExtension(cmd))
	return cmd
}
