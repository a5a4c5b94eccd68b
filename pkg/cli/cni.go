package cli

import (
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/cni"
)

func newCNICmd() *cobra.Command {
	var (
		o        cni.InstallOptions
		excluded string
		interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "cni",
		Short: "The weft CNI plugin: capture pod traffic without a privileged init container",
		Long: `weft-cni is a chained CNI plugin. The container runtime runs it (this binary,
installed as ` + cni.PluginType + ` in the CNI bin directory) after the primary network
plugin; for pods that carry the weft sidecar it writes the ISTIO_* nat rules into
the pod's network namespace, honouring the traffic.sidecar.istio.io/* annotations.
Inject pods with 'weft kube-inject --cni' / 'weft webhook --cni' so they get no
iptables init container.

'weft cni install' puts the binary, a kubeconfig and the chain entry in place;
'weft cni run' is the installer DaemonSet's loop (install, keep the entry in the
chain, remove everything on SIGTERM); 'weft cni plugin' runs the plugin itself.`,
	}
	flags := func(c *cobra.Command) {
		f := c.Flags()
		f.StringVar(&o.BinDir, "bin-dir", "/opt/cni/bin", "CNI plugin binary directory")
		f.StringVar(&o.ConfDir, "conf-dir", "/etc/cni/net.d", "CNI network configuration directory")
		f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig for the plugin (default: written from the in-cluster service account)")
		f.StringVar(&excluded, "exclude-namespaces", "weft-system,kube-system", "comma list of namespaces whose pods are never captured")
		f.Int64Var(&o.ProxyUID, "proxy-uid", 1337, "uid/gid of the injected proxy")
	}
	prepare := func(c *cobra.Command) {
		o.Logger = slog.New(slog.NewTextHandler(c.ErrOrStderr(), nil))
		for _, n := range strings.Split(excluded, ",") {
			if n = strings.TrimSpace(n); n != "" {
				o.ExcludeNamespaces = append(o.ExcludeNamespaces, n)
			}
		}
	}
	install := &cobra.Command{
		Use: "install", Short: "Install the plugin binary, its kubeconfig and its chain entry once", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			prepare(c)
			_, err := cni.Install(o)
			return err
		},
	}
	uninstall := &cobra.Command{
		Use: "uninstall", Short: "Remove the plugin from the chain, and its binary and kubeconfig", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			prepare(c)
			return cni.Uninstall(o)
		},
	}
	run := &cobra.Command{
		Use: "run", Short: "Install and keep the plugin in the chain until stopped, then uninstall (DaemonSet mode)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			prepare(c)
			return cni.Run(c.Context(), o, interval)
		},
	}
	run.Flags().DurationVar(&interval, "interval", 10*time.Second, "how often the chain entry is re-checked")
	for _, c := range []*cobra.Command{install, uninstall, run} {
		flags(c)
	}
	plugin := &cobra.Command{
		Use: "plugin", Short: "Run the CNI plugin (CNI_COMMAND and CNI_* environment, configuration on stdin)", Args: cobra.NoArgs,
		Run: func(*cobra.Command, []string) { cni.Main() },
	}
	cmd.AddCommand(install, uninstall, run, plugin)
	return cmd
}
