package bench

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"
)

// Targets are issue 4's goals for the weft data plane.
const (
	TargetAddedP99Ratio = 1.0  // weft added p99 / HAProxy added p99, at most
	TargetMaxRPSRatio   = 0.8  // weft max rps / HAProxy max rps, at least
	TargetRSSMB         = 20.0 // per proxy with 100 services, at most
	TargetVCPUPer1K     = 0.1  // vCPU per proxy per 1000 rps, at most
	// TargetMTLSAddedP99Ratio is issue 5's goal: mTLS sidecars' added p99
	// over the plaintext pair's, same run, at most.
	TargetMTLSAddedP99Ratio = 1.2
)

func ms(s float64) string { return fmt.Sprintf("%.3f", s*1000) }

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// Find returns the topology whose name starts with prefix.
func (r *Report) Find(prefix string) *Topology {
	for i := range r.Topologies {
		t := &r.Topologies[i]
		if len(t.Name) >= len(prefix) && t.Name[:len(prefix)] == prefix && t.Skipped == "" {
			return t
		}
	}
	return nil
}

// Print writes the table and the target ratios.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "Data-plane benchmark: %d B bodies, %d rps × %s over %d connections, evenly spaced (fortio -uniform); max throughput: -qps 0, %d connections × %s\n",
		c.BodySize, c.QPS, c.Duration, c.Conns, c.MaxConns, c.MaxDuration)
	fmt.Fprintf(w, "Each topology's runs are split into %d rounds, interleaved (every topology in turn); in each round the constant-rate run is %d slices\nof %s, alternating topologies; percentiles are over the merged slices, max rps is all max-chunk requests over their time.\n\n", c.Rounds, c.Slices, c.Duration/time.Duration(max(c.Rounds*c.Slices, 1)))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "topology\tp50 ms\tp90 ms\tp99 ms\t+p50 ms\t+p90 ms\t+p99 ms\tmax rps\tproxy RSS MB (sum)\tproxy CPU s/1k req (sum)\terrors\t")
	var skipped []string
	direct := r.Find("A")
	for _, t := range r.Topologies {
		if t.Skipped != "" {
			skipped = append(skipped, fmt.Sprintf("  %s: skipped (%s)\n", t.Name, t.Skipped))
			continue
		}
		add := func(v, base float64) string {
			if direct == nil || t.Name == direct.Name {
				return "-"
			}
			return ms(v - base)
		}
		rss, cpu := "-", "-"
		if t.Procs > 0 {
			rss, cpu = fmt.Sprintf("%.1f", mb(t.RSS)), fmt.Sprintf("%.4f", t.CPUPer1K)
		}
		var d Topology
		if direct != nil {
			d = *direct
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%d\t\n", t.Name, ms(t.P50), ms(t.P90), ms(t.P99),
			add(t.P50, d.P50), add(t.P90, d.P90), add(t.P99, d.P99), t.MaxRPS, rss, cpu, t.Errors)
	}
	tw.Flush()
	for _, s := range skipped {
		fmt.Fprint(w, s)
	}
	r.printLockstep(w, direct)

	weft, ha := r.Find("B"), r.Find("C")
	fmt.Fprintln(w, "\nTargets:")
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "MISSED"
	}
	if weft != nil && ha != nil && direct != nil {
		wa, ha99 := weft.P99-direct.P99, ha.P99-direct.P99
		if ha99 > 0 {
			ratio := wa / ha99
			fmt.Fprintf(w, "  weft added p99 / HAProxy added p99  = %.3f / %.3f ms = %.2f  (target ≤ %.1f)  %s\n",
				wa*1000, ha99*1000, ratio, TargetAddedP99Ratio, verdict(ratio <= TargetAddedP99Ratio))
		} else {
			fmt.Fprintf(w, "  weft added p99 / HAProxy added p99  = %.3f / %.3f ms: HAProxy added no p99; ratio undefined\n", wa*1000, ha99*1000)
		}
		ratio := weft.MaxRPS / ha.MaxRPS
		fmt.Fprintf(w, "  weft max rps / HAProxy max rps      = %.0f / %.0f = %.2f  (target ≥ %.1f)  %s\n",
			weft.MaxRPS, ha.MaxRPS, ratio, TargetMaxRPSRatio, verdict(ratio >= TargetMaxRPSRatio))
		if len(weft.RoundMaxRPS) == len(ha.RoundMaxRPS) && len(weft.RoundMaxRPS) > 1 {
			fmt.Fprint(w, "    per round (weft / HAProxy):")
			for i, wr := range weft.RoundMaxRPS {
				fmt.Fprintf(w, "  %.0f/%.0f = %.2f", wr, ha.RoundMaxRPS[i], wr/ha.RoundMaxRPS[i])
			}
			fmt.Fprintln(w)
		}
	}
	if weft != nil {
		fmt.Fprintf(w, "  weft RSS per proxy, %d services     = %.1f MB (largest of the two)  (target ≤ %.0f MB)  %s\n",
			c.Services, mb(weft.RSSMax), TargetRSSMB, verdict(mb(weft.RSSMax) <= TargetRSSMB))
		fmt.Fprintf(w, "    sampled after the proxies settled from the update (server.memory_releases) and %v at %d rps\n", servicesLoad, c.QPS)
		if weft.RSSMaxAnon > 0 {
			fmt.Fprintf(w, "    of which anonymous (heap, stacks) %.1f MB, file-backed (executable text) %.1f MB (smaps_rollup)\n",
				mb(weft.RSSMaxAnon), mb(weft.RSSMaxFile))
			fmt.Fprintf(w, "    proportional set size %.1f MB (pages shared with the other proxies running the same executable count in part)\n",
				mb(weft.RSSMaxPSS))
		}
		if weft.ProxyExe != "" {
			fmt.Fprintf(w, "    the weft proxies ran %s\n", weft.ProxyExe)
		}
		per := weft.CPUPer1K / float64(weft.Procs)
		fmt.Fprintf(w, "  weft vCPU per proxy per 1000 rps    = %.4f (both proxies: %.4f)  (target ≤ %.1f)  %s\n",
			per, weft.CPUPer1K, TargetVCPUPer1K, verdict(per <= TargetVCPUPer1K))
	}
	if weft != nil {
		fmt.Fprintf(w, "  (weft RSS per proxy after the %d rps run: %.1f MB, of which anonymous %.1f MB; the rest maps the executable)\n",
			c.QPS, mb(weft.RSS)/float64(weft.Procs), mb(weft.RSSAnon)/float64(weft.Procs))
	}
	if mt := r.Find("D"); mt != nil && weft != nil && direct != nil {
		ma, wa := mt.P99-direct.P99, weft.P99-direct.P99
		switch {
		case ma <= 0:
			fmt.Fprintf(w, "  weft mTLS added p99 / plaintext added p99 = %.3f / %.3f ms: mTLS p99 below the direct p99, a noisy run; no verdict\n", ma*1000, wa*1000)
		case wa > 0:
			ratio := ma / wa
			fmt.Fprintf(w, "  weft mTLS added p99 / plaintext added p99 = %.3f / %.3f ms = %.2f  (target ≤ %.1f)  %s\n",
				ma*1000, wa*1000, ratio, TargetMTLSAddedP99Ratio, verdict(ratio <= TargetMTLSAddedP99Ratio))
		default:
			fmt.Fprintf(w, "  weft mTLS added p99 / plaintext added p99 = %.3f / %.3f ms: plaintext added no p99; ratio undefined\n", ma*1000, wa*1000)
		}
		fmt.Fprintf(w, "  weft mTLS new connections (handshakes) at the server sidecar = %d over the measurement, %.2f/s (max rps %.0f vs plaintext %.0f)\n",
			mt.NewConns, mt.NewConnsPerSec, mt.MaxRPS, weft.MaxRPS)
	}
	if ha != nil {
		fmt.Fprintf(w, "  HAProxy vCPU per proxy per 1000 rps = %.4f, RSS per proxy %.1f MB (for reference)\n",
			ha.CPUPer1K/float64(ha.Procs), mb(ha.RSS)/float64(ha.Procs))
	}
	if fl := r.Find("E"); fl != nil && weft != nil && direct != nil {
		fmt.Fprintf(w, "  Go floor (E: sockio relay, no HTTP work) vCPU per proxy per 1000 rps = %.4f, added p99 %.3f ms (for reference);\n",
			fl.CPUPer1K/float64(fl.Procs), (fl.P99-direct.P99)*1000)
		fmt.Fprintf(w, "    weft's HTTP work over it: %.1f µs of CPU per request per proxy, %.3f ms of added p99\n",
			(weft.CPUPer1K/float64(weft.Procs)-fl.CPUPer1K/float64(fl.Procs))*1000, (weft.P99-fl.P99)*1000)
	}
	fmt.Fprintln(w, "\nCPU seconds per 1000 requests equal vCPU per 1000 rps. Client (fortio), upstream and proxies share the machine's cores.")
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(w, "Load average at the end (other work on the machine skews the numbers): %s", la)
	}
}

