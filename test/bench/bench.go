// Package bench is the data-plane benchmark behind `make bench-proxy`: it
// compares a direct client → server path with the same traffic through two
// weft sidecars (outbound → inbound, configured by a real control plane) and
// through two HAProxy hops, driving load with fortio, all on 127.0.0.1. Two
// more topologies give context: the weft pair with mutual TLS (D), and the
// Go floor (E), two relays doing only the proxy's socket work
// (cmd/floorrelay), so the report can say what weft's HTTP work costs.
package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// FortioResult is the part of fortio's `-json` output the benchmark reads.
type FortioResult struct {
	RequestedQPS      string         `json:"RequestedQPS"`
	ActualQPS         float64        `json:"ActualQPS"`
	ActualDuration    int64          `json:"ActualDuration"` // nanoseconds
	NumThreads        int            `json:"NumThreads"`
	RetCodes          map[string]int `json:"RetCodes"`
	DurationHistogram struct {
		Count       int64    `json:"Count"`
		Avg         float64  `json:"Avg"`
		Data        []Bucket `json:"Data"`
		Percentiles []struct {
			Percentile float64 `json:"Percentile"`
			Value      float64 `json:"Value"` // seconds
		} `json:"Percentiles"`
	} `json:"DurationHistogram"`
}

// ParseFortio decodes fortio's JSON result.
func ParseFortio(b []byte) (*FortioResult, error) {
	var r FortioResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode fortio result: %w", err)
	}
	if r.DurationHistogram.Count == 0 {
		return nil, fmt.Errorf("fortio result has no requests")
	}
	return &r, nil
}

// Percentile returns the latency (seconds) at percentile p, or an error if
// fortio was not asked for it.
func (r *FortioResult) Percentile(p float64) (float64, error) {
	for _, x := range r.DurationHistogram.Percentiles {
		if x.Percentile == p {
			return x.Value, nil
		}
	}
	return 0, fmt.Errorf("fortio result has no p%g", p)
}

// Histogram returns the run's latency histogram.
func (r *FortioResult) Histogram() Histogram { return r.DurationHistogram.Data }

// Bucket is one of fortio's histogram buckets: Count requests took
// between Start and End seconds (the first bucket starts at the run's
// minimum, the last ends at its maximum).
type Bucket struct {
	Start float64 `json:"Start"`
	End   float64 `json:"End"`
	Count int64   `json:"Count"`
}

// Histogram is the union of the buckets of one or more runs; appending
// two runs' buckets merges them.
type Histogram []Bucket

// below is how many requests took at most x seconds, counting each
// bucket's requests as spread evenly over it (fortio's own model for its
// percentiles).
func (h Histogram) below(x float64) float64 {
	var n float64
	for _, b := range h {
		switch {
		case x >= b.End:
			n += float64(b.Count)
		case x > b.Start:
			n += float64(b.Count) * (x - b.Start) / (b.End - b.Start)
		}
	}
	return n
}

// Percentile returns the latency (seconds) at percentile p (0–100) of
// the merged histogram, 0 when it is empty.
func (h Histogram) Percentile(p float64) float64 {
	var total int64
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, b := range h {
		total += b.Count
		lo, hi = min(lo, b.Start), max(hi, b.End)
	}
	if total == 0 {
		return 0
	}
	want := p / 100 * float64(total)
	for range 64 { // bisection: below is monotonic in x
		mid := (lo + hi) / 2
		if h.below(mid) < want {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// Requests is the number of requests fortio sent.
func (r *FortioResult) Requests() int64 { return r.DurationHistogram.Count }

// OK is the number of 200 answers.
func (r *FortioResult) OK() int64 { return int64(r.RetCodes["200"]) }

// ClockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat; it is
// 100 on every Linux architecture Go supports.
const ClockTicks = 100

// ParseStatCPU returns utime+stime in seconds from the text of /proc/PID/stat.
func ParseStatCPU(stat string) (float64, error) {
	// The command name (field 2) is in parentheses and may hold spaces, so
	// count fields from the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// After ')': state(3) ppid(4) ... utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields after comm", len(f))
	}
	ut, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return float64(ut+st) / ClockTicks, nil
}

// ParseStatusRSS returns VmRSS in bytes from the text of /proc/PID/status.
func ParseStatusRSS(status string) (int64, error) { return parseStatusKB(status, "VmRSS") }

func parseStatusKB(status, field string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed %s line %q", field, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", field, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no %s line", field)
}

// ProcCPU reads the CPU seconds (user+system) process pid has used.
func ProcCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseStatCPU(string(b))
}

// ProcRSSAnon reads the anonymous part of the resident set (heap, stacks),
// without the pages that map the executable, in bytes.
func ProcRSSAnon(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKB(string(b), "RssAnon")
}

// ProcRSSSplit reads /proc/PID/smaps_rollup: the anonymous part of the
// resident set (Anonymous: heap, stacks), the rest (Rss - Anonymous:
// file-backed pages such as the executable's text) and the proportional
// set size (Pss: each page divided by the number of processes mapping it).
func ProcRSSSplit(pid int) (anon, file, pss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	var rss int64
	for _, f := range []struct {
		name string
		v    *int64
	}{{"Rss", &rss}, {"Anonymous", &anon}, {"Pss", &pss}} {
		if *f.v, err = parseStatusKB(string(b), f.name); err != nil {
			return 0, 0, 0, fmt.Errorf("smaps_rollup: %w", err)
		}
	}
	return anon, rss - anon, pss, nil
}

// ProcRSS reads the resident set size of process pid in bytes.
func ProcRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return ParseStatusRSS(string(b))
}
