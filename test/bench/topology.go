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

// startWeft starts a control plane and two sidecars for topology B; with
// mtls (topology D) the control plane runs the CA with a STRICT mesh-wide
// PeerAuthentication and both sidecars get workload certificates, so the
// hop between them is ISTIO_MUTUAL.
func (r *runner) startWeft(ctx context.Context, t *Topology, upstream string, mtls bool) (*target, error) {
	a, err := freeAddrs(4)
	if err != nil {
		return nil, err
	}
	admin, xds, mon, caAddr := a[0], a[1], a[2], a[3]
	pfx, dataDir := "", filepath.Join(r.cfg.WorkDir, "store")
	cpArgs := []string{"control-plane", "--log-level", "warn",
		"--admin-address", admin, "--xds-address", xds, "--monitoring-address", mon, "--dashboard-address", ""}
	if mtls {
		pfx, dataDir = "mtls-", filepath.Join(r.cfg.WorkDir, "store-mtls")
		cfgDir := filepath.Join(r.cfg.WorkDir, "config-mtls")
		if err := os.MkdirAll(cfgDir, 0o755); err != nil {
			return nil, err
		}
		pa := "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: weft-system\nspec:\n  mtls:\n    mode: STRICT\n"
		if err := os.WriteFile(filepath.Join(cfgDir, "peer-authentication.yaml"), []byte(pa), 0o644); err != nil {
			return nil, err
		}
		cpArgs = append(cpArgs, "--ca-address", caAddr, "--config-dir", cfgDir)
	}
	cpArgs = append(cpArgs, "--data-dir", dataDir)
	if _, err := r.spawn(pfx+"control-plane", r.cfg.Weft, cpArgs...); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, "http://"+admin+"/healthz", "", 30*time.Second, nil); err != nil {
		return nil, fmt.Errorf("control plane: %w\n%s", err, r.logTail(pfx+"control-plane"))
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
		return nil, err
	}
	client, err := start("bench-client", "app=bench-client,version=v1")
	if err != nil {
		return nil, err
	}
	host := fmt.Sprintf("%s:%d", benchService, benchPort)
	url := "http://" + client.outbound + "/"
	if err := waitHTTP(ctx, url, host, 30*time.Second, nil); err != nil {
		return nil, fmt.Errorf("bench service through the sidecars: %w\n%s\n%s", err, r.logTail(pfx+"bench-client"), r.logTail(pfx+"bench-server"))
	}
	tg := &target{t: t, tag: "weft", url: url, host: host,
		pids: []int{client.cmd.Process.Pid, server.cmd.Process.Pid}, admins: []string{client.adminA, server.adminA}}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", tg.pids[0])); err == nil {
		t.ProxyExe = exe
	}
	if mtls {
		// Count the connections the server sidecar accepts (each one a
		// full mTLS handshake) over the whole measurement.
		tg.tag = "weft-mtls"
		stats := "http://" + server.adminA + "/stats"
		conns0, err := statCounter(ctx, stats, "inbound.connections")
		if err != nil {
			return nil, err
		}
		began := time.Now()
		tg.after = func(ctx context.Context) error {
			conns1, err := statCounter(ctx, stats, "inbound.connections")
			if err != nil {
				return err
			}
			t.NewConns = conns1 - conns0
			t.NewConnsPerSec = float64(t.NewConns) / time.Since(began).Seconds()
			return nil
		}
		return tg, nil
	}
	// After the rounds, RSS with many services: apply ServiceEntries, wait
	// until the client proxy's config holds them and both proxies have
	// settled after the update (server.memory_releases: 2 s after the last
	// update a proxy returns the memory decoding it took), then sample the
	// working set under the bench's rate. Sampling before the release
	// measured the update's transient (~34 MB), depending on timing.
	tg.after = func(ctx context.Context) error {
		stats := []string{"http://" + client.adminA + "/stats", "http://" + server.adminA + "/stats"}
		var releases []int64
		for _, u := range stats {
			n, err := statCounter(ctx, u, "server.memory_releases")
			if err != nil {
				n = -1 // a proxy that does not count its releases: wait a fixed time below
			}
			releases = append(releases, n)
		}
		if err := applyServiceEntries(ctx, admin, r.cfg.Services); err != nil {
			return fmt.Errorf("apply %d ServiceEntries: %w", r.cfg.Services, err)
		}
		last := fmt.Sprintf("svc%d.bench-extra.svc.cluster.local", r.cfg.Services-1)
		if err := waitConfig(ctx, "http://"+client.adminA+"/config_dump", last, 30*time.Second); err != nil {
			return err
		}
		if err := waitReleases(ctx, stats, releases, 20*time.Second); err != nil {
			return err
		}
		if _, err := r.fortio(ctx, "weft-services-load", url, host, r.cfg.QPS, r.cfg.Conns, servicesLoad, "-uniform"); err != nil {
			return err
		}
		for _, pid := range tg.pids {
			rss, err := ProcRSS(pid)
			if err != nil {
				return err
			}
			if rss > t.RSSMax {
				t.RSSMax = rss
				if anon, file, pss, err := ProcRSSSplit(pid); err == nil {
					t.RSSMaxAnon, t.RSSMaxFile, t.RSSMaxPSS = anon, file, pss
				}
			}
		}
		return nil
	}
	return tg, nil
}

