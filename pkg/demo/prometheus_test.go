package demo

import (
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestPrometheusConfig(t *testing.T) {
	p, err := MakePlan(Options{BasePort: 21000})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global struct {
			ScrapeInterval string `yaml:"scrape_interval"`
		}
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string
				Labels  map[string]string
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(PrometheusConfig(p, 2*time.Second), &cfg); err != nil {
		t.Fatalf("generated config is not YAML: %v", err)
	}
	if cfg.Global.ScrapeInterval != "2s" {
		t.Errorf("scrape_interval %q, want 2s", cfg.Global.ScrapeInterval)
	}
	if len(cfg.ScrapeConfigs) != 2 {
		t.Fatalf("%d jobs, want weft-proxies and weft-control-plane", len(cfg.ScrapeConfigs))
	}
	proxies, cp := cfg.ScrapeConfigs[0], cfg.ScrapeConfigs[1]
	if proxies.JobName != "weft-proxies" || proxies.MetricsPath != "/stats/prometheus" || len(proxies.StaticConfigs) != 7 {
		t.Errorf("proxies job: %+v", proxies)
	}
	want := map[string]bool{}
	for _, w := range append(p.Workloads, p.Ingress) {
		want[w.Name()] = true
	}
	for _, sc := range proxies.StaticConfigs {
		if len(sc.Targets) != 1 || !want[sc.Labels["workload"]] {
			t.Errorf("unexpected target %+v", sc)
		}
		delete(want, sc.Labels["workload"])
	}
	if len(want) != 0 {
		t.Errorf("workloads without a scrape target: %v", want)
	}
	if cp.JobName != "weft-control-plane" || cp.StaticConfigs[0].Targets[0] != p.Monitor {
		t.Errorf("control plane job: %+v", cp)
	}
}

func TestPrometheusConfigFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{"", filepath.Join(dir, "prometheus.yml")},
		{dir, filepath.Join(dir, "prometheus.yml")},
		{filepath.Join(dir, "sub") + "/", filepath.Join(dir, "sub", "prometheus.yml")},
		{filepath.Join(dir, "p.yaml"), filepath.Join(dir, "p.yaml")},
	} {
		m := &mesh{o: Options{DataDir: dir, Prometheus: PrometheusOptions{ConfigPath: tc.path}}}
		if got := m.prometheusConfigFile(); got != tc.want {
			t.Errorf("--prometheus %q: file %q, want %q", tc.path, got, tc.want)
		}
	}
}
