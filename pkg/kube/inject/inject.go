// Package inject adds the Weft sidecar to Kubernetes pods: the iptables init
// container and the weft proxy as a native sidecar (an init container with
// restartPolicy Always). It is pure: Inject decides from the pod, its
// namespace and a Config, and returns a new pod without touching the input.
package inject

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/pkg/iptables"
)

// Label and annotation keys honoured by Inject (Istio's names).
const (
	LabelInjection       = "istio-injection"         // namespace: enabled|disabled
	LabelRevision        = "istio.io/rev"            // namespace or pod: control plane revision
	KeyInject            = "sidecar.istio.io/inject" // pod label or annotation: "true"|"false"
	AnnotationStatus     = "sidecar.istio.io/status"
	AnnotationProxyCPU   = "sidecar.istio.io/proxyCPU"
	AnnotationProxyMem   = "sidecar.istio.io/proxyMemory"
	AnnotationProxyCfg   = "proxy.istio.io/config"
	AnnotationExcludeIn  = "traffic.sidecar.istio.io/excludeInboundPorts"
	AnnotationExcludeOut = "traffic.sidecar.istio.io/excludeOutboundPorts"
	AnnotationExcludeIPs = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	AnnotationDefaultCtr = "kubectl.kubernetes.io/default-container"
	LabelTLSMode         = "security.istio.io/tlsMode"
)

// Names of what Inject adds to a pod.
const (
	InitContainerName  = "weft-init"
	ProxyContainerName = "weft-proxy"
	TokenVolumeName    = "istio-token"
	TokenMountPath     = "/var/run/secrets/tokens"
	TokenAudience      = "istio-ca"
	RootCertVolumeName = "istiod-ca-cert"
	RootCertMountPath  = "/var/run/secrets/istio"
	RootCertConfigMap  = "istio-ca-root-cert"
)

// Ports the sidecar listens on, excluded from inbound capture.
const (
	PortHealth  = 15021
	PortMetrics = 15090
	PortStatus  = 15020
	PortInbound = 15006
	PortOutbond = 15001
)

// Config is what the injector needs to know about the mesh.
type Config struct {
	// Image is the weft image run by both added containers (required).
	Image string
	// ImagePullPolicy of the added containers; empty leaves the default.
	ImagePullPolicy corev1.PullPolicy
	// ControlPlane is the xDS address HOST:PORT the proxy connects to (required).
	ControlPlane string
	// Revision is the istio.io/rev this injector serves; "" is the default revision.
	Revision string
	// ProxyUID is the uid and gid of the proxy; 0 means 1337.
	ProxyUID int64
	// ProxyCPU and ProxyMemory are the proxy's resource requests; empty
	// means 100m and 128Mi. Pod annotations override them.
	ProxyCPU, ProxyMemory string
	// HoldApplicationUntilProxyStarts is the mesh-wide default; the pod's
	// proxy.istio.io/config annotation overrides it.
	HoldApplicationUntilProxyStarts bool
	// CNI is set when the weft CNI plugin installs the capture rules: no
	// privileged init container is added (see pkg/cni).
	CNI bool
	// CAAddress is the workload CA HOST:PORT; when set the proxy gets its
	// certificate there with its projected service-account token and
	// trusts the root from the istio-ca-root-cert ConfigMap.
	CAAddress string
}

func (c Config) uid() int64 {
	if c.ProxyUID == 0 {
		return 1337
	}
	return c.ProxyUID
}

// Validate reports a Config that cannot produce a working sidecar.
func (c Config) Validate() error {
	if c.Image == "" {
		return fmt.Errorf("inject: image is required")
	}
	if c.ControlPlane == "" {
		return fmt.Errorf("inject: control plane address is required")
	}
	return nil
}