// servicesLoad is how long the bench's rate runs through the weft pair
// with the extra services before their RSS is sampled.
const servicesLoad = 10 * time.Second

// waitReleases waits until each proxy's server.memory_releases counter has
// passed its value in before (read before a configuration update), that is
// until the proxy has settled after the update. A before of -1 (a proxy
// without the counter) waits 4 s instead.
func waitReleases(ctx context.Context, stats []string, before []int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i, u := range stats {
		if before[i] < 0 {
			select {
			case <-time.After(4 * time.Second):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for {
			n, err := statCounter(ctx, u, "server.memory_releases")
			if err == nil && n > before[i] {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: no memory release within %v of the update (counter %d, %v)", u, timeout, n, err)
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
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

// startHAProxy starts two HAProxy processes chained to the upstream
// (topology C).
func (r *runner) startHAProxy(ctx context.Context, t *Topology, upstream string) (*target, error) {
	return r.startChain(ctx, t, "haproxy", upstream, func(name, listen, next string) (*exec.Cmd, error) {
		cfgPath := filepath.Join(r.cfg.WorkDir, name+".cfg")
		if err := os.WriteFile(cfgPath, []byte(haproxyConfig(listen, next)), 0o644); err != nil {
			return nil, err
		}
		return r.spawn(name, r.cfg.HAProxy, "-db", "-f", cfgPath)
	})
}

// startChain starts two hops chained to the upstream, TAG-server then
// TAG-client in front of it (start runs one listening on listen and
// forwarding to next), and waits until requests pass both.
func (r *runner) startChain(ctx context.Context, t *Topology, tag, upstream string, start func(name, listen, next string) (*exec.Cmd, error)) (*target, error) {
	a, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	outer, inner := a[0], a[1]
	var pids []int
	for _, h := range []struct{ name, listen, next string }{
		{tag + "-server", inner, upstream}, {tag + "-client", outer, inner},
	} {
		cmd, err := start(h.name, h.listen, h.next)
		if err != nil {
			return nil, err
		}
		pids = append(pids, cmd.Process.Pid)
	}
	url := "http://" + outer + "/"
	if err := waitHTTP(ctx, url, "", 30*time.Second, nil); err != nil {
		return nil, fmt.Errorf("%w\n%s\n%s", err, r.logTail(tag+"-client"), r.logTail(tag+"-server"))
	}
	return &target{t: t, tag: tag, url: url, pids: pids}, nil
}

// floorRelay returns the floorrelay binary (Config.FloorRelay, else
// built into the work directory), or "" and why topology E is skipped.
func (r *runner) floorRelay(ctx context.Context) (bin, why string) {
	switch r.cfg.FloorRelay {
	case "none":
		return "", "FloorRelay is none"
	case "":
	default:
		return r.cfg.FloorRelay, ""
	}
	bin = filepath.Join(r.cfg.WorkDir, "floorrelay")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/weftmesh/weft/test/bench/cmd/floorrelay").CombinedOutput()
	if err != nil {
		r.log.Warn("floor relay not built", "err", err, "output", string(out))
		return "", "go build failed: " + strings.TrimSpace(string(out)+" "+err.Error())
	}
	return bin, ""
}

// startFloorRelay starts two floor relays chained to the upstream
// (topology E): the same two hops with nothing but the socket work.
func (r *runner) startFloorRelay(ctx context.Context, t *Topology, bin, upstream string) (*target, error) {
	// Two threads of Go code, as the weft sidecar's default --concurrency.
	env := append([]string{"GOMAXPROCS=2"}, r.cfg.ProxyEnv...)
	return r.startChain(ctx, t, "floor", upstream, func(name, listen, next string) (*exec.Cmd, error) {
		return r.spawnEnv(name, env, bin, listen, next)
	})
}

// target is one started topology: where its load goes and which
// processes are its proxies, with what the rounds add up for it.
type target struct {
	t         *Topology
	tag       string
	url, host string
	pids      []int    // proxies whose CPU and RSS count
	admins    []string // weft proxies' admin addresses (profiles)
	// after runs once all rounds are done (extra samples); may be nil.
	after func(ctx context.Context) error

	qpsHist  Histogram
	lockHist Histogram
	lockCPU  float64 // proxy CPU seconds over the lockstep chunks
	lockReqs int64
	cpu      float64 // proxy CPU seconds over the constant-rate chunks
	maxReqs  int64
	maxSecs  float64
	roundRPS []float64
}

// measureRounds measures every target in interleaved rounds: each round
// runs Slices evenly spaced constant-rate slices (Duration/Rounds/Slices
// each) on every target in turn, then a lockstep chunk
// (LockstepDuration/Rounds) on every target, then a max-throughput chunk
// (MaxDuration/Rounds) on every target; each round and slice starts with
// a different target. Slow drifts of a shared machine
// (other tenants, thermal limits) then weigh on every topology alike
// instead of on whichever ran during the bad minute. Percentiles come
// from the merged histograms of the constant-rate chunks; max rps is all
// max-chunk requests over their summed durations.
func (r *runner) measureRounds(ctx context.Context, targets []*target) error {
	for _, tg := range targets {
		if _, err := r.fortio(ctx, tg.tag+"-warm", tg.url, tg.host, r.cfg.QPS, r.cfg.Conns, 2*time.Second, "-uniform"); err != nil {
			return err
		}
	}
	n := r.cfg.Rounds
	sd := r.cfg.Duration / time.Duration(n*r.cfg.Slices)
	md := r.cfg.MaxDuration / time.Duration(n)
	ld := r.cfg.LockstepDuration / time.Duration(n)
	order := func(round int) []*target {
		out := make([]*target, 0, len(targets))
		for k := range targets {
			out = append(out, targets[(round+k)%len(targets)])
		}
		return out
	}
	for round := range n {
		last := round == n-1
		for slice := range r.cfg.Slices {
			for _, tg := range order(round + slice) {
				cpu0, err := sumCPU(tg.pids)
				if err != nil {
					return err
				}
				res, err := r.fortio(ctx, fmt.Sprintf("%s-qps-%d.%d", tg.tag, round+1, slice+1), tg.url, tg.host, r.cfg.QPS, r.cfg.Conns, sd, "-uniform")
				if err != nil {
					return err
				}
				cpu1, err := sumCPU(tg.pids)
				if err != nil {
					return err
				}
				tg.cpu += cpu1 - cpu0
				tg.qpsHist = append(tg.qpsHist, res.Histogram()...)
				tg.t.Requests += res.Requests()
				tg.t.Errors += res.Requests() - res.OK()
			}
		}
		for _, tg := range order(round) {
			if ld > 0 {
				cpu1, err := sumCPU(tg.pids)
				if err != nil {
					return err
				}
				lr, err := r.fortio(ctx, fmt.Sprintf("%s-lockstep-%d", tg.tag, round+1), tg.url, tg.host, r.cfg.QPS, r.cfg.Conns, ld)
				if err != nil {
					return err
				}
				cpu2, err := sumCPU(tg.pids)
				if err != nil {
					return err
				}
				tg.lockCPU += cpu2 - cpu1
				tg.lockReqs += lr.Requests()
				tg.lockHist = append(tg.lockHist, lr.Histogram()...)
				tg.t.Errors += lr.Requests() - lr.OK()
			}
			if last { // RSS after the constant-rate load, as in earlier versions
				for _, pid := range tg.pids {
					rss, err := ProcRSS(pid)
					if err != nil {
						return err
					}
					tg.t.RSS += rss
					anon, err := ProcRSSAnon(pid)
					if err != nil {
						return err
					}
					tg.t.RSSAnon += anon
				}
			}
		}
		for _, tg := range order(round) {
			mx, err := r.maxChunk(ctx, tg, round, md, last)
			if err != nil {
				return err
			}
			tg.maxReqs += mx.Requests()
			tg.maxSecs += float64(mx.ActualDuration) / 1e9
			tg.roundRPS = append(tg.roundRPS, mx.ActualQPS)
			tg.t.Errors += mx.Requests() - mx.OK()
		}
	}
	for _, tg := range targets {
		t := tg.t
		t.P50, t.P90, t.P99 = tg.qpsHist.Percentile(50), tg.qpsHist.Percentile(90), tg.qpsHist.Percentile(99)
		if len(tg.lockHist) > 0 {
			t.LockP50, t.LockP90, t.LockP99 = tg.lockHist.Percentile(50), tg.lockHist.Percentile(90), tg.lockHist.Percentile(99)
			if len(tg.pids) > 0 && tg.lockReqs > 0 {
				t.LockCPUPer1K = tg.lockCPU / float64(tg.lockReqs) * 1000
			}
		}
		if len(tg.pids) > 0 && t.Requests > 0 {
			t.CPUPer1K = tg.cpu / float64(t.Requests) * 1000
		}
		if tg.maxSecs > 0 {
			t.MaxRPS = float64(tg.maxReqs) / tg.maxSecs
		}
		t.RoundMaxRPS = tg.roundRPS
		r.log.Info("measured", "topology", t.Name, "p50", t.P50, "p99", t.P99, "maxRPS", t.MaxRPS)
	}
	for _, tg := range targets {
		if tg.after != nil {
			if err := tg.after(ctx); err != nil {
				return fmt.Errorf("%s: %w", tg.t.Name, err)
			}
		}
	}
	return nil
}

// maxChunk runs one max-throughput chunk on tg; in the last round it
// records perf or Go CPU profiles of the proxies when asked to.
func (r *runner) maxChunk(ctx context.Context, tg *target, round int, d time.Duration, last bool) (*FortioResult, error) {
	var perfs []*exec.Cmd
	var profiles sync.WaitGroup
	if last && r.cfg.Perf {
		for _, pid := range tg.pids {
			out := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("perf-%s-%d.data", tg.tag, pid))
			c := exec.CommandContext(ctx, "perf", "record", "-g", "-F", "499", "-o", out, "-p", strconv.Itoa(pid),
				"--", "sleep", strconv.Itoa(max(1, int(d.Seconds()))))
			if err := c.Start(); err != nil {
				return nil, fmt.Errorf("perf record: %w", err)
			}
			perfs = append(perfs, c)
		}
	}
	if last && r.cfg.PProf {
		secs := max(1, d.Seconds()-1)
		for i, a := range tg.admins {
			out := filepath.Join(r.cfg.WorkDir, fmt.Sprintf("pprof-%s-%d.pb.gz", tg.tag, i))
			profiles.Go(func() {
				if err := fetchTo(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%g", a, secs), out); err != nil {
					r.log.Warn("cpu profile", "admin", a, "err", err)
				}
			})
		}
	}
	mx, err := r.fortio(ctx, fmt.Sprintf("%s-max-%d", tg.tag, round+1), tg.url, tg.host, 0, r.cfg.MaxConns, d)
	for _, c := range perfs {
		_ = c.Wait()
	}
	profiles.Wait()
	return mx, err
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
func (r *runner) fortio(ctx context.Context, name, url, host string, qps, conns int, d time.Duration, extra ...string) (*FortioResult, error) {
	out := filepath.Join(r.cfg.WorkDir, "fortio-"+name+".json")
	args := []string{"load", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(conns), "-t", d.String(),
		"-p", "50,90,99", "-r", "0.00001", "-loglevel", "Warning", "-json", out}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, extra...)
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
