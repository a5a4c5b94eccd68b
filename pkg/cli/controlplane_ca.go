package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/pkg/ca"
	"github.com/weftmesh/weft/pkg/ca/kubeca"
	"github.com/weftmesh/weft/pkg/controlplane"
	"github.com/weftmesh/weft/pkg/kube/leader"
)

// caFlags are the control plane's CA settings. enabled reports whether the
// CA runs, so that the xDS extension can turn on mutual TLS in the
// translation (PeerAuthentication, auto mTLS) only when workloads can get
// certificates.
type caFlags struct {
	addr, trustDomain, cacertsDir string
	credentialsDir                string
	workloadTTL                   time.Duration
}

func (f *caFlags) enabled() bool { return f.addr != "" }

// newCAExtension adds the CA's flags to the control-plane command and
// returns the extension that serves Istio's IstioCertificateService over
// TLS on --ca-address (the control plane's serving certificate is issued by
// the CA itself; its root is DataDir/ca/root-cert.pem). Workloads
// authenticate with join tokens from 'weft token create'.
func newCAExtension(cmd *cobra.Command) (controlplane.Extension, *caFlags) {
	f := &caFlags{}
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "ca-address", "", "serve the workload CA (gRPC over TLS) on this address, e.g. 127.0.0.1:15012; also turns on mutual TLS between sidecars (empty: no CA, plaintext mesh)")
	fl.StringVar(&f.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of issued workload certificates")
	fl.StringVar(&f.cacertsDir, "cacerts-dir", "", "Istio-style plug-in CA directory (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) instead of a generated root")
	fl.DurationVar(&f.workloadTTL, "workload-cert-ttl", ca.DefaultTTL, "lifetime of workload certificates that do not ask for one (sidecars renew at half of it)")
	fl.StringVar(&f.credentialsDir, "credentials-dir", "", "directory of gateway TLS credentials: credentialName NAME is NAME.crt + NAME.key or NAME/tls.crt + NAME/tls.key (watched: a changed file is pushed)")
	return controlplane.ExtensionFunc(func(ctx context.Context, env *controlplane.Env) error {
		if !f.enabled() {
			return nil
		}
		log := env.Logger.With("component", "ca")
		if f.workloadTTL < 2*time.Second {
			return fmt.Errorf("CA: --workload-cert-ttl %s is too short (at least 2s)", f.workloadTTL)
		}
		caOpts := ca.Options{DataDir: env.Options.DataDir, CACertsDir: f.cacertsDir, TrustDomain: f.trustDomain, DefaultTTL: f.workloadTTL, Logger: log}
		var rootSecret *kubeca.RootSecret
		if kubeMode(env.Options) && f.cacertsDir == "" {
			// Every replica and restart signs with one root, kept in a Secret.
			cs, err := kubeClientset(env.Options)
			if err != nil {
				return fmt.Errorf("CA: %w", err)
			}
			rootSecret = &kubeca.RootSecret{Client: cs, Namespace: env.Options.Namespace, Dir: filepath.Join(env.Options.DataDir, "ca")}
			if _, err := rootSecret.Load(ctx); err != nil {
				return fmt.Errorf("CA: %w", err)
			}
		}
		c, err := ca.New(caOpts)
		if err != nil {
			return fmt.Errorf("CA: %w", err)
		}
		if rootSecret != nil {
			switch err := rootSecret.Store(ctx); {
			case errors.Is(err, kubeca.ErrLostRace):
				if _, err := rootSecret.Load(ctx); err != nil {
					return fmt.Errorf("CA: %w", err)
				}
				if c, err = ca.New(caOpts); err != nil {
					return fmt.Errorf("CA: %w", err)
				}
			case err != nil:
				return fmt.Errorf("CA: %w", err)
			}
		}
		tokens, err := ca.NewTokenStore(env.Options.DataDir, nil)
		if err != nil {
			return fmt.Errorf("CA: %w", err)
		}
		var auth ca.Authenticator = tokens
		if kubeMode(env.Options) {
			cs, err := kubeClientset(env.Options)
			if err != nil {
				return fmt.Errorf("CA: %w", err)
			}
			auth = ca.Chain{tokens, kubeca.NewTokenReview(cs)}
			// One replica publishes (the holder of the weft-ca-root-publisher
			// Lease); a new leader starts a fresh publisher.
			pubOpts := kubeca.RootPublisherOptions{Client: cs, Roots: c.RootsPEM, Logger: log.With("component", "root-publisher")}
			if _, err := kubeca.NewRootPublisher(pubOpts); err != nil {
				return fmt.Errorf("CA: %w", err)
			}
			lo := leader.Options{Client: cs, Namespace: env.Options.Namespace, Name: "weft-ca-root-publisher", Logger: log}
			env.Go("CA root publisher", func(ctx context.Context) error {
				return leader.Run(ctx, lo, func(ctx context.Context) {
					pub, err := kubeca.NewRootPublisher(pubOpts)
					if err == nil {
						err = pub.Run(ctx)
					}
					if err != nil && ctx.Err() == nil {
						log.Error("CA root publisher", "err", err)
					}
				})
			})
			log.Info("CA accepts Kubernetes service-account tokens (TokenReview, audience " + kubeca.DefaultAudience + ") and publishes " + kubeca.RootCertConfigMap)
		}
		hosts := []string{"localhost", "127.0.0.1"}
		if h, _, err := net.SplitHostPort(f.addr); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
		src, err := c.NewServingCertSource(hosts)
		if err != nil {
			return fmt.Errorf("CA: serving certificate: %w", err)
		}
		lis, err := net.Listen("tcp", f.addr)
		if err != nil {
			return fmt.Errorf("CA: listen: %w", err)
		}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(src.TLSConfig())))
		ca.RegisterGRPC(srv, c, auth)
		log.Info("CA listening", "address", lis.Addr().String(), "trust_domain", c.TrustDomain())
		env.Go("ca server", func(ctx context.Context) error {
			stop := context.AfterFunc(ctx, srv.GracefulStop)
			defer stop()
			return srv.Serve(lis)
		})
		return nil
	}), f
}