// Decide reports whether a pod in namespace ns gets a sidecar, and why.
// A nil ns means the namespace policy was already applied (by the webhook's
// namespace selector, or because the user ran kube-inject): only the pod's
// own opt-out counts then.
func Decide(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (bool, string) {
	if pod.Spec.HostNetwork {
		return false, "pod uses the host network"
	}
	if Injected(pod) {
		return false, "pod already has " + ProxyContainerName
	}
	podOpt, podSet := podInjectValue(pod)
	if podSet && !podOpt {
		return false, "pod has " + KeyInject + "=false"
	}
	if ns == nil {
		return true, "injection forced"
	}
	if v, ok := ns.Labels[LabelInjection]; ok {
		switch v {
		case "enabled":
			return true, "namespace has " + LabelInjection + "=enabled"
		default:
			return false, "namespace has " + LabelInjection + "=" + v
		}
	}
	if rev, ok := ns.Labels[LabelRevision]; ok {
		if rev == cfg.Revision {
			return true, "namespace has " + LabelRevision + "=" + rev
		}
		return false, fmt.Sprintf("namespace revision %q is not this injector's %q", rev, cfg.Revision)
	}
	if podSet && podOpt {
		if rev, ok := pod.Labels[LabelRevision]; ok && rev != cfg.Revision {
			return false, fmt.Sprintf("pod revision %q is not this injector's %q", rev, cfg.Revision)
		}
		return true, "pod has " + KeyInject + "=true"
	}
	return false, "neither namespace nor pod asks for injection"
}

// podInjectValue reads sidecar.istio.io/inject; the label wins over the annotation.
func podInjectValue(pod *corev1.Pod) (value, set bool) {
	v, ok := pod.Labels[KeyInject]
	if !ok {
		v, ok = pod.Annotations[KeyInject]
	}
	if !ok {
		return false, false
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, false
	}
	return b, true
}

// Injected reports whether pod already has the weft proxy container.
func Injected(pod *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		if c.Name == ProxyContainerName {
			return true
		}
	}
	return false
}

// Inject returns a copy of pod with the sidecar added and true, or the pod
// unchanged and false when Decide says no. Invalid annotations are errors.
func Inject(pod *corev1.Pod, ns *corev1.Namespace, cfg Config) (*corev1.Pod, bool, error) {
	if pod == nil {
		return nil, false, fmt.Errorf("inject: nil pod")
	}
	if ok, _ := Decide(pod, ns, cfg); !ok {
		return pod, false, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, false, err
	}
	out := pod.DeepCopy()
	ann := out.Annotations
	hold, err := holdApplication(ann[AnnotationProxyCfg], cfg.HoldApplicationUntilProxyStarts)
	if err != nil {
		return nil, false, err
	}
	res, err := proxyResources(cfg, ann)
	if err != nil {
		return nil, false, err
	}
	added := []corev1.Container{proxyContainer(cfg, out, res, hold)}
	if cfg.CNI {
		// The CNI plugin reads the same annotations: reject bad ones now,
		// not when the pod's sandbox is set up.
		if _, err := CaptureConfig(cfg, ann); err != nil {
			return nil, false, err
		}
	} else {
		initC, err := initContainer(cfg, ann)
		if err != nil {
			return nil, false, err
		}
		added = append([]corev1.Container{initC}, added...)
	}
	out.Spec.InitContainers = append(added, out.Spec.InitContainers...)
	out.Spec.Volumes = append(out.Spec.Volumes, tokenVolume())
	volumes := []string{TokenVolumeName}
	if cfg.CAAddress != "" {
		out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: RootCertVolumeName, VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: RootCertConfigMap}},
		}})
		volumes = append(volumes, RootCertVolumeName)
	}

	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if _, ok := out.Labels[LabelTLSMode]; !ok {
		out.Labels[LabelTLSMode] = "istio"
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	if _, ok := out.Annotations[AnnotationDefaultCtr]; !ok && len(out.Spec.Containers) > 0 {
		out.Annotations[AnnotationDefaultCtr] = out.Spec.Containers[0].Name
	}
	names := make([]string, len(added))
	for i, c := range added {
		names[i] = c.Name
	}
	status, err := json.Marshal(map[string]any{
		"initContainers": names,
		"volumes":        volumes,
	})
	if err != nil {
		return nil, false, fmt.Errorf("inject: status annotation: %w", err)
	}
	out.Annotations[AnnotationStatus] = string(status)
	return out, true, nil
}

