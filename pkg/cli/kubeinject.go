package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/kube/inject"
)

func newKubeInjectCmd() *cobra.Command {
	var (
		file string
		cfg  inject.Config
	)
	cmd := &cobra.Command{
		Use:   "kube-inject -f FILE|-",
		Short: "Add the Weft sidecar to Kubernetes manifests offline",
		Long: `Reads Kubernetes YAML (multi-document), adds the weft iptables init container
and the weft proxy native sidecar to every Pod and pod template (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, ReplicationController) and
writes the result to standard output. Other objects pass through unchanged.
Namespace labels are not consulted; a pod with sidecar.istio.io/inject=false
is left alone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var in io.Reader
			switch file {
			case "":
				return &exitError{code: 2, err: fmt.Errorf("kube-inject: give -f FILE or -f -")}
			case "-":
				in = cmd.InOrStdin()
			default:
				f, err := os.Open(file)
				if err != nil {
					return fmt.Errorf("kube-inject: %w", err)
				}
				defer f.Close()
				in = f
			}
			return inject.Manifests(in, cmd.OutOrStdout(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", `manifest file, or "-" for stdin`)
	f.StringVar(&cfg.Image, "image", "ghcr.io/weftmesh/weft:"+Version, "weft image for the injected containers")
	f.StringVar(&cfg.ControlPlane, "control-plane", "weft.weft-system.svc:15010", "control plane xDS address HOST:PORT")
	f.StringVar(&cfg.Revision, "revision", "", "istio.io/rev this injection is for")
	f.StringVar(&cfg.ProxyCPU, "proxy-cpu", "", "proxy CPU request (default 100m; annotation sidecar.istio.io/proxyCPU overrides)")
	f.StringVar(&cfg.ProxyMemory, "proxy-memory", "", "proxy memory request (default 128Mi; annotation sidecar.istio.io/proxyMemory overrides)")
	f.StringVar(&cfg.CAAddress, "ca-address", "", "workload CA HOST:PORT for injected proxies (with the service-account token and the istio-ca-root-cert ConfigMap); empty: no mTLS credentials")
	f.BoolVar(&cfg.CNI, "cni", false, "the weft CNI plugin installs the capture rules: add no iptables init container")
	f.BoolVar(&cfg.HoldApplicationUntilProxyStarts, "hold-application-until-proxy-starts", false, "start application containers only once the proxy is ready")
	return cmd
}
