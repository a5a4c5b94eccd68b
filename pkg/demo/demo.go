// Package demo runs a whole mesh on one machine: the control plane, the
// Bookinfo sample app with one weft sidecar per workload, and an ingress
// gateway, all as child processes on 127.0.0.1. It is what `make demo` and
// `weft demo` run, and what the end-to-end tests drive.
package demo

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/weftmesh/weft/examples/bookinfo"
)

// Options configure a demo run. Zero values take the documented defaults.
type Options struct {
	// Weft is the weft binary to start children with (default: this executable).
	Weft string
	// DataDir holds the control plane's store and every child's log file
	// (default: a new temporary directory, removed on exit).
	DataDir string
	// AdminAddress is the control plane's admin API (default 127.0.0.1:8080).
	AdminAddress string
	// XDSAddress is the control plane's xDS address (default 127.0.0.1:15010).
	XDSAddress string
	// MonitoringAddress is the control plane's /metrics (default 127.0.0.1:15014).
	MonitoringAddress string
	// DashboardAddress is the web dashboard (default 127.0.0.1:20001).
	DashboardAddress string
	// IngressAddress is the ingress gateway's HTTP address (default 127.0.0.1:8000).
	IngressAddress string
	// CAAddress is the control plane's workload CA (default 127.0.0.1:15012).
	CAAddress string
	// Tracing configures the built-in trace collector (see tracing.go).
	Tracing TracingOptions
	// Plaintext runs the mesh without the CA: no workload certificates, no
	// PeerAuthentication, plaintext between sidecars. By default the demo
	// turns the CA on and applies mesh-wide STRICT mutual TLS.
	Plaintext bool
	// Prometheus writes a scrape config and optionally runs Prometheus.
	Prometheus PrometheusOptions
	// BasePort is the first port of the block workloads use (10 ports each);
	// 0 picks free ports (tests).
	BasePort int
	// Load is the request rate (per second) of the built-in load generator
	// against the ingress; 0 disables it.
	Load int
	// NoGateway skips the ingress gateway; the entry URL is then
	// productpage's sidecar inbound listener.
	NoGateway bool
	// ReadyTimeout bounds start-up (default 60s).
	ReadyTimeout time.Duration
	// ExitAfter stops the mesh this long after it is ready (0: run until
	// ctx ends, i.e. Ctrl-C). For non-interactive runs such as
	// hack/quickstart-check.sh.
	ExitAfter time.Duration
	// Out receives the human-readable banner.
	Out    io.Writer
	Logger *slog.Logger
}

// Workload is one Bookinfo deployment: an app and its sidecar.
type Workload struct {
	Service, Version string
	AppPort          int
	Inbound          int // proxy inbound listener
	Outbound         int // proxy outbound listener (the app's HTTP_PROXY)
	Admin            int
	Metrics          int
	Health           int
	Status           int // /quitquitquit and merged metrics
}

// Name is the workload name, e.g. reviews-v2.
func (w Workload) Name() string { return w.Service + "-" + w.Version }

// Plan is what a demo run starts, with every address resolved.
type Plan struct {
	Workloads []Workload
	Ingress   Workload // the gateway proxy (no app)
	Admin     string
	XDS       string
	Monitor   string
	Dashboard string
	IngressHP string
	CA        string
	// Prometheus is the address a started Prometheus serves on.
	Prometheus string
	// Zipkin is the control plane's built-in trace collector.
	Zipkin string
}

// IngressURL is the productpage URL through the ingress gateway.
func (p *Plan) IngressURL() string { return "http://" + p.IngressHP + "/productpage" }

var workloads = []struct{ service, version string }{
	{"productpage", "v1"}, {"details", "v1"}, {"reviews", "v1"}, {"reviews", "v2"}, {"reviews", "v3"}, {"ratings", "v1"},
}

// ServicePort is the port every Bookinfo service is called on.
const ServicePort = 9080

// portPicker hands out distinct free ports from 20000-31999, below Linux's
// ephemeral range (32768+), so ports the kernel gives other sockets (tests
// running in parallel, outgoing connections) cannot take them between
// planning and binding. The start is spread by pid so concurrent demos
// rarely probe the same ports.
type portPicker struct {
	next int
	used map[int]bool
}

func newPortPicker() *portPicker {
	return &portPicker{next: 20000 + (os.Getpid()*97)%12000, used: map[int]bool{}}
}

