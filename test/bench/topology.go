package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	benchService = "bench"
	benchPort    = 8080
)

// weft starts a control plane and two sidecars and measures topology B;
// with mtls (topology D) the control plane runs the CA with a STRICT
// mesh-wide PeerAuthentication and both sidecars get workload
// certificates, so the hop between them is ISTIO_MUTUAL.
func (r *runner) weft(ctx context.Context, t *Topology, upstream string, mtls bool) error {
	a, err := freeAddrs(4)
	if err != nil {
		return err
	}
	admin, xds, mon, caAddr := a[0], a[1], a[2], a[3]
	pfx, dataDir := "", filepath.Join(r.cfg.WorkDir, "store")
	cpArgs := []string{"control-plane", "--log-level", "warn",
		"--admin-address", admin, "--xds-address", xds, "--monitoring-address", mon, "--dashboard-address", ""}
	if mtls {
		pfx, dataDir = "mtls-", filepath.Join(r.cfg.WorkDir, "store-mtls")
		cfgDir := filepath.Join(r.cfg.WorkDir, "config-mtls")
		if err := os.MkdirAll(cfgDir, 0o755); err != nil {
			return err
		}
		pa := "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: weft-system\nspec:\n  mtls:\n    mode: STRICT\n"
		if err := os.WriteFile(filepath.Join(cfgDir, "peer-authentication.yaml"), []byte(pa), 0o644); err != nil {
			return err
		}
		cpArgs = append(cpArgs, "--ca-address", caAddr, "--config-dir", cfgDir)
	}
	cpArgs = append(cpArgs, "--data-dir", dataDir)
	if _, err := r.spawn(pfx+"control-plane", r.cfg.Weft, cpArgs...); err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+admin+"/healthz", "", 30*time.Second, nil); err != nil {
		return fmt.Errorf("control plane: %w\n%s", err, r.logTail(pfx+"control-plane"))
	}
	_, upPort, _ := strings.Cut(upstream, ":")
	type sidecar struct {
		cmd                               *exec.Cmd
		inbound, outbound, adminA, health string
	}
	start := func(name, labels string, extra ...string) (*sidecar, error) {
		p, err := freeAddrs(6)
		if err != nil {
			return nil, err
		}
		if mtls {
			out, err := exec.CommandContext(ctx, r.cfg.Weft, "token", "create", "--data-dir", dataDir,
				"--namespace", "default", "--service-account", name).Output()
			if err != nil {
				return nil, fmt.Errorf("token create: %w", err)
			}
			extra = append(extra, "--ca-address", caAddr, "--ca-root-cert", filepath.Join(dataDir, "ca", "root-cert.pem"),
				"--ca-token", strings.TrimSpace(string(out)))
		}
		s := &sidecar{inbound: p[0], outbound: p[1], adminA: p[2], health: p[3]}
		args := append([]string{"proxy", "--control-plane", xds, "--namespace", "default",
			"--workload", name, "--labels", labels, "--service-account", name,
			"--inbound-address", p[0], "--outbound-address", p[1], "--admin-address", p[2],
			"--health-address", p[3], "--metrics-address", p[4], "--status-address", p[5],
			"--access-log", "", "--log-level", "warn"}, extra...)
		if s.cmd, err = r.spawnEnv(pfx+name, r.cfg.ProxyEnv, r.cfg.Weft, args...); err != nil {
			return nil, err
		}
		if err := waitHTTP(ctx, "http://"+s.health+"/healthz/ready", "", 30*time.Second, nil); err != nil {
			return nil, fmt.Errorf("%s: %w\n%s", name, err, r.logTail(pfx+name))
		}
		return s, nil
	}
	server, err := start("bench-server", "app=bench,version=v1",
		"--service", fmt.Sprintf("%s:%d/http", benchService, benchPort), "--app-port", upPort)
	if err != nil {
		return err
	}
	client, err := start("bench-client", "app=bench-client,version=v1")
	if err != nil {
		return err
	}
	host := fmt.Sprintf("%s:%d", benchService, benchPort)
	url := "http://" + client.outbound + "/"
	if err := waitHTTP(ctx, url, host, 30*time.Second, nil); err != nil {
		return fmt.Errorf("bench service through the sidecars: %w\n%s\n%s", err, r.logTail(pfx+"bench-client"), r.logTail(pfx+"bench-server"))
	}
	pids := []int{client.cmd.Process.Pid, server.cmd.Process.Pid}
	r.admins = []string{client.adminA, server.adminA}
	defer func() { r.admins = nil }()
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pids[0])); err == nil {
		t.ProxyExe = exe
	}
	if mtls {
		return r.measureMTLS(ctx, t, url, host, pids, server.adminA)
	}
	if err := r.measure(ctx, t, "weft", url, host, pids); err != nil {
		return err
	}
	// RSS with many services: apply ServiceEntries, wait until the client
	// proxy's config holds them, push some traffic so every path is warm,
	// then sample.
	if err := applyServiceEntries(ctx, admin, r.cfg.Services); err != nil {
		return fmt.Errorf("apply %d ServiceEntries: %w", r.cfg.Services, err)
	}
	last := fmt.Sprintf("svc%d.bench-extra.svc.cluster.local", r.cfg.Services-1)
	if err := waitConfig(ctx, "http://"+client.adminA+"/config_dump", last, 30*time.Second); err != nil {
		return err
	}
	if _, err := r.fortio(ctx, "weft-services-warm", url, host, 200, 4, 3*time.Second); err != nil {
		return err
	}
	for _, pid := range pids {
		rss, err := ProcRSS(pid)
		if err != nil {
			return err
		}
		if rss > t.RSSMax {
			t.RSSMax = rss
			if anon, file, err := ProcRSSSplit(pid); err == nil {
				t.RSSMaxAnon, t.RSSMaxFile = anon, file
			}
		}
	}
	return nil
}

