package cni

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const bridgeList = `{
  "cniVersion": "1.0.0",
  "name": "k8s-pod-network",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "10.88.0.0/16"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`

func installDirs(t *testing.T) InstallOptions {
	t.Helper()
	dir := t.TempDir()
	o := InstallOptions{BinDir: filepath.Join(dir, "bin"), ConfDir: filepath.Join(dir, "net.d"), ExcludeNamespaces: []string{"weft-system", "kube-system"}}
	for _, d := range []string{o.BinDir, o.ConfDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o.Binary = filepath.Join(dir, "weft")
	o.Kubeconfig = filepath.Join(dir, "kubeconfig")
	for f, data := range map[string]string{o.Binary: "#!/bin/true\n", o.Kubeconfig: "apiVersion: v1\nkind: Config\n"} {
		if err := os.WriteFile(f, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

func plugins(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatalf("%s: %v\n%s", file, err, b)
	}
	if l.Name == "" {
		t.Errorf("%s lost its name", file)
	}
	return l.Plugins
}

func TestInstallAppendsOnceAndUninstalls(t *testing.T) {
	o := installDirs(t)
	list := filepath.Join(o.ConfDir, "10-bridge.conflist")
	if err := os.WriteFile(list, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	// A later file in name order is not the runtime's pick.
	later := filepath.Join(o.ConfDir, "99-other.conflist")
	if err := os.WriteFile(later, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		got, err := Install(o)
		if err != nil {
			t.Fatal(err)
		}
		if got != list {
			t.Fatalf("installed into %s, want %s", got, list)
		}
	}
	ps := plugins(t, list)
	if len(ps) != 3 || ps[0]["type"] != "bridge" || ps[1]["type"] != "portmap" || ps[2]["type"] != PluginType {
		t.Fatalf("chain = %v", ps)
	}
	if ipam, _ := ps[0]["ipam"].(map[string]any); ipam["subnet"] != "10.88.0.0/16" {
		t.Errorf("bridge settings lost: %v", ps[0])
	}
	k8s, _ := ps[2]["kubernetes"].(map[string]any)
	if k8s["kubeconfig"] != filepath.Join(o.ConfDir, KubeconfigName) || len(k8s["exclude_namespaces"].([]any)) != 2 {
		t.Errorf("weft entry = %v", ps[2])
	}
	if len(plugins(t, later)) != 2 {
		t.Error("a non-primary configuration was changed")
	}
	for _, f := range []string{filepath.Join(o.BinDir, PluginType), filepath.Join(o.ConfDir, KubeconfigName)} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(o.BinDir, PluginType)); fi == nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("plugin binary mode = %v", fi)
	}

	if err := Uninstall(o); err != nil {
		t.Fatal(err)
	}
	if ps := plugins(t, list); len(ps) != 2 {
		t.Errorf("after uninstall: %v", ps)
	}
	for _, f := range []string{filepath.Join(o.BinDir, PluginType), filepath.Join(o.ConfDir, KubeconfigName)} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	if err := Uninstall(o); err != nil {
		t.Errorf("second uninstall: %v", err)
	}
}

func TestInstallConvertsSingleConf(t *testing.T) {
	o := installDirs(t)
	conf := filepath.Join(o.ConfDir, "10-bridge.conf")
	if err := os.WriteFile(conf, []byte(`{"cniVersion":"0.4.0","name":"bridge-net","type":"bridge","bridge":"cni0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Install(o)
	if err != nil {
		t.Fatal(err)
	}
	if got != filepath.Join(o.ConfDir, "10-bridge.conflist") {
		t.Fatalf("wrote %s", got)
	}
	if _, err := os.Stat(conf); !errors.Is(err, os.ErrNotExist) {
		t.Error("the .conf was left beside its .conflist (the runtime would pick the .conf)")
	}
	ps := plugins(t, got)
	if len(ps) != 2 || ps[0]["bridge"] != "cni0" || ps[1]["type"] != PluginType {
		t.Fatalf("chain = %v", ps)
	}
}

func TestInstallErrors(t *testing.T) {
	o := installDirs(t)
	if _, err := Install(o); !errors.Is(err, ErrNoNetworkConfig) {
		t.Errorf("empty conf dir: %v", err)
	}
	bad := filepath.Join(o.ConfDir, "10-bad.conflist")
	if err := os.WriteFile(bad, []byte(`{"name":"x","plugins":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("malformed list: %v", err)
	}
	if err := os.WriteFile(bad, []byte(`{"name":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad JSON: %v", err)
	}
}

// TestRunRepairsAndCleansUp: the primary plugin rewriting its
// configuration drops the weft entry; Run puts it back, and removes it when
// stopped.
func TestRunRepairsAndCleansUp(t *testing.T) {
	o := installDirs(t)
	list := filepath.Join(o.ConfDir, "10-bridge.conflist")
	if err := os.WriteFile(list, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, 20*time.Millisecond) }()
	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(plugins(t, list)) != n {
			if time.Now().After(deadline) {
				t.Fatalf("chain never had %d plugins: %v", n, plugins(t, list))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(3)
	if err := os.WriteFile(list, []byte(bridgeList), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ps := plugins(t, list); len(ps) != 2 {
		t.Errorf("after stop: %v", ps)
	}
}