// holdApplication reads holdApplicationUntilProxyStarts from a
// proxy.istio.io/config annotation (ProxyConfig YAML).
func holdApplication(proxyConfig string, def bool) (bool, error) {
	if strings.TrimSpace(proxyConfig) == "" {
		return def, nil
	}
	var pc struct {
		HoldApplicationUntilProxyStarts *bool `json:"holdApplicationUntilProxyStarts"`
	}
	if err := yaml.Unmarshal([]byte(proxyConfig), &pc); err != nil {
		return false, fmt.Errorf("inject: annotation %s: %w", AnnotationProxyCfg, err)
	}
	if pc.HoldApplicationUntilProxyStarts == nil {
		return def, nil
	}
	return *pc.HoldApplicationUntilProxyStarts, nil
}

func proxyResources(cfg Config, ann map[string]string) (corev1.ResourceRequirements, error) {
	cpu, mem := "100m", "128Mi"
	if cfg.ProxyCPU != "" {
		cpu = cfg.ProxyCPU
	}
	if cfg.ProxyMemory != "" {
		mem = cfg.ProxyMemory
	}
	if v, ok := ann[AnnotationProxyCPU]; ok {
		cpu = v
	}
	if v, ok := ann[AnnotationProxyMem]; ok {
		mem = v
	}
	q := corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem} {
		qty, err := resource.ParseQuantity(v)
		if err != nil {
			return corev1.ResourceRequirements{}, fmt.Errorf("inject: proxy %s %q: %w", name, v, err)
		}
		q[name] = qty
	}
	return corev1.ResourceRequirements{Requests: q}, nil
}

// portList validates a comma list of ports from an annotation.
func portList(key, v string) (string, error) {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("inject: annotation %s: invalid port %q", key, p)
		}
		out = append(out, p)
	}
	return strings.Join(out, ","), nil
}

func cidrList(key, v string) (string, error) {
	var out []string
	for _, c := range strings.Split(v, ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if _, _, err := parseCIDR(c); err != nil {
			return "", fmt.Errorf("inject: annotation %s: invalid CIDR %q", key, c)
		}
		out = append(out, c)
	}
	return strings.Join(out, ","), nil
}

// CaptureConfig returns the traffic capture rules for an injected pod with
// annotations ann: Istio's defaults, the proxy's uid/gid, and the
// traffic.sidecar.istio.io/* exclusions. The CNI plugin applies it; the
// init container gets the same settings as `weft iptables` flags.
func CaptureConfig(cfg Config, ann map[string]string) (iptables.Config, error) {
	c := iptables.Defaults()
	c.ProxyUID, c.ProxyGID = uint32(cfg.uid()), uint32(cfg.uid())
	var err error
	if c.ExcludeInboundPorts, err = iptables.ParsePorts(ann[AnnotationExcludeIn]); err != nil {
		return c, fmt.Errorf("inject: annotation %s: %w", AnnotationExcludeIn, err)
	}
	if c.ExcludeOutboundPorts, err = iptables.ParsePorts(ann[AnnotationExcludeOut]); err != nil {
		return c, fmt.Errorf("inject: annotation %s: %w", AnnotationExcludeOut, err)
	}
	if c.ExcludeOutboundIPRanges, err = iptables.ParseCIDRs(ann[AnnotationExcludeIPs]); err != nil {
		return c, fmt.Errorf("inject: annotation %s: %w", AnnotationExcludeIPs, err)
	}
	return c, nil
}

