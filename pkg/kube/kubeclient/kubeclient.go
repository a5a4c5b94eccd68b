// Package kubeclient builds Kubernetes client configuration the way kubectl
// finds it, for the control plane's Kubernetes mode, the installer and the
// webhook.
package kubeclient

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config loads a client configuration: the kubeconfig file path when
// non-empty, else $KUBECONFIG, else ~/.kube/config, else the in-cluster
// service account; kubeContext selects a context ("" = current). The
// request rate limit is raised from client-go's 5/s (an install or an
// informer start-up of ~50 objects would otherwise crawl).
func Config(path, kubeContext string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		if path != "" {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return nil, fmt.Errorf("kubernetes client configuration (no --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster service account): %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}