// measureMTLS measures topology D and counts the connections the server
// sidecar accepted (each one a full mTLS handshake) over the whole
// measurement.
func (r *runner) measureMTLS(ctx context.Context, t *Topology, url, host string, pids []int, serverAdmin string) error {
	conns0, err := statCounter(ctx, "http://"+serverAdmin+"/stats", "inbound.connections")
	if err != nil {
		return err
	}
	began := time.Now()
	if err := r.measure(ctx, t, "weft-mtls", url, host, pids); err != nil {
		return err
	}
	conns1, err := statCounter(ctx, "http://"+serverAdmin+"/stats", "inbound.connections")
	if err != nil {
		return err
	}
	t.NewConns = conns1 - conns0
	t.NewConnsPerSec = float64(t.NewConns) / time.Since(began).Seconds()
	return nil
}

// statCounter reads one "name: value" line of a proxy's admin /stats.
func statCounter(ctx context.Context, url, name string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+": "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s counter", url, name)
}

func applyServiceEntries(ctx context.Context, admin string, n int) error {
	var y strings.Builder
	for i := range n {
		fmt.Fprintf(&y, `---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc%d, namespace: bench-extra}
spec:
  hosts: [svc%d.bench-extra.svc.cluster.local]
  resolution: STATIC
  ports: [{number: %d, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.%d}]
`, i, i, 9000+i, 2+i%200)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+admin+"/api/v1/apply", strings.NewReader(y.String()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin API answered %s: %s", resp.Status, b)
	}
	return nil
}

// waitConfig polls the proxy's config dump until it mentions want.
func waitConfig(ctx context.Context, url, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), want) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s never mentioned %s within %s", url, want, timeout)
}

// haproxyConfig is one HAProxy hop: http mode, keep-alive on both sides,
// two threads like the two cores GOMAXPROCS gives a weft proxy here.
func haproxyConfig(listen, next string) string {
	return fmt.Sprintf(`global
  maxconn 4000
  nbthread 2
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend in
  bind %s
  default_backend out
backend out
  server s1 %s
`, listen, next)
}

// haproxy starts two HAProxy processes chained to the upstream and
// measures topology C.
func (r *runner) haproxy(ctx context.Context, t *Topology, upstream string) error {
	a, err := freeAddrs(2)
	if err != nil {
		return err
	}
	outer, inner := a[0], a[1]
	var pids []int
	for _, h := range []struct{ name, listen, next string }{
		{"haproxy-server", inner, upstream}, {"haproxy-client", outer, inner},
	} {
		cfgPath := filepath.Join(r.cfg.WorkDir, h.name+".cfg")
		if err := os.WriteFile(cfgPath, []byte(haproxyConfig(h.listen, h.next)), 0o644); err != nil {
			return err
		}
		cmd, err := r.spawn(h.name, r.cfg.HAProxy, "-db", "-f", cfgPath)
		if err != nil {
			return err
		}
		pids = append(pids, cmd.Process.Pid)
	}
	url := "http://" + outer + "/"
	if err := waitHTTP(ctx, url, "", 30*time.Second, nil); err != nil {
		return fmt.Errorf("%w\n%s\n%s", err, r.logTail("haproxy-client"), r.logTail("haproxy-server"))
	}
	return r.measure(ctx, t, "haproxy", url, "", pids)
}