func initContainer(cfg Config, ann map[string]string) (corev1.Container, error) {
	uid := strconv.FormatInt(cfg.uid(), 10)
	excludeIn := []string{strconv.Itoa(PortStatus), strconv.Itoa(PortHealth), strconv.Itoa(PortMetrics)}
	in, err := portList(AnnotationExcludeIn, ann[AnnotationExcludeIn])
	if err != nil {
		return corev1.Container{}, err
	}
	if in != "" {
		excludeIn = append(excludeIn, in)
	}
	args := []string{"iptables",
		"--proxy-uid", uid, "--proxy-gid", uid,
		"--inbound-capture-port", strconv.Itoa(PortInbound),
		"--outbound-capture-port", strconv.Itoa(PortOutbond),
		"--inbound-ports", "*",
		"--outbound-ip-ranges", "*",
		"--exclude-inbound-ports", strings.Join(excludeIn, ","),
	}
	out, err := portList(AnnotationExcludeOut, ann[AnnotationExcludeOut])
	if err != nil {
		return corev1.Container{}, err
	}
	if out != "" {
		args = append(args, "--exclude-outbound-ports", out)
	}
	ips, err := cidrList(AnnotationExcludeIPs, ann[AnnotationExcludeIPs])
	if err != nil {
		return corev1.Container{}, err
	}
	if ips != "" {
		args = append(args, "--exclude-outbound-ip-ranges", ips)
	}
	root := int64(0)
	return corev1.Container{
		Name:            InitContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("10Mi"),
		}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &root,
			RunAsGroup:               &root,
			RunAsNonRoot:             ptr(false),
			ReadOnlyRootFilesystem:   ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			Privileged:               ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
		},
	}, nil
}

func proxyContainer(cfg Config, pod *corev1.Pod, res corev1.ResourceRequirements, hold bool) corev1.Container {
	uid := cfg.uid()
	always := corev1.ContainerRestartPolicyAlways
	args := []string{"proxy",
		"--control-plane", cfg.ControlPlane,
		"--namespace", "$(POD_NAMESPACE)",
		"--workload", "$(POD_NAME)",
		"--service-account", "$(SERVICE_ACCOUNT)",
		"--inbound-address", fmt.Sprintf("0.0.0.0:%d", PortInbound),
		"--outbound-address", fmt.Sprintf("127.0.0.1:%d", PortOutbond),
		"--health-address", fmt.Sprintf("0.0.0.0:%d", PortHealth),
		"--metrics-address", fmt.Sprintf("0.0.0.0:%d", PortMetrics),
		"--status-address", fmt.Sprintf("0.0.0.0:%d", PortStatus),
	}
	if cfg.CAAddress != "" {
		args = append(args, "--ca-address", cfg.CAAddress,
			"--ca-root-cert", RootCertMountPath+"/root-cert.pem",
			"--ca-token-file", TokenMountPath+"/"+TokenVolumeName)
	}
	if l := labelString(pod.Labels); l != "" {
		args = append(args, "--labels", l)
	}
	if p := firstContainerPort(pod); p > 0 {
		args = append(args, "--app-port", strconv.Itoa(int(p)))
	}
	ready := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz/ready", Port: intstr.FromInt32(PortHealth),
		}},
		PeriodSeconds:    2,
		TimeoutSeconds:   3,
		FailureThreshold: 30,
	}
	c := corev1.Container{
		Name:            ProxyContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		RestartPolicy:   &always,
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("SERVICE_ACCOUNT", "spec.serviceAccountName"),
			fieldEnv("INSTANCE_IP", "status.podIP"),
		},
		Ports: []corev1.ContainerPort{
			{Name: "http-envoy-prom", ContainerPort: PortMetrics, Protocol: corev1.ProtocolTCP},
			{Name: "health", ContainerPort: PortHealth, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: ready,
		Resources:      res,
		VolumeMounts:   []corev1.VolumeMount{{Name: TokenVolumeName, MountPath: TokenMountPath, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Privileged:               ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	if cfg.CAAddress != "" {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: RootCertVolumeName, MountPath: RootCertMountPath, ReadOnly: true})
	}
	if hold {
		// Kubernetes starts the next container only once a native sidecar's
		// startup probe succeeds: the application waits for a ready proxy.
		sp := ready.DeepCopy()
		sp.PeriodSeconds = 1
		sp.FailureThreshold = 600
		c.StartupProbe = sp
	}
	return c
}

func tokenVolume() corev1.Volume {
	exp := int64(43200)
	return corev1.Volume{
		Name: TokenVolumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: TokenAudience, ExpirationSeconds: &exp, Path: TokenVolumeName,
			}}},
		}},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

func firstContainerPort(pod *corev1.Pod) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				return p.ContainerPort
			}
		}
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

func parseCIDR(s string) (any, any, error) {
	ip, n, err := net.ParseCIDR(s)
	return ip, n, err
}
