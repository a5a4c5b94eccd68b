package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/weftmesh/weft/manifests/charts"
	"github.com/weftmesh/weft/pkg/install"
	"github.com/weftmesh/weft/pkg/kube/kubeclient"
)

// installFlags are the values and cluster flags shared by install,
// uninstall and manifest generate.
type installFlags struct {
	sets, files []string
	namespace   string
	kubeconfig  string
	context     string
}

func (f *installFlags) register(cmd *cobra.Command, values, cluster bool) {
	fl := cmd.Flags()
	if values {
		fl.StringArrayVar(&f.sets, "set", nil, "chart value KEY=VALUE (repeatable; profile=default|minimal|demo picks the base profile)")
		fl.StringArrayVarP(&f.files, "filename", "f", nil, "values YAML file (repeatable)")
	}
	fl.StringVarP(&f.namespace, "namespace", "n", "weft-system", "namespace of the control plane")
	if cluster {
		fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
		fl.StringVar(&f.context, "context", "", "kubeconfig context")
	}
}

func (f *installFlags) options() (install.Options, error) {
	o := install.Options{Sets: f.sets}
	for _, name := range f.files {
		b, err := os.ReadFile(name)
		if err != nil {
			return o, &exitError{code: 2, err: err}
		}
		o.Files = append(o.Files, install.NamedValues{Name: name, Data: b})
	}
	return o, nil
}

func (f *installFlags) restConfig() (*rest.Config, error) {
	return kubeclient.Config(f.kubeconfig, f.context)
}

func loadChart() (*install.Chart, error) { return install.Load(charts.FS, "weft") }

func release(ns string) install.Release {
	return install.Release{Name: "weft", Namespace: ns, Service: "weft"}
}

func newInstallCmd() *cobra.Command {
	var (
		f    installFlags
		wait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install Weft into a Kubernetes cluster from its Helm chart",
		Long: `Renders manifests/charts/weft (embedded in this binary; the same chart works with
'helm install') with the chosen profile and values, applies it with server-side
apply (CRDs first, webhooks last), and waits for the control plane and gateways
to become ready, printing progress. Re-running it upgrades in place.

  weft install --set profile=demo
  weft install -f my-values.yaml --set controlPlane.replicas=2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options()
			if err != nil {
				return err
			}
			c, err := loadChart()
			if err != nil {
				return err
			}
			if _, err := c.Values(o); err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := f.restConfig()
			if err != nil {
				return err
			}
			cl, err := install.NewClient(cfg, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if err := install.Install(cmd.Context(), cl, c, o, release(f.namespace), wait); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "✔ Installation complete. Label a namespace with istio-injection=enabled to add sidecars to its new pods.")
			return nil
		},
	}
	f.register(cmd, true, true)
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for the workloads to be ready (0: do not wait)")
	return cmd
}

func newUninstallCmd() *cobra.Command {
	var (
		f     installFlags
		purge bool
	)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove what 'weft install' created (CRDs and Istio resources only with --purge)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.restConfig()
			if err != nil {
				return err
			}
			cl, err := install.NewClient(cfg, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if err := cl.DeleteReleased(cmd.Context(), "weft", f.namespace, purge); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "✔ Uninstalled.")
			return nil
		},
	}
	f.register(cmd, false, true)
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the Istio CRDs, and with them every Istio resource")
	return cmd
}

func newManifestCmd() *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{Use: "manifest", Short: "Render installation manifests"}
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Print the Kubernetes manifests 'weft install' would apply (CRDs included)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options()
			if err != nil {
				return err
			}
			c, err := loadChart()
			if err != nil {
				return err
			}
			docs, err := c.Manifest(o, release(f.namespace))
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			w := cmd.OutOrStdout()
			for _, d := range docs {
				if _, err := fmt.Fprintf(w, "---\n# Source: %s\n%s", d.Source, d.YAML); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f.register(gen, true, false)
	cmd.AddCommand(gen)
	return cmd
}