func (pp *portPicker) pick() (int, error) {
	for tries := 0; tries < 12000; tries++ {
		pp.next++
		if pp.next >= 32000 {
			pp.next = 20000
		}
		if pp.used[pp.next] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(pp.next))
		if err != nil {
			continue
		}
		l.Close()
		pp.used[pp.next] = true
		return pp.next, nil
	}
	return 0, fmt.Errorf("no free port in 20000-31999")
}

// MakePlan assigns ports.
func MakePlan(o Options) (*Plan, error) {
	next := o.BasePort
	picker := newPortPicker()
	port := func() (int, error) {
		if o.BasePort == 0 {
			return picker.pick()
		}
		next++
		return next - 1, nil
	}
	addr := func(given, def string) (string, error) {
		if given != "" {
			return given, nil
		}
		if o.BasePort != 0 {
			return def, nil
		}
		p, err := picker.pick()
		return "127.0.0.1:" + strconv.Itoa(p), err
	}
	p := &Plan{}
	var err error
	if p.Admin, err = addr(o.AdminAddress, "127.0.0.1:8080"); err != nil {
		return nil, err
	}
	if p.XDS, err = addr(o.XDSAddress, "127.0.0.1:15010"); err != nil {
		return nil, err
	}
	if p.Monitor, err = addr(o.MonitoringAddress, "127.0.0.1:15014"); err != nil {
		return nil, err
	}
	if p.Dashboard, err = addr(o.DashboardAddress, "127.0.0.1:20001"); err != nil {
		return nil, err
	}
	if p.IngressHP, err = addr(o.IngressAddress, "127.0.0.1:8000"); err != nil {
		return nil, err
	}
	if p.CA, err = addr(o.CAAddress, "127.0.0.1:15012"); err != nil {
		return nil, err
	}
	if p.Zipkin, err = addr(o.Tracing.Address, "127.0.0.1:9411"); err != nil {
		return nil, err
	}
	if o.Prometheus.Run {
		if p.Prometheus, err = addr(o.Prometheus.Address, "127.0.0.1:9090"); err != nil {
			return nil, err
		}
	}
	mk := func(service, version string, app bool) (Workload, error) {
		w := Workload{Service: service, Version: version}
		for _, f := range []*int{&w.Inbound, &w.Outbound, &w.Admin, &w.Metrics, &w.Health, &w.Status} {
			v, err := port()
			if err != nil {
				return w, err
			}
			*f = v
		}
		if app {
			v, err := port()
			if err != nil {
				return w, err
			}
			w.AppPort = v
		}
		if o.BasePort != 0 { // keep blocks aligned to 10 for readability
			next += 10 - (next-o.BasePort)%10
		}
		return w, nil
	}
	for _, wl := range workloads {
		w, err := mk(wl.service, wl.version, true)
		if err != nil {
			return nil, err
		}
		p.Workloads = append(p.Workloads, w)
	}
	if p.Ingress, err = mk("istio-ingressgateway", "v1", false); err != nil {
		return nil, err
	}
	return p, nil
}

// Run starts the mesh, prints the banner, and waits until ctx ends; then it
// stops every child (SIGTERM, then SIGKILL after 5 s) before returning.
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	if o.Weft == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find weft binary: %w", err)
		}
		o.Weft = exe
	}
	if o.DataDir == "" {
		d, err := os.MkdirTemp("", "weft-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.DataDir = d
	}
	plan, err := MakePlan(o)
	if err != nil {
		return fmt.Errorf("assign ports: %w", err)
	}
	m := &mesh{o: o, plan: plan}
	defer m.stop()
	if err := m.start(ctx); err != nil {
		return err
	}
	m.banner()
	if o.Load > 0 {
		go m.load(ctx, o.Load)
	}
	var exit <-chan time.Time
	if o.ExitAfter > 0 {
		fmt.Fprintf(o.Out, "(--exit-after %s: stopping by itself)\n", o.ExitAfter)
		exit = time.After(o.ExitAfter)
	}
	select {
	case <-ctx.Done():
	case <-exit:
	case err := <-m.died:
		return err
	}
	fmt.Fprintln(o.Out, "\nstopping the mesh ...")
	return nil
}

type mesh struct {
	o     Options
	plan  *Plan
	mu    sync.Mutex
	procs []child
	died  chan error
	// promConfig is the written Prometheus config file ("" if none).
	promConfig string
}

