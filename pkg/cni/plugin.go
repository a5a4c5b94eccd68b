// Package cni is the weft CNI plugin: a chained plugin that installs the
// sidecar's traffic capture rules (the same ISTIO_* nat chains `weft
// iptables` writes) inside a pod's network namespace when the container
// runtime sets the pod's network up, so injected pods need no privileged
// NET_ADMIN init container. The runtime executes the `weft` binary under
// the name `weft-cni` (see Main); `weft cni install` puts it in place.
package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/pkg/iptables"
	"github.com/weftmesh/weft/pkg/kube/inject"
)

// PluginType is the plugin's "type" in a CNI network configuration and
// the name of its binary in the CNI bin directory.
const PluginType = "weft-cni"

// NetConf is the plugin's entry in a network configuration list.
type NetConf struct {
	types.PluginConf
	Kubernetes struct {
		// Kubeconfig lets the plugin read the pod from the API server.
		Kubeconfig string `json:"kubeconfig"`
		// ExcludeNamespaces are never captured (the mesh's own namespace,
		// kube-system).
		ExcludeNamespaces []string `json:"exclude_namespaces,omitempty"`
	} `json:"kubernetes"`
	// ProxyUID is the injected proxy's uid and gid; 0 means 1337.
	ProxyUID int64 `json:"proxy_uid,omitempty"`
}

// k8sArgs are the CNI_ARGS a Kubernetes runtime passes.
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // CNI_ARGS key
}

// Main runs the plugin the way a container runtime invokes it: the command
// in CNI_COMMAND, arguments in the CNI_* environment, configuration on
// stdin, the result on stdout. It exits the process.
func Main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:   func(a *skel.CmdArgs) error { return cmdAdd(a, applyInNetNS) },
		Del:   func(*skel.CmdArgs) error { return nil }, // the namespace and its rules go away with the pod
		Check: func(*skel.CmdArgs) error { return nil },
	}, version.All, "weft-cni: installs the Weft sidecar's traffic capture rules in pod network namespaces")
}

// applyFunc installs rules c in the network namespace at path netns.
type applyFunc func(ctx context.Context, netns string, c iptables.Config) error

func applyInNetNS(ctx context.Context, netns string, c iptables.Config) error {
	return inNetNS(netns, func() error { return iptables.Apply(ctx, c) })
}

func parseConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, fmt.Errorf("weft-cni: network configuration: %w", err)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("weft-cni: %w", err)
	}
	return conf, nil
}

// cmdAdd captures the pod's traffic when the pod has the weft sidecar and
// passes the previous plugin's result through unchanged.
func cmdAdd(args *skel.CmdArgs, apply applyFunc) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := add(args, conf, apply); err != nil {
		return err
	}
	return printResult(conf)
}

func printResult(conf *NetConf) error {
	if conf.PrevResult == nil {
		// Run first in the chain (misconfiguration, or a test): an empty
		// result of the requested version keeps the runtime going.
		return types.PrintResult(&current.Result{CNIVersion: current.ImplementedSpecVersion}, conf.CNIVersion)
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

func add(args *skel.CmdArgs, conf *NetConf, apply applyFunc) error {
	var ka k8sArgs
	if err := types.LoadArgs(args.Args, &ka); err != nil {
		return fmt.Errorf("weft-cni: CNI_ARGS: %w", err)
	}
	ns, name := string(ka.K8S_POD_NAMESPACE), string(ka.K8S_POD_NAME)
	if ns == "" || name == "" || slices.Contains(conf.Kubernetes.ExcludeNamespaces, ns) {
		return nil // not a Kubernetes pod, or a namespace the mesh leaves alone
	}
	if conf.Kubernetes.Kubeconfig == "" {
		return fmt.Errorf("weft-cni: kubernetes.kubeconfig is not set in the network configuration")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, err := getPod(ctx, conf.Kubernetes.Kubeconfig, ns, name)
	if err != nil {
		return err
	}
	if !inject.Injected(pod) {
		return nil
	}
	c, err := inject.CaptureConfig(inject.Config{ProxyUID: conf.ProxyUID}, pod.Annotations)
	if err != nil {
		return fmt.Errorf("weft-cni: pod %s/%s: %w", ns, name, err)
	}
	if err := apply(ctx, args.Netns, c); err != nil {
		return fmt.Errorf("weft-cni: pod %s/%s: netns %s: %w", ns, name, args.Netns, err)
	}
	return nil
}

// getPod reads the pod, retrying briefly: the runtime may set the sandbox
// up while the API server is momentarily unreachable.
func getPod(ctx context.Context, kubeconfig, ns, name string) (*corev1.Pod, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("weft-cni: kubeconfig %s: %w", kubeconfig, err)
	}
	rc.Timeout = 5 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("weft-cni: %w", err)
	}
	for {
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return pod, nil
		}
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return nil, fmt.Errorf("weft-cni: get pod %s/%s: %w", ns, name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("weft-cni: get pod %s/%s: %w", ns, name, err)
		case <-time.After(time.Second):
		}
	}
}
