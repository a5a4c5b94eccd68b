// Package controlplane wires the `weft control-plane` process: it opens the
// config store (bolt by default, a read-only watched directory with
// ConfigDir), serves the admin API, and runs the extensions other components
// plug in (the xDS server, the dashboard, ...).
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"
	meshv1 "istio.io/api/mesh/v1alpha1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/bolt"
	"github.com/weftmesh/weft/pkg/config/store/file"
	"github.com/weftmesh/weft/pkg/config/store/kube"
	"github.com/weftmesh/weft/pkg/kube/kubeclient"
	"github.com/weftmesh/weft/pkg/kube/leader"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Options configures Run. Only AdminAddress is needed; every other field has
// a default.
type Options struct {
	// DataDir holds the bolt database (DataDir/config.db); created if
	// missing. Ignored when ConfigDir is set. Default DefaultDataDir().
	DataDir string
	// ConfigDir, when set, serves the YAML files of this directory
	// read-only (watched for changes) instead of the bolt store.
	ConfigDir string
	// AdminAddress is host:port of the admin API; port 0 picks a free
	// port (the bound address is logged and written to ReadyFile).
	// Default "127.0.0.1:8080".
	AdminAddress string
	// XDSAddress is host:port for the xDS server, passed to extensions
	// through Env.Options. Default "127.0.0.1:15010".
	XDSAddress string
	// MonitoringAddress is host:port for Prometheus metrics, passed to
	// extensions through Env.Options. Default "127.0.0.1:15014".
	MonitoringAddress string
	// ReadyFile, when set, receives the admin API URL
	// ("http://127.0.0.1:PORT\n") once every listener is up.
	ReadyFile string
	// Version is reported by the admin API's /version.
	Version string
	// Logger receives the process log. Nil discards it.
	Logger *slog.Logger
	// Kube selects Kubernetes mode: Istio resources are the cluster's
	// CRDs (the kube store) and services come from the cluster, using
	// Kubeconfig, or kubectl's defaults / the in-cluster service account
	// when it is "". Setting Kubeconfig implies Kube.
	Kube       bool
	Kubeconfig string
	// Namespace is the control plane's own namespace in Kubernetes mode,
	// where its Leases and CA root Secret live. Default $POD_NAMESPACE,
	// else "default".
	Namespace string
	// Mesh is the mesh config (root namespace, extension providers, ...);
	// nil means meshconfig.Default().
	Mesh *meshv1.MeshConfig
	// Extensions run in order after the store is open and before the admin
	// API serves, so they can add routes.
	Extensions []Extension
}

// Env is what an extension gets from the control plane.
type Env struct {
	// Options are Run's options with defaults filled in.
	Options Options
	// Store is the open config store; Run closes it.
	Store store.Store
	// Admin is the admin API; add routes with Admin.Handle or
	// Admin.Mux() before Setup returns.
	Admin *admin.Server
	// Logger is the control plane's logger.
	Logger *slog.Logger
	// AdminURL is the admin API's bound address as a URL
	// (http://127.0.0.1:PORT), already listening when Setup runs.
	AdminURL string

	group *errgroup.Group
	ctx   context.Context
}