// measure runs a warm-up, the constant-rate run and the max-throughput run
// against url, filling t; pids are the proxies whose CPU and RSS count.
func (r *runner) measure(ctx context.Context, t *Topology, tag, url, host string, pids []int) error {
	if _, err := r.fortio(ctx, tag+"-warm", url, host, r.cfg.QPS, r.cfg.Conns, 2*time.Second); err != nil {
		return err
	}
	cpu0, err := sumCPU(pids)
	if err != nil {
		return err
	}
	res, err := r.fortio(ctx, tag+"-qps", url, host, r.cfg.QPS, r.cfg.Conns, r.cfg.Duration)
	if err != nil {
		return err
	}
	cpu1, err := sumCPU(pids)
	if err != nil {
		return err
	}
	for p, dst := range map[float64]*float64{50: &t.P50, 90: &t.P90, 99: &t.P99} {
		if *dst, err = res.Percentile(p); err != nil {
			return err
		}
	}
	t.Requests = res.Requests()
	t.Errors = res.Requests() - res.OK()
	if len(pids) > 0 {
		t.CPUPer1K = (cpu1 - cpu0) / float64(t.Requests) * 1000
		for _, pid := range pids {
			rss, err := ProcRSS(pid)
			if err != nil {
				return err
			}
			t.RSS += rss
			anon, err := ProcRSSAnon(pid)
			if err != nil {
				return err
			}
			t.RSSAnon += anon
		}
	}
	var perfs []*exec.Cmd
	if r.cfg.Perf {
		for _, pid := range pids {
			out := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("perf-%s-%d.data", tag, pid))
			c := exec.CommandContext(ctx, "perf", "record", "-g", "-F", "499", "-o", out, "-p", strconv.Itoa(pid),
				"--", "sleep", strconv.Itoa(int(r.cfg.MaxDuration.Seconds())))
			if err := c.Start(); err != nil {
				return fmt.Errorf("perf record: %w", err)
			}
			perfs = append(perfs, c)
		}
	}
	var profiles sync.WaitGroup
	if r.cfg.PProf {
		secs := max(1, r.cfg.MaxDuration.Seconds()-2)
		for i, a := range r.admins {
			out := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("pprof-%s-%d.pb.gz", tag, i))
			profiles.Go(func() {
				if err := fetchTo(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%g", a, secs), out); err != nil {
					r.log.Warn("cpu profile", "admin", a, "err", err)
				}
			})
		}
	}
	mx, err := r.fortio(ctx, tag+"-max", url, host, 0, r.cfg.MaxConns, r.cfg.MaxDuration)
	for _, c := range perfs {
		_ = c.Wait()
	}
	profiles.Wait()
	if err != nil {
		return err
	}
	t.MaxRPS = mx.ActualQPS
	t.Errors += mx.Requests() - mx.OK()
	r.log.Info("measured", "topology", t.Name, "p50", t.P50, "p99", t.P99, "maxRPS", t.MaxRPS)
	return nil
}

// fetchTo saves the body of GET url to the file out.
func fetchTo(ctx context.Context, url, out string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func sumCPU(pids []int) (float64, error) {
	var s float64
	for _, pid := range pids {
		c, err := ProcCPU(pid)
		if err != nil {
			return 0, err
		}
		s += c
	}
	return s, nil
}

// fortio runs one fortio load and parses its JSON result.
func (r *runner) fortio(ctx context.Context, name, url, host string, qps, conns int, d time.Duration) (*FortioResult, error) {
	out := filepath.Join(r.cfg.WorkDir, "fortio-"+name+".json")
	args := []string{"load", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(conns), "-t", d.String(),
		"-p", "50,90,99", "-r", "0.00001", "-loglevel", "Warning", "-json", out}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, url)
	// Bound every run: the load itself plus generous slack.
	cctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, r.cfg.Fortio, args...)
	logb, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("fortio %s: %w\n%s", name, err, logb)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	res, err := ParseFortio(b)
	if err != nil {
		return nil, fmt.Errorf("fortio %s: %w", name, err)
	}
	if res.OK() == 0 {
		return nil, fmt.Errorf("fortio %s: no 200 answers (codes %v)\n%s", name, res.RetCodes, logb)
	}
	return res, nil
}
