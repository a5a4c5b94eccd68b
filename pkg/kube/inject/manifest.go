package inject

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var docSep = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// workload is a Kubernetes object that carries a pod template.
type workload interface {
	template() *corev1.PodTemplateSpec
}

type deployment struct{ appsv1.Deployment }
type statefulSet struct{ appsv1.StatefulSet }
type daemonSet struct{ appsv1.DaemonSet }
type replicaSet struct{ appsv1.ReplicaSet }
type job struct{ batchv1.Job }
type cronJob struct{ batchv1.CronJob }
type replicationController struct{ corev1.ReplicationController }

func (d *deployment) template() *corev1.PodTemplateSpec  { return &d.Spec.Template }
func (d *statefulSet) template() *corev1.PodTemplateSpec { return &d.Spec.Template }
func (d *daemonSet) template() *corev1.PodTemplateSpec   { return &d.Spec.Template }
func (d *replicaSet) template() *corev1.PodTemplateSpec  { return &d.Spec.Template }
func (d *job) template() *corev1.PodTemplateSpec         { return &d.Spec.Template }
func (d *cronJob) template() *corev1.PodTemplateSpec     { return &d.Spec.JobTemplate.Spec.Template }
func (d *replicationController) template() *corev1.PodTemplateSpec {
	if d.Spec.Template == nil {
		d.Spec.Template = &corev1.PodTemplateSpec{}
	}
	return d.Spec.Template
}

// newWorkload returns an empty typed object for a kind with a pod template.
func newWorkload(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &deployment{}, true
	case "apps/v1/StatefulSet":
		return &statefulSet{}, true
	case "apps/v1/DaemonSet":
		return &daemonSet{}, true
	case "apps/v1/ReplicaSet":
		return &replicaSet{}, true
	case "batch/v1/Job":
		return &job{}, true
	case "batch/v1/CronJob":
		return &cronJob{}, true
	case "v1/ReplicationController":
		return &replicationController{}, true
	case "v1/Pod":
		return &corev1.Pod{}, true
	}
	return nil, false
}

// Manifests reads a multi-document YAML stream, adds the sidecar to every
// pod and pod template in it (as `istioctl kube-inject` does: namespace
// labels are not consulted, the pod's own sidecar.istio.io/inject=false
// still opts out) and writes the stream to w. Other documents pass through
// unchanged.
func Manifests(r io.Reader, w io.Writer, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("kube-inject: read: %w", err)
	}
	var out [][]byte
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		b, err := injectDoc([]byte(doc), cfg)
		if err != nil {
			return fmt.Errorf("kube-inject: document %d: %w", i+1, err)
		}
		out = append(out, b)
	}
	for i, b := range out {
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return fmt.Errorf("kube-inject: write: %w", err)
			}
		}
		if !bytes.HasSuffix(b, []byte("\n")) {
			b = append(b, '\n')
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("kube-inject: write: %w", err)
		}
	}
	return nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func injectDoc(doc []byte, cfg Config) ([]byte, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	obj, ok := newWorkload(tm.APIVersion, tm.Kind)
	if !ok {
		return doc, nil
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		p, _, err := Inject(o, nil, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", tm.Kind, o.Name, err)
		}
		obj = p
	case workload:
		t := o.template()
		pod := &corev1.Pod{ObjectMeta: t.ObjectMeta, Spec: t.Spec}
		p, _, err := Inject(pod, nil, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tm.Kind, err)
		}
		t.ObjectMeta, t.Spec = p.ObjectMeta, p.Spec
	}
	b, err := yaml.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", tm.Kind, err)
	}
	return b, nil
}