// Go runs fn until the control plane stops. fn must return when ctx ends; an
// error from it stops the whole control plane and is returned by Run.
func (e *Env) Go(name string, fn func(ctx context.Context) error) {
	e.group.Go(func() error {
		if err := fn(e.ctx); err != nil && e.ctx.Err() == nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
}

// Extension adds a component to the control plane (the xDS server, the
// dashboard, ...). Setup is called once, serially, before the admin API
// starts serving: it should bind its listeners (so that the ready file means
// every port is up, and port-0 addresses can be logged), register admin
// routes, and start long-lived work with env.Go. An error aborts start-up.
//
// For example, the xDS server:
//
//	controlplane.ExtensionFunc(func(ctx context.Context, env *controlplane.Env) error {
//		srv, err := server.New(server.Options{Store: env.Store, Logger: env.Logger.With("component", "xds"), ...})
//		if err != nil {
//			return err
//		}
//		lis, err := net.Listen("tcp", env.Options.XDSAddress)
//		if err != nil {
//			return fmt.Errorf("xDS: listen: %w", err)
//		}
//		env.Logger.Info("xDS server listening", "address", lis.Addr().String())
//		srv.RegisterHTTP(env.Admin.Mux())
//		env.Go("xDS pushes", srv.Run)
//		env.Go("xDS server", func(ctx context.Context) error { return srv.Serve(ctx, lis) })
//		return nil
//	})
type Extension interface {
	Setup(ctx context.Context, env *Env) error
}

// ExtensionFunc adapts a function to Extension.
type ExtensionFunc func(ctx context.Context, env *Env) error

// Setup implements Extension.
func (f ExtensionFunc) Setup(ctx context.Context, env *Env) error { return f(ctx, env) }

// DefaultDataDir is ~/.weft, or ./.weft-data when there is no home directory.
func DefaultDataDir() string {
	if h, err := os.UserHomeDir(); err == nil && h != "" {
		return filepath.Join(h, ".weft")
	}
	return ".weft-data"
}

func (o *Options) setDefaults() {
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir()
	}
	if o.AdminAddress == "" {
		o.AdminAddress = "127.0.0.1:8080"
	}
	if o.XDSAddress == "" {
		o.XDSAddress = "127.0.0.1:15010"
	}
	if o.MonitoringAddress == "" {
		o.MonitoringAddress = "127.0.0.1:15014"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Mesh == nil {
		o.Mesh = meshconfig.Default()
	}
	if o.Namespace == "" {
		o.Namespace = os.Getenv("POD_NAMESPACE")
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
}

// OpenStore opens the store Options select: the Kubernetes CRD store in
// Kube mode, the file store over ConfigDir, or the bolt store at
// DataDir/config.db.
func OpenStore(opts Options, log *slog.Logger) (store.Store, string, error) {
	// --config-dir wins over the CRD store in Kubernetes mode: Istio
	// config from the directory, services and identities from the cluster.
	if (opts.Kube || opts.Kubeconfig != "") && opts.ConfigDir == "" {
		cfg, err := kubeclient.Config(opts.Kubeconfig, "")
		if err != nil {
			return nil, "", err
		}
		st, err := kube.Open(context.Background(), kube.Options{Config: cfg, Logger: log.With("store", "kube"), Mesh: opts.Mesh})
		if err != nil {
			return nil, "", err
		}
		return st, "kube:" + cfg.Host, nil
	}
	if opts.ConfigDir != "" {
		st, err := file.Open(opts.ConfigDir, file.Options{Logger: log.With("store", "file")})
		if err != nil {
			return nil, "", err
		}
		return st, "file:" + opts.ConfigDir + " (read-only)", nil
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(opts.DataDir, "config.db")
	st, err := bolt.Open(path, bolt.Options{Logger: log.With("store", "bolt")})
	if err != nil {
		return nil, "", err
	}
	return st, "bolt:" + path, nil
}

// Run runs the control plane until ctx ends, then shuts down gracefully. It
// returns nil after a shutdown caused by ctx.
func Run(ctx context.Context, opts Options) (err error) {
	opts.setDefaults()
	log := opts.Logger
	st, storeDesc, err := OpenStore(opts, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()
	api, err := admin.NewServer(admin.Options{Store: st, Logger: log.With("component", "admin"), Version: opts.Version})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", opts.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin API: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	env := &Env{Options: opts, Store: st, Admin: api, Logger: log, AdminURL: "http://" + lis.Addr().String(), group: g, ctx: gctx}
	for _, ext := range opts.Extensions {
		if err := ext.Setup(gctx, env); err != nil {
			lis.Close()
			cancel() // stop what earlier extensions started
			return errors.Join(fmt.Errorf("start control plane: %w", err), g.Wait())
		}
	}
	if ks, ok := st.(*kube.Store); ok {
		if err := runStatusWriter(env, ks); err != nil {
			lis.Close()
			cancel()
			return errors.Join(err, g.Wait())
		}
	}
	adminURL := "http://" + lis.Addr().String()
	env.Go("admin API", func(ctx context.Context) error { return api.Serve(ctx, lis) })
	log.Info("admin API listening on "+adminURL, "store", storeDesc, "xds", opts.XDSAddress)
	if opts.ReadyFile != "" {
		if err := writeFileAtomic(opts.ReadyFile, []byte(adminURL+"\n")); err != nil {
			log.Error("write ready file", "err", err)
		}
	}
	return g.Wait()
}

// runStatusWriter writes Istio resources' status.validationMessages from
// the replica that holds the "weft-status" Lease in the control plane's
// namespace.
func runStatusWriter(env *Env, ks *kube.Store) error {
	cfg, err := kubeclient.Config(env.Options.Kubeconfig, "")
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("status writer: %w", err)
	}
	lo := leader.Options{Client: cs, Namespace: env.Options.Namespace, Name: "weft-status", Logger: env.Logger.With("component", "status")}
	env.Go("status writer", func(ctx context.Context) error {
		return leader.Run(ctx, lo, func(ctx context.Context) { ks.RunStatusWriter(ctx, 500*time.Millisecond) })
	})
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}
