package inject

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

var testCfg = Config{Image: "weft:test", ControlPlane: "weft.weft-system:15010"}

func pod(labels, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: labels, Annotations: ann},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "httpd", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
		}}},
	}
}

func ns(labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: labels}}
}

func TestDecide(t *testing.T) {
	enabled := ns(map[string]string{LabelInjection: "enabled"})
	tests := []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		rev  string
		want bool
	}{
		{"namespace enabled", pod(nil, nil), enabled, "", true},
		{"namespace disabled", pod(nil, nil), ns(map[string]string{LabelInjection: "disabled"}), "", false},
		{"namespace disabled beats pod opt-in", pod(map[string]string{KeyInject: "true"}, nil), ns(map[string]string{LabelInjection: "disabled"}), "", false},
		{"no labels", pod(nil, nil), ns(nil), "", false},
		{"pod label opt-in", pod(map[string]string{KeyInject: "true"}, nil), ns(nil), "", true},
		{"pod annotation opt-in", pod(nil, map[string]string{KeyInject: "true"}), ns(nil), "", true},
		{"pod label opt-out", pod(map[string]string{KeyInject: "false"}, nil), enabled, "", false},
		{"pod label beats annotation", pod(map[string]string{KeyInject: "false"}, map[string]string{KeyInject: "true"}), ns(nil), "", false},
		{"revision match", pod(nil, nil), ns(map[string]string{LabelRevision: "canary"}), "canary", true},
		{"revision mismatch", pod(nil, nil), ns(map[string]string{LabelRevision: "canary"}), "", false},
		{"istio-injection wins over rev", pod(nil, nil), ns(map[string]string{LabelInjection: "enabled", LabelRevision: "other"}), "", true},
		{"pod revision mismatch", pod(map[string]string{KeyInject: "true", LabelRevision: "x"}, nil), ns(nil), "", false},
		{"forced (nil namespace)", pod(nil, nil), nil, "", true},
		{"forced but opted out", pod(nil, map[string]string{KeyInject: "false"}), nil, "", false},
		{"host network", func() *corev1.Pod { p := pod(nil, nil); p.Spec.HostNetwork = true; return p }(), enabled, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testCfg
			cfg.Revision = tc.rev
			got, why := Decide(tc.pod, tc.ns, cfg)
			if got != tc.want {
				t.Fatalf("Decide = %v (%s), want %v", got, why, tc.want)
			}
			out, injected, err := Inject(tc.pod, tc.ns, cfg)
			if err != nil || injected != tc.want {
				t.Fatalf("Inject = %v, %v; want %v", injected, err, tc.want)
			}
			if !injected && out != tc.pod {
				t.Fatalf("not injected but pod changed")
			}
		})
	}
}

func findInit(p *corev1.Pod, name string) *corev1.Container {
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == name {
			return &p.Spec.InitContainers[i]
		}
	}
	return nil
}

func TestInjectShape(t *testing.T) {
	in := pod(map[string]string{"app": "web", "version": "v1"}, nil)
	in.Spec.InitContainers = []corev1.Container{{Name: "user-init", Image: "busybox"}}
	out, ok, err := Inject(in, nil, testCfg)
	if err != nil || !ok {
		t.Fatalf("Inject: %v %v", ok, err)
	}
	if len(in.Spec.InitContainers) != 1 || in.Labels[LabelTLSMode] != "" {
		t.Fatalf("input pod was modified")
	}
	names := []string{}
	for _, c := range out.Spec.InitContainers {
		names = append(names, c.Name)
	}
	if want := []string{InitContainerName, ProxyContainerName, "user-init"}; !slices.Equal(names, want) {
		t.Fatalf("init containers %v, want %v", names, want)
	}
	ic := findInit(out, InitContainerName)
	if ic.Args[0] != "iptables" || *ic.SecurityContext.RunAsUser != 0 || !slices.Contains(ic.SecurityContext.Capabilities.Add, "NET_ADMIN") || !slices.Contains(ic.SecurityContext.Capabilities.Add, "NET_RAW") {
		t.Fatalf("init container: %+v", ic)
	}
	pc := findInit(out, ProxyContainerName)
	if pc.RestartPolicy == nil || *pc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("proxy is not a native sidecar")
	}
	sc := pc.SecurityContext
	if *sc.RunAsUser != 1337 || *sc.RunAsGroup != 1337 || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Fatalf("proxy security context: %+v", sc)
	}
	args := strings.Join(pc.Args, " ")
	for _, want := range []string{"proxy ", "--control-plane weft.weft-system:15010", "--workload $(POD_NAME)", "--namespace $(POD_NAMESPACE)", "--labels app=web,version=v1", "--app-port 80"} {
		if !strings.Contains(args, want) {
			t.Errorf("proxy args %q lack %q", args, want)
		}
	}
	if pc.ReadinessProbe.HTTPGet.Path != "/healthz/ready" || pc.ReadinessProbe.HTTPGet.Port.IntValue() != PortHealth {
		t.Errorf("readiness probe %+v", pc.ReadinessProbe.HTTPGet)
	}
	if pc.StartupProbe != nil {
		t.Errorf("startup probe set without holdApplicationUntilProxyStarts")
	}
	if pc.Ports[0].ContainerPort != PortMetrics {
		t.Errorf("ports %+v", pc.Ports)
	}
	v := out.Spec.Volumes[len(out.Spec.Volumes)-1]
	if v.Name != TokenVolumeName || v.Projected.Sources[0].ServiceAccountToken.Audience != TokenAudience {
		t.Errorf("token volume %+v", v)
	}
	if pc.Resources.Requests.Cpu().String() != "100m" || pc.Resources.Requests.Memory().String() != "128Mi" {
		t.Errorf("resources %v", pc.Resources.Requests)
	}
	if out.Annotations[AnnotationStatus] == "" || out.Labels[LabelTLSMode] != "istio" {
		t.Errorf("status annotation/label missing: %v %v", out.Annotations, out.Labels)
	}
	if _, again, _ := Inject(out, nil, testCfg); again {
		t.Errorf("injected twice")
	}
}

