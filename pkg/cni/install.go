package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeconfigName is the plugin's kubeconfig file in the CNI config dir.
const KubeconfigName = "ZZZ-weft-cni-kubeconfig"

// InstallOptions says where the plugin goes on a node.
type InstallOptions struct {
	// BinDir receives the plugin binary (default /opt/cni/bin).
	BinDir string
	// ConfDir holds the node's CNI network configurations (default
	// /etc/cni/net.d); the first one (in file name order, as runtimes
	// pick it) gets the plugin appended to its chain.
	ConfDir string
	// Binary is the executable copied as BinDir/weft-cni (default: this
	// process's executable).
	Binary string
	// Kubeconfig, when set, is copied for the plugin; otherwise one is
	// written from the pod's in-cluster service account.
	Kubeconfig string
	// ExcludeNamespaces are never captured.
	ExcludeNamespaces []string
	// ProxyUID is the injected proxy's uid/gid (0: 1337).
	ProxyUID int64
	Logger   *slog.Logger
}

func (o *InstallOptions) defaults() error {
	if o.BinDir == "" {
		o.BinDir = "/opt/cni/bin"
	}
	if o.ConfDir == "" {
		o.ConfDir = "/etc/cni/net.d"
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("weft-cni install: %w", err)
		}
		o.Binary = exe
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ErrNoNetworkConfig means the node has no CNI configuration yet (the
// primary network plugin is not installed); Run waits for one.
var ErrNoNetworkConfig = errors.New("no CNI network configuration")

// Install copies the plugin binary and its kubeconfig into place and adds
// the plugin to the end of the node's primary network configuration list.
// It is idempotent: an existing weft-cni entry is replaced, not duplicated.
// It returns the configuration file it changed.
func Install(o InstallOptions) (string, error) {
	if err := o.defaults(); err != nil {
		return "", err
	}
	if err := copyFile(o.Binary, filepath.Join(o.BinDir, PluginType), 0o755); err != nil {
		return "", fmt.Errorf("weft-cni install: binary: %w", err)
	}
	kc := filepath.Join(o.ConfDir, KubeconfigName)
	if err := writeKubeconfig(o.Kubeconfig, kc); err != nil {
		return "", fmt.Errorf("weft-cni install: kubeconfig: %w", err)
	}
	return ensureChain(o)
}

// ensureChain adds the plugin to the primary configuration list unless it
// is there already as wanted; it returns the list's file.
func ensureChain(o InstallOptions) (string, error) {
	kc := filepath.Join(o.ConfDir, KubeconfigName)
	file, err := primaryConfig(o.ConfDir)
	if err != nil {
		return "", err
	}
	list, err := readConfList(file)
	if err != nil {
		return "", err
	}
	entry := map[string]any{"type": PluginType, "kubernetes": map[string]any{"kubeconfig": kc, "exclude_namespaces": o.ExcludeNamespaces}}
	if o.ProxyUID != 0 {
		entry["proxy_uid"] = o.ProxyUID
	}
	plugins := list["plugins"].([]any)
	out := strings.TrimSuffix(file, ".conf")
	if !strings.HasSuffix(out, ".conflist") {
		out += ".conflist"
	}
	if out == file && len(plugins) > 0 && sameJSON(plugins[len(plugins)-1], entry) && len(withoutWeft(plugins)) == len(plugins)-1 {
		return file, nil // already last in the chain, exactly once
	}
	list["plugins"] = append(withoutWeft(plugins), entry)
	if err := writeJSON(out, list); err != nil {
		return "", err
	}
	if out != file {
		// A single-plugin .conf became a .conflist chain.
		if err := os.Remove(file); err != nil {
			return "", fmt.Errorf("weft-cni install: %w", err)
		}
	}
	o.Logger.Info("weft-cni added to the network configuration", "config", out)
	return out, nil
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// Uninstall removes the plugin from every configuration list in ConfDir,
// and its binary and kubeconfig. Missing pieces are not an error.
func Uninstall(o InstallOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	files, err := configFiles(o.ConfDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		if !strings.HasSuffix(f, ".conflist") {
			continue
		}
		list, err := readConfList(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plugins := list["plugins"].([]any)
		if kept := withoutWeft(plugins); len(kept) != len(plugins) {
			list["plugins"] = kept
			errs = append(errs, writeJSON(f, list))
		}
	}
	for _, p := range []string{filepath.Join(o.BinDir, PluginType), filepath.Join(o.ConfDir, KubeconfigName)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run keeps the plugin installed until ctx ends (the installer DaemonSet's
// main loop): it installs, re-checks every interval (the primary plugin
// may rewrite its configuration and drop the entry), and uninstalls on the
// way out so a node without the installer does not keep a stale chain
// entry.
func Run(ctx context.Context, o InstallOptions, interval time.Duration) error {
	if err := o.defaults(); err != nil {
		return err
	}
	install := Install
	for {
		if _, err := install(o); err != nil {
			o.Logger.Warn("weft-cni install", "err", err)
		} else {
			// Binary and kubeconfig are in place; later rounds only
			// re-check the chain.
			install = ensureChain
		}
		select {
		case <-ctx.Done():
			return Uninstall(o)
		case <-time.After(interval):
		}
	}
}

func withoutWeft(plugins []any) []any {
	return slices.DeleteFunc(slices.Clone(plugins), func(p any) bool {
		m, ok := p.(map[string]any)
		return ok && m["type"] == PluginType
	})
}

func configFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("weft-cni: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".conf", ".conflist", ".json":
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

func primaryConfig(dir string) (string, error) {
	files, err := configFiles(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("weft-cni install: %w in %s (is the primary network plugin installed?)", ErrNoNetworkConfig, dir)
	}
	return files[0], nil
}

// readConfList reads a .conflist, or a single-plugin .conf as a list of
// one, as generic JSON so fields weft does not know survive.
func readConfList(file string) (map[string]any, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("weft-cni: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("weft-cni: %s: %w", file, err)
	}
	if ps, ok := m["plugins"]; ok {
		if _, ok := ps.([]any); !ok {
			return nil, fmt.Errorf("weft-cni: %s: plugins: want a list", file)
		}
		return m, nil
	}
	if _, ok := m["type"]; !ok {
		return nil, fmt.Errorf("weft-cni: %s: neither a plugin (type) nor a list (plugins)", file)
	}
	list := map[string]any{"cniVersion": m["cniVersion"], "name": m["name"], "plugins": []any{m}}
	return list, nil
}

func writeJSON(file string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("weft-cni: %s: %w", file, err)
	}
	return writeAtomic(file, append(b, '\n'), 0o644)
}

func writeAtomic(file string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp")
	if err != nil {
		return fmt.Errorf("weft-cni: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("weft-cni: %s: %w", file, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("weft-cni: %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("weft-cni: %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("weft-cni: %s: %w", file, err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	b, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	return writeAtomic(dst, b, mode)
}

// writeKubeconfig copies src, or, when src is "", writes a kubeconfig from
// the in-cluster service account (token and CA inlined: the plugin runs
// on the host, outside the installer pod's mounts).
func writeKubeconfig(src, dst string) error {
	if src != "" {
		return copyFile(src, dst, 0o600)
	}
	const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return fmt.Errorf("not running in a cluster (KUBERNETES_SERVICE_HOST unset) and no --kubeconfig given")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: "https://" + net.JoinHostPort(host, port), CertificateAuthorityData: ca}
	cfg.AuthInfos["weft-cni"] = &clientcmdapi.AuthInfo{Token: strings.TrimSpace(string(token))}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "weft-cni"}
	cfg.CurrentContext = "local"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeAtomic(dst, b, 0o600)
}