type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has been reaped
}

func (m *mesh) spawn(name string, args ...string) error {
	return m.spawnCmd(name, m.o.Weft, args...)
}

// spawnCmd starts bin as a child in its own process group, logging to
// DataDir/logs/NAME.log.
func (m *mesh) spawnCmd(name, bin string, args ...string) error {
	logPath := filepath.Join(m.o.DataDir, "logs", name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	c := child{cmd: cmd, done: make(chan struct{})}
	m.mu.Lock()
	m.procs = append(m.procs, c)
	m.mu.Unlock()
	go func() {
		err := cmd.Wait()
		close(c.done)
		f.Close()
		select {
		case m.died <- fmt.Errorf("%s exited (%v); see %s", name, err, logPath):
		default:
		}
	}()
	return nil
}

func (m *mesh) start(ctx context.Context) error {
	m.died = make(chan error, 1)
	p := m.plan
	if err := m.spawn("control-plane", append([]string{"control-plane",
		"--data-dir", m.storeDir(),
		"--admin-address", p.Admin, "--xds-address", p.XDS, "--monitoring-address", p.Monitor,
		"--dashboard-address", p.Dashboard}, append(m.caControlPlaneArgs(), m.tracingControlPlaneArgs()...)...)...); err != nil {
		return err
	}
	if err := m.waitHTTP(ctx, "http://"+p.Admin+"/healthz", "control plane"); err != nil {
		return err
	}
	if err := m.issueTokens(); err != nil {
		return err
	}
	if err := m.applyStarterConfig(ctx); err != nil {
		return fmt.Errorf("apply starter config: %w", err)
	}
	for _, w := range p.Workloads {
		args := m.proxyArgs(w)
		args = append(args, "--service", fmt.Sprintf("%s:%d/http", w.Service, ServicePort), "--app-port", strconv.Itoa(w.AppPort),
			"--", m.o.Weft, "demo-app", "--service", w.Service, "--version", w.Version,
			"--listen", "127.0.0.1:"+strconv.Itoa(w.AppPort), "--proxy", "http://127.0.0.1:"+strconv.Itoa(w.Outbound))
		if err := m.spawn(w.Name(), args...); err != nil {
			return err
		}
	}
	ready := append([]Workload(nil), p.Workloads...)
	if !m.o.NoGateway {
		g := p.Ingress
		if err := m.spawn("ingressgateway", append(m.proxyArgs(g), "--gateway", "--gateway-address", "8000="+p.IngressHP)...); err != nil {
			return err
		}
		ready = append(ready, g)
	} else {
		p.IngressHP = fmt.Sprintf("127.0.0.1:%d", p.Workloads[0].Inbound)
	}
	for _, w := range ready {
		if err := m.waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", w.Health), w.Name()+" proxy"); err != nil {
			return err
		}
	}
	if err := m.waitHTTP(ctx, p.IngressURL(), "productpage through the ingress gateway"); err != nil {
		return err
	}
	return m.startPrometheus(ctx)
}

func (m *mesh) proxyArgs(w Workload) []string {
	ns, sa := identity(w)
	labels := fmt.Sprintf("app=%s,version=%s", w.Service, w.Version)
	if w.AppPort == 0 {
		labels = "istio=ingressgateway,app=istio-ingressgateway"
	}
	hp := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	return append([]string{"proxy", "--control-plane", m.plan.XDS, "--namespace", ns, "--workload", w.Name(),
		"--labels", labels, "--service-account", sa,
		"--inbound-address", hp(w.Inbound), "--outbound-address", hp(w.Outbound),
		"--admin-address", hp(w.Admin), "--metrics-address", hp(w.Metrics), "--health-address", hp(w.Health),
		"--status-address", hp(w.Status), "--access-log", filepath.Join(m.o.DataDir, "logs", w.Name()+".access.log")},
		m.proxyCAArgs(w)...)
}

func (m *mesh) applyStarterConfig(ctx context.Context) error {
	var docs []string
	files := []string{"config/destination-rule-all.yaml", "config/bookinfo-gateway.yaml"}
	if !m.o.Plaintext {
		files = append(files, "config/peer-authentication-strict.yaml")
	}
	for _, f := range files {
		b, err := fs.ReadFile(bookinfo.Config, f)
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
	}
	if m.o.NoGateway && !m.o.Plaintext {
		// Without the gateway, clients enter through productpage's sidecar in
		// plaintext: let that one workload take both.
		docs = append(docs, productpagePermissive)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+m.plan.Admin+"/api/v1/apply",
		strings.NewReader(strings.Join(docs, "\n---\n")))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("admin API answered %s: %s", resp.Status, b)
	}
	return nil
}