func TestInjectAnnotations(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		check   func(t *testing.T, p *corev1.Pod)
		wantErr string
	}{
		{"exclusions", map[string]string{AnnotationExcludeIn: "8080, 9090", AnnotationExcludeOut: "5432", AnnotationExcludeIPs: "10.0.0.0/8,169.254.169.254/32"}, func(t *testing.T, p *corev1.Pod) {
			args := strings.Join(findInit(p, InitContainerName).Args, " ")
			for _, want := range []string{"--exclude-inbound-ports 15020,15021,15090,8080,9090", "--exclude-outbound-ports 5432", "--exclude-outbound-ip-ranges 10.0.0.0/8,169.254.169.254/32"} {
				if !strings.Contains(args, want) {
					t.Errorf("%q lacks %q", args, want)
				}
			}
		}, ""},
		{"hold application", map[string]string{AnnotationProxyCfg: "holdApplicationUntilProxyStarts: true\n"}, func(t *testing.T, p *corev1.Pod) {
			if findInit(p, ProxyContainerName).StartupProbe == nil {
				t.Error("no startup probe")
			}
		}, ""},
		{"resources", map[string]string{AnnotationProxyCPU: "250m", AnnotationProxyMem: "64Mi"}, func(t *testing.T, p *corev1.Pod) {
			r := findInit(p, ProxyContainerName).Resources.Requests
			if r.Cpu().String() != "250m" || r.Memory().String() != "64Mi" {
				t.Errorf("requests %v", r)
			}
		}, ""},
		{"bad port", map[string]string{AnnotationExcludeIn: "80,http"}, nil, `invalid port "http"`},
		{"port out of range", map[string]string{AnnotationExcludeOut: "70000"}, nil, `invalid port "70000"`},
		{"bad cidr", map[string]string{AnnotationExcludeIPs: "10.0.0.0/33"}, nil, "invalid CIDR"},
		{"bad cpu", map[string]string{AnnotationProxyCPU: "lots"}, nil, `proxy cpu "lots"`},
		{"bad proxy config", map[string]string{AnnotationProxyCfg: "holdApplicationUntilProxyStarts: [1"}, nil, AnnotationProxyCfg},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := Inject(pod(nil, tc.ann), nil, testCfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, out)
		})
	}
}

func TestConfigRequired(t *testing.T) {
	if _, _, err := Inject(pod(nil, nil), nil, Config{ControlPlane: "x:1"}); err == nil {
		t.Fatal("missing image accepted")
	}
}