// printLockstep writes the lockstep run's percentiles (no target).
func (r *Report) printLockstep(w io.Writer, direct *Topology) {
	if direct == nil || direct.LockP99 == 0 {
		return
	}
	fmt.Fprintf(w, "\nLockstep: the same %d rps with fortio's default timing (all %d connections fire together every %s), %s per topology; for comparison, no target:\n",
		r.Config.QPS, r.Config.Conns, time.Duration(float64(time.Second)*float64(r.Config.Conns)/float64(r.Config.QPS)), r.Config.LockstepDuration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "topology\tp50 ms\tp90 ms\tp99 ms\t+p50 ms\t+p90 ms\t+p99 ms\tproxy CPU s/1k req (sum)\t")
	for _, t := range r.Topologies {
		if t.Skipped != "" || t.LockP99 == 0 {
			continue
		}
		add := func(v, base float64) string {
			if t.Name == direct.Name {
				return "-"
			}
			return ms(v - base)
		}
		cpu := "-"
		if t.Procs > 0 {
			cpu = fmt.Sprintf("%.4f", t.LockCPUPer1K)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Name, ms(t.LockP50), ms(t.LockP90), ms(t.LockP99),
			add(t.LockP50, direct.LockP50), add(t.LockP90, direct.LockP90), add(t.LockP99, direct.LockP99), cpu)
	}
	tw.Flush()
	if weft, ha := r.Find("B"), r.Find("C"); weft != nil && ha != nil && ha.LockP99 > direct.LockP99 {
		fmt.Fprintf(w, "  lockstep weft added p99 / HAProxy added p99 = %.3f / %.3f ms = %.2f; vCPU per proxy per 1000 rps weft %.4f, HAProxy %.4f\n",
			(weft.LockP99-direct.LockP99)*1000, (ha.LockP99-direct.LockP99)*1000, (weft.LockP99-direct.LockP99)/(ha.LockP99-direct.LockP99),
			weft.LockCPUPer1K/float64(max(weft.Procs, 1)), ha.LockCPUPer1K/float64(max(ha.Procs, 1)))
	}
}
