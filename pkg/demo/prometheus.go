package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PrometheusOptions configure the Prometheus side of a demo run.
type PrometheusOptions struct {
	// ConfigPath is where the scrape config is written: a file, or an
	// existing directory (or a path ending in "/") that gets prometheus.yml.
	// Empty with Run set: DataDir/prometheus.yml.
	ConfigPath string
	// Run starts the `prometheus` binary (Debian package prometheus, found
	// in PATH or at Binary) against the written config.
	Run bool
	// Binary is the Prometheus server to run (default: "prometheus" in PATH).
	Binary string
	// Address is where the started Prometheus serves (default 127.0.0.1:9090).
	Address string
	// Interval is the scrape (and rule evaluation) interval (default 5s).
	Interval time.Duration
}

func (o PrometheusOptions) enabled() bool { return o.ConfigPath != "" || o.Run }

// PrometheusConfig renders a Prometheus configuration that scrapes every
// sidecar's and the gateway's /stats/prometheus (job weft-proxies, the
// equivalent of Istio's envoy-stats job, with namespace, workload, app and
// version target labels) and the control plane's /metrics (job
// weft-control-plane).
func PrometheusConfig(p *Plan, interval time.Duration) []byte {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `weft demo`: scrapes every weft proxy's Istio standard metrics\n")
	fmt.Fprintf(&b, "# and the control plane. Run: prometheus --config.file=THIS_FILE\n")
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", interval, interval)
	fmt.Fprintf(&b, "scrape_configs:\n")
	fmt.Fprintf(&b, "- job_name: weft-proxies\n  metrics_path: /stats/prometheus\n  static_configs:\n")
	for _, w := range append(append([]Workload(nil), p.Workloads...), p.Ingress) {
		ns, _ := identity(w)
		app := w.Service
		fmt.Fprintf(&b, "  - targets: ['127.0.0.1:%d']\n    labels: {namespace: %s, workload: %s, app: %s, version: %s}\n",
			w.Metrics, ns, w.Name(), app, w.Version)
	}
	fmt.Fprintf(&b, "- job_name: weft-control-plane\n  metrics_path: /metrics\n  static_configs:\n")
	fmt.Fprintf(&b, "  - targets: ['%s']\n    labels: {namespace: weft-system, app: weft-control-plane}\n", p.Monitor)
	return []byte(b.String())
}

// prometheusConfigFile resolves where the scrape config goes.
func (m *mesh) prometheusConfigFile() string {
	path := m.o.Prometheus.ConfigPath
	if path == "" {
		return filepath.Join(m.o.DataDir, "prometheus.yml")
	}
	if strings.HasSuffix(path, "/") {
		return filepath.Join(path, "prometheus.yml")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return filepath.Join(path, "prometheus.yml")
	}
	return path
}

// startPrometheus writes the scrape config and, with Run, starts Prometheus
// and waits until it is ready.
func (m *mesh) startPrometheus(ctx context.Context) error {
	po := m.o.Prometheus
	if !po.enabled() {
		return nil
	}
	file := m.prometheusConfigFile()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("prometheus config: %w", err)
	}
	if err := os.WriteFile(file, PrometheusConfig(m.plan, po.Interval), 0o644); err != nil {
		return fmt.Errorf("prometheus config: %w", err)
	}
	m.promConfig = file
	if !po.Run {
		return nil
	}
	bin := po.Binary
	if bin == "" {
		bin = "prometheus"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("--prometheus-run: %s not found (Debian/Ubuntu: apt-get install prometheus); the config is at %s", bin, file)
		}
		return fmt.Errorf("--prometheus-run: %w", err)
	}
	if err := m.spawnCmd("prometheus", path,
		"--config.file="+file,
		"--storage.tsdb.path="+filepath.Join(m.o.DataDir, "prometheus"),
		"--web.listen-address="+m.plan.Prometheus,
		"--web.enable-lifecycle", "--log.level=warn"); err != nil {
		return err
	}
	return m.waitHTTP(ctx, "http://"+m.plan.Prometheus+"/-/ready", "prometheus")
}

const grafanaHint = "  grafana dashboards  manifests/grafana/*.json (import them; data source: this Prometheus)\n"

// prometheusBanner describes the Prometheus side for the banner.
func (m *mesh) prometheusBanner() string {
	switch {
	case m.promConfig == "":
		return ""
	case m.o.Prometheus.Run:
		return fmt.Sprintf("  prometheus          http://%s   (config %s)\n", m.plan.Prometheus, m.promConfig) + grafanaHint
	default:
		return fmt.Sprintf("  prometheus config   %s   (run: prometheus --config.file=%s)\n", m.promConfig, m.promConfig) + grafanaHint
	}
}
