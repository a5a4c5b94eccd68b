package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	meshv1 "istio.io/api/mesh/v1alpha1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/pkg/controlplane"
	"github.com/weftmesh/weft/pkg/credentials"
	kubecreds "github.com/weftmesh/weft/pkg/kube/credentials"
	"github.com/weftmesh/weft/pkg/kube/kubeclient"
	"github.com/weftmesh/weft/pkg/registry"
	regkube "github.com/weftmesh/weft/pkg/registry/kube"
	xdsserver "github.com/weftmesh/weft/pkg/xds/server"
)

// kubeSyncTimeout bounds how long start-up waits for the Kubernetes
// registry's first full view (so that the first pushes are complete).
const kubeSyncTimeout = 60 * time.Second

// newXDSExtension adds the xDS server's flags to the control-plane command
// and returns the extension that runs it (reading the flags at start-up).
// In Kubernetes mode (--kube, --kubeconfig) the registry is also fed from the cluster's Services,
// EndpointSlices, Pods, Nodes and Namespaces.
func newXDSExtension(cmd *cobra.Command, caf *caFlags) controlplane.Extension {
	o := &xdsserver.ExtensionOptions{}
	cmd.Flags().DurationVar(&o.Debounce, "debounce", 100*time.Millisecond, "quiet time after a config or registry change before pushing to proxies")
	return controlplane.ExtensionFunc(func(ctx context.Context, env *controlplane.Env) error {
		o.MTLS = caf.enabled()
		creds, err := credentialSources(ctx, env, caf.credentialsDir)
		if err != nil {
			return err
		}
		o.Credentials = creds
		if caf.enabled() && caf.trustDomain != env.Options.Mesh.GetTrustDomain() {
			// Auto mTLS checks peers' SPIFFE IDs in the CA's trust domain.
			m := proto.Clone(env.Options.Mesh).(*meshv1.MeshConfig)
			m.TrustDomain = caf.trustDomain
			e := *env
			e.Options.Mesh = m
			env = &e
		}
		if kubeMode(env.Options) {
			reg, err := startKubeRegistry(ctx, env)
			if err != nil {
				return err
			}
			o.Registry = reg
		}
		return xdsserver.Extension(*o).Setup(ctx, env)
	})
}

// credentialSources returns where gateway credentialNames are resolved:
// Kubernetes Secrets in kube mode, then the --credentials-dir files (both
// watched, so a changed credential is pushed); nil when neither applies.
func credentialSources(ctx context.Context, env *controlplane.Env, dir string) (credentials.Source, error) {
	var chain credentials.Chain
	if kubeMode(env.Options) {
		cs, err := kubeClientset(env.Options)
		if err != nil {
			return nil, fmt.Errorf("gateway credentials: %w", err)
		}
		sec, err := kubecreds.New(kubecreds.Options{Client: cs, Logger: env.Logger.With("component", "kube-credentials")})
		if err != nil {
			return nil, err
		}
		env.Go("gateway credential secrets", sec.Run)
		sctx, cancel := context.WithTimeout(ctx, kubeSyncTimeout)
		defer cancel()
		if !sec.WaitForSync(sctx) {
			return nil, fmt.Errorf("gateway credentials: no full list of Secrets after %s (may the control plane list and watch secrets?)", kubeSyncTimeout)
		}
		chain = append(chain, sec)
	}
	if dir != "" {
		d := credentials.NewDir(dir, env.Logger.With("component", "credentials"))
		env.Go("credentials dir watch", d.Run)
		chain = append(chain, d)
	}
	switch len(chain) {
	case 0:
		return nil, nil
	case 1:
		return chain[0], nil
	}
	return chain, nil
}

// kubeMode reports whether the control plane serves a Kubernetes cluster
// (--kube or --kubeconfig).
func kubeMode(o controlplane.Options) bool { return o.Kube || o.Kubeconfig != "" }

// kubeClientset connects to the cluster of --kubeconfig, else kubectl's
// default kubeconfig or the in-cluster service account.
func kubeClientset(o controlplane.Options) (kubernetes.Interface, error) {
	rc, err := kubeclient.Config(o.Kubeconfig, "")
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

// startKubeRegistry runs the Kubernetes registry source and waits for its
// first full view.
func startKubeRegistry(ctx context.Context, env *controlplane.Env) (*registry.Registry, error) {
	cs, err := kubeClientset(env.Options)
	if err != nil {
		return nil, fmt.Errorf("kubernetes registry: %w", err)
	}
	reg := registry.New(env.Logger.With("component", "registry"))
	ctl, err := regkube.New(regkube.Options{Client: cs, Registry: reg, Logger: env.Logger.With("component", "kube-registry")})
	if err != nil {
		return nil, err
	}
	env.Go("kubernetes registry", ctl.Run)
	t := time.NewTimer(kubeSyncTimeout)
	defer t.Stop()
	select {
	case <-ctl.Synced():
		return reg, nil
	case <-t.C:
		return nil, fmt.Errorf("kubernetes registry: no full view of the cluster after %s (is the API server reachable, and may the control plane list services, endpointslices, pods, nodes and namespaces?)", kubeSyncTimeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