func TestManifestsSeed(t *testing.T) {
	in, err := os.ReadFile("testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Manifests(bytes.NewReader(in), &out, testCfg); err != nil {
		t.Fatal(err)
	}
	docs := docSep.Split(out.String(), -1)
	if len(docs) != 3 {
		t.Fatalf("%d documents out, want 3:\n%s", len(docs), out.String())
	}
	if !strings.Contains(docs[0], "istio-injection: enabled") || strings.Contains(docs[0], ProxyContainerName) {
		t.Errorf("namespace not passed through:\n%s", docs[0])
	}
	if !strings.Contains(docs[2], "PeerAuthentication") {
		t.Errorf("PeerAuthentication not passed through:\n%s", docs[2])
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	if d.Name != "http-server" || len(spec.Containers) != 1 || spec.Containers[0].Image != "docker.io/httpd:2.4" {
		t.Fatalf("app container lost: %+v", spec.Containers)
	}
	if len(spec.InitContainers) != 2 || spec.InitContainers[1].Name != ProxyContainerName || spec.InitContainers[1].Image != "weft:test" {
		t.Fatalf("no sidecar in %+v", spec.InitContainers)
	}
}

func TestManifestsErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nspec:\n  bogus: 1\n", "bogus"},
		{"bad yaml", "kind: [\n", "parse"},
		{"bad annotation", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    " + AnnotationProxyCPU + ": x\nspec:\n  containers: [{name: a, image: b}]\n", "proxy cpu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Manifests(strings.NewReader(tc.in), &bytes.Buffer{}, testCfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestInjectCNIMode(t *testing.T) {
	cfg := testCfg
	cfg.CNI = true
	ann := map[string]string{AnnotationExcludeIn: "8080", AnnotationExcludeOut: "5432", AnnotationExcludeIPs: "10.0.0.0/8"}
	out, ok, err := Inject(pod(nil, ann), nil, cfg)
	if err != nil || !ok {
		t.Fatalf("Inject = %v, %v", ok, err)
	}
	if findInit(out, InitContainerName) != nil {
		t.Error("CNI mode added the iptables init container")
	}
	if findInit(out, ProxyContainerName) == nil {
		t.Fatal("no proxy container")
	}
	if got := out.Annotations[AnnotationStatus]; !strings.Contains(got, `"initContainers":["weft-proxy"]`) {
		t.Errorf("status annotation %s", got)
	}
	c, err := CaptureConfig(cfg, out.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyUID != 1337 || c.ProxyGID != 1337 || !slices.Equal(c.ExcludeInboundPorts, []uint16{8080}) ||
		!slices.Equal(c.ExcludeOutboundPorts, []uint16{5432}) || len(c.ExcludeOutboundIPRanges) != 1 || c.ExcludeOutboundIPRanges[0].String() != "10.0.0.0/8" {
		t.Errorf("capture config %+v", c)
	}
	// Bad annotations are refused at admission, not at sandbox set-up.
	if _, _, err := Inject(pod(nil, map[string]string{AnnotationExcludeOut: "70000"}), nil, cfg); err == nil || !strings.Contains(err.Error(), AnnotationExcludeOut) {
		t.Errorf("bad annotation in CNI mode: %v", err)
	}
}

func TestInjectCACredentials(t *testing.T) {
	cfg := testCfg
	cfg.CAAddress = "weft.weft-system.svc:15012"
	out, ok, err := Inject(pod(nil, nil), nil, cfg)
	if err != nil || !ok {
		t.Fatalf("Inject = %v, %v", ok, err)
	}
	args := strings.Join(findInit(out, ProxyContainerName).Args, " ")
	for _, want := range []string{"--ca-address weft.weft-system.svc:15012", "--ca-root-cert /var/run/secrets/istio/root-cert.pem", "--ca-token-file /var/run/secrets/tokens/istio-token"} {
		if !strings.Contains(args, want) {
			t.Errorf("proxy args %q lack %q", args, want)
		}
	}
	var root *corev1.Volume
	for i := range out.Spec.Volumes {
		if out.Spec.Volumes[i].Name == RootCertVolumeName {
			root = &out.Spec.Volumes[i]
		}
	}
	if root == nil || root.ConfigMap == nil || root.ConfigMap.Name != "istio-ca-root-cert" {
		t.Fatalf("root certificate volume = %+v", root)
	}
	mounted := false
	for _, m := range findInit(out, ProxyContainerName).VolumeMounts {
		mounted = mounted || m.Name == RootCertVolumeName && m.MountPath == RootCertMountPath
	}
	if !mounted {
		t.Error("root certificate volume not mounted in the proxy")
	}
	// Without a CA address nothing CA-related is added.
	plain, _, _ := Inject(pod(nil, nil), nil, testCfg)
	if a := strings.Join(findInit(plain, ProxyContainerName).Args, " "); strings.Contains(a, "--ca-") || len(plain.Spec.Volumes) != 1 {
		t.Errorf("CA settings without a CA address: %q, %d volumes", a, len(plain.Spec.Volumes))
	}
}
