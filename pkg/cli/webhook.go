package cli

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/pkg/kube/inject"
	"github.com/weftmesh/weft/pkg/kube/kubeclient"
	"github.com/weftmesh/weft/pkg/kube/webhook"
)

func newWebhookCmd() *cobra.Command {
	var (
		cfg                 inject.Config
		addr, certFile      string
		keyFile, hosts, url string
		configOut, logLevel string
		svcNS, svcName      string
		patch               bool
		mutName, valName    string
		kubeconfig          string
	)
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Run the Kubernetes admission webhook (sidecar injection, Istio validation)",
		Long: `Serves HTTPS AdmissionReview endpoints for a Kubernetes API server:
/inject adds the weft sidecar to pods on CREATE, /validate checks Istio
resources with the same rules and messages as 'weft validate'.

Without --cert/--key a self-signed certificate for --hosts is generated.
--config-out writes the MutatingWebhookConfiguration and
ValidatingWebhookConfiguration (with that CA bundle) for 'kubectl apply',
pointing at --url or at the service --service-namespace/--service-name.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lv := new(slog.LevelVar)
			if err := lv.UnmarshalText([]byte(logLevel)); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--log-level: %w", err)}
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lv}))
			srv, err := webhook.New(webhook.Options{Inject: cfg, Logger: log})
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			var certPEM, keyPEM []byte
			if certFile == "" && keyFile == "" {
				certPEM, keyPEM, err = webhook.SelfSigned(strings.Split(hosts, ","), 365*24*time.Hour)
			} else {
				if certPEM, err = os.ReadFile(certFile); err == nil {
					keyPEM, err = os.ReadFile(keyFile)
				}
			}
			if err != nil {
				return fmt.Errorf("webhook certificate: %w", err)
			}
			cert, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				return fmt.Errorf("webhook certificate: %w", err)
			}
			if configOut != "" {
				cc := webhook.ClientConfig{URL: url, ServiceNamespace: svcNS, ServiceName: svcName, CABundle: certPEM}
				m, err := yaml.Marshal(webhook.MutatingConfiguration("weft-sidecar-injector", cc))
				if err != nil {
					return err
				}
				v, err := yaml.Marshal(webhook.ValidatingConfiguration("weft-validator", cc))
				if err != nil {
					return err
				}
				if err := os.WriteFile(configOut, []byte(string(m)+"---\n"+string(v)), 0o644); err != nil {
					return fmt.Errorf("--config-out: %w", err)
				}
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("webhook: %w", err)
			}
			if patch {
				rc, err := kubeclient.Config(kubeconfig, "")
				if err != nil {
					return err
				}
				cs, err := kubernetes.NewForConfig(rc)
				if err != nil {
					return err
				}
				p := &webhook.CABundlePatcher{Client: cs, Mutating: mutName, Validating: valName, CABundle: certPEM, Logger: log}
				go p.Run(cmd.Context(), 30*time.Second)
			}
			log.Info("webhook listening", "address", "https://"+ln.Addr().String())
			return srv.Serve(cmd.Context(), ln, cert)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "address", ":15017", "HTTPS listen address")
	f.StringVar(&certFile, "cert", "", "serving certificate PEM (self-signed when empty)")
	f.StringVar(&keyFile, "key", "", "serving key PEM")
	f.StringVar(&hosts, "hosts", "weft.weft-system.svc,localhost,127.0.0.1", "comma list of names/IPs for the self-signed certificate")
	f.StringVar(&configOut, "config-out", "", "write the webhook configurations (YAML) to this file")
	f.StringVar(&url, "url", "", "base URL the API server calls (instead of the service)")
	f.BoolVar(&patch, "patch-ca-bundle", false, "keep the caBundle of --mutating-configuration/--validating-configuration equal to this webhook's certificate (in-cluster or --kubeconfig)")
	f.StringVar(&mutName, "mutating-configuration", "weft-sidecar-injector", "MutatingWebhookConfiguration whose caBundle --patch-ca-bundle maintains (empty: none)")
	f.StringVar(&valName, "validating-configuration", "weft-validator", "ValidatingWebhookConfiguration whose caBundle --patch-ca-bundle maintains (empty: none)")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig for --patch-ca-bundle (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	f.StringVar(&svcNS, "service-namespace", "weft-system", "namespace of the webhook service")
	f.StringVar(&svcName, "service-name", "weft", "name of the webhook service")
	f.StringVar(&cfg.Image, "image", "ghcr.io/weftmesh/weft:"+Version, "weft image for injected containers")
	f.StringVar(&cfg.ControlPlane, "control-plane", "weft.weft-system.svc:15010", "control plane xDS address for injected proxies")
	f.StringVar(&cfg.Revision, "revision", "", "istio.io/rev this injector serves")
	f.StringVar(&cfg.ProxyCPU, "proxy-cpu", "", "proxy CPU request (default 100m; annotation sidecar.istio.io/proxyCPU overrides)")
	f.StringVar(&cfg.ProxyMemory, "proxy-memory", "", "proxy memory request (default 128Mi; annotation sidecar.istio.io/proxyMemory overrides)")
	f.StringVar(&cfg.CAAddress, "ca-address", "", "workload CA HOST:PORT for injected proxies (with the service-account token and the istio-ca-root-cert ConfigMap); empty: no mTLS credentials")
	f.BoolVar(&cfg.CNI, "cni", false, "the weft CNI plugin installs the capture rules: add no iptables init container")
	f.BoolVar(&cfg.HoldApplicationUntilProxyStarts, "hold-application-until-proxy-starts", false, "mesh default for holding application start until the proxy is ready")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
