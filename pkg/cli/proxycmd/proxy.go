package proxycmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/filter/extauthz"
	"github.com/weftmesh/weft/pkg/proxy/filter/jwt"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/proxy/filter/wasm"
)

// New returns the `proxy` command.
func New(cfg Config) *cobra.Command {
	var (
		proxyBinary       string
		o                 proxy.Options
		labels, accessLog string
		logLevel          string
		drain             time.Duration
		gwAddrs           []string
		rts               proxy.RuntimeSettings
		memLimit          string
		wasmCache         string
		releasePages      bool
	)
	mt := &proxyMTLSFlags{}
	cmd := &cobra.Command{
		Use:   "proxy [flags] [-- CMD ARGS...]",
		Short: "Run the Weft sidecar proxy (xDS-driven data plane)",
		Long: `Runs the sidecar proxy in explicit mode: applications send outbound HTTP to
--outbound-address (as HTTP_PROXY, or with a mesh Host header, or CONNECT), and
mesh traffic for this workload arrives on --inbound-address and is forwarded to
--app-port. Configuration comes from the control plane over ADS.

With "-- CMD ARGS", the command is started once the proxy has its first
complete configuration, signals are forwarded to it, and weft exits with its
exit code. POST /quitquitquit on the status (or admin) address drains and exits.
Use HOST:0 addresses to bind ephemeral ports; --ready-file receives the bound
addresses as JSON.

With --gateway the proxy is an ingress/egress gateway (node type "router",
no application): it binds the listeners the control plane sends for the
Gateway servers selecting its --labels, on --gateway-bind-host:PORT, or where
--gateway-address PORT=HOST:PORT says (e.g. 8000=127.0.0.1:18000). Listeners
come and go with the configuration; HTTPS servers terminate TLS with the
credential's certificate (SNI selects it), PASSTHROUGH routes by SNI.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.ExecProxyBinary {
				// Before anything else: the proxy-only build replaces this
				// process (same PID, same arguments) if it is there.
				if err := execProxyBinary(proxyBinary, cmd.ErrOrStderr()); err != nil {
					return &ExitError{Code: 2, Err: fmt.Errorf("--proxy-binary: %w", err)}
				}
			} else {
				os.Unsetenv(execedEnv) // not inherited by the application
			}
			lv := new(slog.LevelVar)
			if err := lv.UnmarshalText([]byte(strings.ToUpper(logLevel))); err != nil {
				return &ExitError{Code: 2, Err: fmt.Errorf("--log-level: %w", err)}
			}
			o.LogLevel = lv
			ml, err := proxy.ParseByteSize(memLimit)
			if err != nil {
				return &ExitError{Code: 2, Err: fmt.Errorf("--memory-limit: %w", err)}
			}
			rts.MemoryLimit = ml
			if scaler := rts.Apply(cmd.Flags().Changed); scaler != nil {
				go func() {
					if err := scaler.Run(cmd.Context()); err != nil {
						fmt.Fprintln(cmd.ErrOrStderr(), err) // keeps running with the maximum
					}
				}()
				o.StatsCollectors = append(o.StatsCollectors, scaler) // server.concurrency on /stats
			}
			stdout, stderr := lockWriter(cmd.OutOrStdout()), lockWriter(cmd.ErrOrStderr())
			o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
			o.HTTPFilters = rbac.Filters(o.Logger, rbac.WithDestinationPort(o.AppPort)) // envoy.filters.http.rbac (AuthorizationPolicy)
			o.NetworkFilters = rbac.NetworkFilters(o.Logger)                            // envoy.filters.network.rbac (AuthorizationPolicy on TCP)
			maps.Copy(o.HTTPFilters, jwt.Filters(o.Logger))                             // envoy.filters.http.jwt_authn (RequestAuthentication)
			var px atomic.Pointer[proxy.Proxy]                                          // ext_authz checks go through the proxy's clusters
			clusters := extauthz.WithClusters(func() *cluster.Set {
				if p := px.Load(); p != nil && p.Runtime() != nil {
					return p.Runtime().Clusters
				}
				return nil
			})
			maps.Copy(o.HTTPFilters, extauthz.Filters(o.Logger, clusters))           // envoy.filters.http.ext_authz (AuthorizationPolicy CUSTOM)
			maps.Copy(o.NetworkFilters, extauthz.NetworkFilters(o.Logger, clusters)) // envoy.filters.network.ext_authz (CUSTOM on TCP)
			wasmEngine, err := wasm.NewEngine(cmd.Context(), o.Logger.With("component", "wasm"), wasm.WithModuleCacheDir(wasmCache))
			if err != nil {
				return fmt.Errorf("wasm runtime: %w", err)
			}
			defer wasmEngine.Close(context.Background())
			maps.Copy(o.HTTPFilters, wasmEngine.Filters())            // envoy.filters.http.wasm (WasmPlugin, EnvoyFilter)
			o.StatsCollectors = append(o.StatsCollectors, wasmEngine) // plugin metrics on /stats/prometheus
			o.DrainTimeout = drain
			o.ReleaseMemoryAfterUpdate = releasePages
			if o.Capture { // redirected traffic arrives on the pod's addresses
				if !cmd.Flags().Changed("outbound-address") {
					o.OutboundAddress = "0.0.0.0:15001"
				}
				if !cmd.Flags().Changed("inbound-address") {
					o.InboundAddress = "0.0.0.0:15006"
				}
			}
			o.GatewayAddresses = map[int]string{}
			for _, a := range gwAddrs {
				port, addr, err := proxy.ParseGatewayAddress(a)
				if err != nil {
					return &ExitError{Code: 2, Err: fmt.Errorf("--gateway-address: %w", err)}
				}
				o.GatewayAddresses[port] = addr
			}
			if o.Labels, err = parseLabels(labels); err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			switch accessLog {
			case "":
			case "-", "/dev/stdout":
				o.AccessLog = stdout
			default:
				f, err := os.OpenFile(accessLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
				if err != nil {
					return fmt.Errorf("--access-log: %w", err)
				}
				defer f.Close()
				o.AccessLog = f
			}
			mt.resolveSDSSocket(o.Namespace, o.Workload)
			if o.MTLS, err = mt.start(cmd.Context(), o.Logger, o.Namespace, o.ServiceAccount); err != nil {
				return err
			}
			p, err := proxy.New(o)
			if err != nil {
				return &ExitError{Code: 2, Err: err}
			}
			px.Store(p)
			wasmEngine.SetHTTPCaller(p.HTTPCall) // proxy_http_call through the cluster manager
			if releasePages {
				go func() {
					select {
					case <-p.Ready():
					case <-cmd.Context().Done():
						return
					}
					if n, err := proxy.ReleaseStartupPages(); err != nil {
						o.Logger.Warn("release startup pages", "err", err)
					} else {
						o.Logger.Debug("released startup pages of the executable", "bytes", n)
					}
				}()
			}
			return runProxy(cmd.Context(), p, args, stdout, stderr, o.Logger)
		},
	}
	f := cmd.Flags()
	mt.register(f)
	f.StringVar(&o.ControlPlane, "control-plane", "127.0.0.1:15010", "control plane ADS address HOST:PORT")
	f.BoolVar(&o.XDSDelta, "xds-delta", true, "speak delta xDS to the control plane (a weft control plane then sends only changed resources and route tables as per-host VHDS virtual hosts); false: state of the world")
	f.StringVar(&o.Namespace, "namespace", "default", "workload namespace")
	f.StringVar(&o.Workload, "workload", "", "workload (pod) name (required)")
	f.StringVar(&labels, "labels", "", "workload labels k=v,k2=v2")
	f.StringVar(&o.ServiceAccount, "service-account", "default", "service account")
	f.StringVar(&o.ClusterID, "cluster-id", os.Getenv("ISTIO_META_CLUSTER_ID"), "mesh cluster id for the source_cluster/destination_cluster metric labels (default $ISTIO_META_CLUSTER_ID, else Kubernetes)")
	f.IntVar(&o.AppPort, "app-port", 0, "local application port inbound traffic goes to")
	f.StringArrayVar(&o.Services, "service", nil, "service this workload serves, NAME:PORT[/PROTOCOL] (repeatable)")
	f.StringVar(&o.OutboundAddress, "outbound-address", "127.0.0.1:15001", "outbound listener HOST:PORT")
	f.StringVar(&o.InboundAddress, "inbound-address", "127.0.0.1:15006", "inbound listener HOST:PORT")
	f.StringVar(&o.AdminAddress, "admin-address", "127.0.0.1:15000", "admin listener HOST:PORT (empty disables)")
	f.StringVar(&o.MetricsAddress, "metrics-address", "127.0.0.1:15090", "Prometheus metrics listener HOST:PORT (empty disables)")
	f.StringVar(&o.HealthAddress, "health-address", "127.0.0.1:15021", "readiness listener HOST:PORT (empty disables)")
	f.StringVar(&o.StatusAddress, "status-address", "127.0.0.1:15020", "status listener (/quitquitquit, merged /stats/prometheus) HOST:PORT (empty disables)")
	f.StringVar(&o.ReadyFile, "ready-file", "", "write the bound addresses as JSON to this file once listening")
	f.StringVar(&accessLog, "access-log", "-", "JSON access log destination: - for stdout, a file path, or empty to disable")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.BoolVar(&o.Capture, "capture", false, "transparent capture mode: route by SO_ORIGINAL_DST on the outbound/inbound listeners (use with `weft iptables`; run the proxy as gid 1337)")
	f.BoolVar(&o.Gateway, "gateway", false, "run as a gateway (router node) serving the Gateway listeners from LDS")
	f.StringVar(&o.GatewayBindHost, "gateway-bind-host", "127.0.0.1", "host gateway listeners bind on (their port comes from the Gateway server)")
	f.StringArrayVar(&gwAddrs, "gateway-address", nil, "bind a gateway listener elsewhere: PORT=HOST:PORT, or HOST:PORT for the same port (repeatable)")
	f.DurationVar(&drain, "drain-timeout", 5*time.Second, "how long to wait for in-flight requests on shutdown")
	f.IntVar(&rts.Concurrency, "concurrency", 2, "OS threads running proxy code (GOMAXPROCS), like Istio's proxy concurrency; 0 uses every CPU; $GOMAXPROCS wins unless the flag is set")
	f.BoolVar(&rts.AdaptiveConcurrency, "adaptive-concurrency", true, "run proxy code on one thread while the proxy uses under 0.2 CPU for 2 s, and on --concurrency threads once it uses 0.4 CPU or more (saves the idle thread's spinning at low load); false keeps --concurrency threads")
	f.BoolVar(&releasePages, "release-startup-pages", true, "once configured, unmap the executable's code/read-only pages touched during startup (madvise DONTNEED; they stay in the page cache and fault back in when used), so RSS reflects the proxy's working set")
	f.IntVar(&rts.GOGC, "gogc", 50, "Go GC target percent (GOGC): the heap may grow this many percent over the live heap before a collection; the proxy allocates little per request, so 50 saves memory at no measurable CPU; 0 keeps the runtime default (100); $GOGC wins unless the flag is set")
	f.StringVar(&wasmCache, "wasm-module-cache", "", "directory keeping wasm modules pulled from OCI registries across restarts (imagePullPolicy IfNotPresent); empty: memory only")
	f.StringVar(&proxyBinary, "proxy-binary", ProxyBinaryAuto, "run this proxy-only build of weft (built with -tags weftproxy) in place of this process, with the same arguments and PID: it links no control-plane or Kubernetes packages, so the sidecar starts with less memory; auto uses "+ProxyBinaryName+" next to the weft executable when it is there and from the same build, empty runs in this process; ignored by "+ProxyBinaryName+" itself")
	f.StringVar(&memLimit, "memory-limit", "", "Go soft memory limit (GOMEMLIMIT), e.g. 64MiB; empty keeps the runtime default or $GOMEMLIMIT")
	return cmd
}

// lockWriter serialises writes from the logger, the access log and the
// application's output copier when they share one writer. Files are
// returned as they are (the application then inherits the descriptor).
func lockWriter(w io.Writer) io.Writer {
	if f, ok := w.(*os.File); ok {
		return f
	}
	return &syncWriter{w: w}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if s == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not k=v", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// runProxy runs p; with args it also runs the application after the proxy
// is ready, forwards SIGINT/SIGTERM to it and exits with its code.
func runProxy(ctx context.Context, p *proxy.Proxy, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	pctx, cancelProxy := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProxy()
	errc := make(chan error, 1)
	go func() { errc <- p.Run(pctx) }()
	if len(args) == 0 {
		select {
		case <-ctx.Done():
			cancelProxy()
			return <-errc
		case err := <-errc:
			return err
		}
	}
	select {
	case <-p.Ready():
	case <-ctx.Done():
		cancelProxy()
		return <-errc
	case err := <-errc:
		return err
	}
	app := exec.Command(args[0], args[1:]...)
	app.Stdin, app.Stdout, app.Stderr = os.Stdin, stdout, stderr
	if err := app.Start(); err != nil {
		cancelProxy()
		<-errc
		return &ExitError{Code: 127, Err: fmt.Errorf("start %s: %w", args[0], err)}
	}
	log.Info("application started", "cmd", args[0], "pid", app.Process.Pid)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	waitc := make(chan error, 1)
	go func() { waitc <- app.Wait() }()
	var appErr error
	for done := false; !done; {
		select {
		case s := <-sigs:
			_ = app.Process.Signal(s)
		case appErr = <-waitc:
			done = true
		case err := <-errc: // proxy quit (e.g. /quitquitquit): stop the app
			_ = app.Process.Signal(syscall.SIGTERM)
			appErr = <-waitc
			if err != nil {
				log.Error("proxy stopped", "err", err)
			}
			errc <- nil
			done = true
		}
	}
	cancelProxy()
	<-errc
	var ee *exec.ExitError
	if errors.As(appErr, &ee) {
		return &ExitError{Code: ee.ExitCode(), Err: fmt.Errorf("application exited: %w", appErr)}
	}
	return appErr
}