// productpagePermissive lets plaintext clients reach productpage's sidecar
// directly (--no-gateway) while the rest of the mesh stays STRICT.
const productpagePermissive = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: productpage-permissive
  namespace: default
spec:
  selector:
    matchLabels:
      app: productpage
  mtls:
    mode: PERMISSIVE
`

// waitHTTP polls url until it answers 200, the deadline passes, or a child dies.
func (m *mesh) waitHTTP(ctx context.Context, url, what string) error {
	deadline := time.Now().Add(m.o.ReadyTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-m.died:
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready at %s after %s (last: %s); logs in %s", what, url, m.o.ReadyTimeout, last,
		filepath.Join(m.o.DataDir, "logs"))
}

func (m *mesh) banner() {
	p, out := m.plan, m.o.Out
	fmt.Fprintf(out, "\nWeft demo mesh is ready.\n\n")
	fmt.Fprintf(out, "  Bookinfo            %s\n", p.IngressURL())
	fmt.Fprintf(out, "  dashboard           http://%s\n", p.Dashboard)
	fmt.Fprintf(out, "  control plane API   http://%s   (export WEFT_SERVER=http://%s)\n", p.Admin, p.Admin)
	fmt.Fprintf(out, "  xDS                 %s\n", p.XDS)
	fmt.Fprintf(out, "  metrics             http://%s/metrics\n", p.Monitor)
	m.tracingBanner(out)
	if m.o.Plaintext {
		fmt.Fprintf(out, "  mTLS                off (--plaintext)\n")
	} else {
		fmt.Fprintf(out, "  mTLS                STRICT mesh-wide, workload certificates from the CA at %s\n", p.CA)
	}
	fmt.Fprint(out, m.prometheusBanner())
	fmt.Fprintf(out, "  logs                %s\n\n", filepath.Join(m.o.DataDir, "logs"))
	fmt.Fprintf(out, "  %-22s %-8s %-18s %-18s %s\n", "WORKLOAD", "APP", "SIDECAR INBOUND", "SIDECAR METRICS", "ADMIN")
	for _, w := range append(append([]Workload(nil), p.Workloads...), p.Ingress) {
		app := "-"
		if w.AppPort != 0 {
			app = strconv.Itoa(w.AppPort)
		}
		fmt.Fprintf(out, "  %-22s %-8s 127.0.0.1:%-8d 127.0.0.1:%-8d 127.0.0.1:%d\n", w.Name(), app, w.Inbound, w.Metrics, w.Admin)
	}
	srv := ""
	if p.Admin != "127.0.0.1:8080" {
		srv = " --server http://" + p.Admin
	}
	fmt.Fprintf(out, "\nTry:\n")
	fmt.Fprintf(out, "  weft apply%s -f examples/bookinfo/config/virtual-service-reviews-v3.yaml   # all reviews from v3 (red stars)\n", srv)
	fmt.Fprintf(out, "  weft apply%s -f examples/bookinfo/config/fault-ratings-abort.yaml          # ratings fails with 500\n", srv)
	fmt.Fprintf(out, "  weft proxy-status%s                                                        # who has which config\n", srv)
	fmt.Fprintf(out, "  open http://%s and watch the reviews → ratings edge turn red\n", p.Dashboard)
	fmt.Fprintf(out, "\nPress Ctrl-C to stop.\n")
}

// load sends rps GETs per second to the ingress until ctx ends.
func (m *mesh) load(ctx context.Context, rps int) {
	client := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(time.Second / time.Duration(rps))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			go func() {
				resp, err := client.Get(m.plan.IngressURL())
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
	}
}

// stop terminates every child: SIGTERM to its process group, then SIGKILL.
func (m *mesh) stop() {
	m.mu.Lock()
	procs := append([]child(nil), m.procs...)
	m.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		_ = syscall.Kill(-procs[i].cmd.Process.Pid, syscall.SIGTERM)
	}
	grace := time.After(5 * time.Second)
	for _, c := range procs {
		select {
		case <-c.done:
		case <-grace:
		}
		// The process group may hold the app a sidecar started.
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}
