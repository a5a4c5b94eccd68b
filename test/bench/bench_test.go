package bench

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fortioJSON is trimmed from a real fortio 1.68.2 `-json` result.
const fortioJSON = `{"RunType":"HTTP","RequestedQPS":"1000","ActualQPS":999.4086305247911,
"ActualDuration":5003000000,"NumThreads":8,"Version":"1.68.2",
"DurationHistogram":{"Count":5000,"Min":0.0003,"Max":0.02,"Sum":12.1,"Avg":0.00242,"StdDev":0.001,
"Data":[],"Percentiles":[{"Percentile":50,"Value":0.0024248447204968946},{"Percentile":90,"Value":0.003786},{"Percentile":99,"Value":0.00928571428571433}]},
"RetCodes":{"200":4990,"503":10},"URL":"http://127.0.0.1:1/"}`

func TestParseFortio(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"real result", fortioJSON, ""},
		{"not json", `fortio: error`, "decode fortio result"},
		{"no requests", `{"DurationHistogram":{"Count":0}}`, "no requests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseFortio([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests() != 5000 || r.OK() != 4990 || r.ActualQPS < 999 || r.ActualQPS > 1000 {
				t.Errorf("requests %d ok %d qps %f", r.Requests(), r.OK(), r.ActualQPS)
			}
			if p, err := r.Percentile(99); err != nil || p != 0.00928571428571433 {
				t.Errorf("p99 = %v, %v", p, err)
			}
			if _, err := r.Percentile(99.9); err == nil {
				t.Error("p99.9 was not requested but was found")
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    float64
		wantErr bool
	}{
		{"plain", "123 (weft) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1000 1000000 2000", 3.0, false},
		{"comm with spaces and parens", "9 (a b) c)) R 1 9 9 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 1 1", 0.1, false},
		{"no comm", "123 weft S 1", 0, true},
		{"short", "123 (weft) S 1 2 3", 0, true},
		{"bad utime", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 3 0", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatCPU(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseStatusRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"present", "Name:\tweft\nVmPeak:\t  9000 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n", 20480 * 1024, false},
		{"missing", "Name:\tweft\nThreads:\t8\n", 0, true},
		{"bad unit", "VmRSS:\t 1 MB\n", 0, true},
		{"bad number", "VmRSS:\t x kB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatusRSS(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestProcSelf(t *testing.T) {
	rss, err := ProcRSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("own RSS = %d, %v", rss, err)
	}
	anon, err := ProcRSSAnon(os.Getpid())
	if err != nil || anon <= 0 || anon > rss {
		t.Fatalf("own RssAnon = %d (RSS %d), %v", anon, rss, err)
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if _, err := ProcRSS(-1); err == nil {
		t.Error("RSS of pid -1 succeeded")
	}
}

// TestHAProxyConfig checks the generated configuration with haproxy -c.
func TestHAProxyConfig(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy not installed (hack/install-deps.sh installs it)")
	}
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "h.cfg")
	if err := os.WriteFile(p, []byte(haproxyConfig(listen, "127.0.0.1:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.cfg")
	if err := os.WriteFile(bad, []byte(haproxyConfig(listen, "127.0.0.1:1")+"  nonsense directive\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(bin, "-c", "-f", bad).Run(); err == nil {
		t.Error("haproxy accepted a broken configuration; the check above proves nothing")
	}
}

// TestBenchSmoke runs the whole benchmark briefly. It starts real processes
// and takes about a minute, so it only runs with WEFT_BENCH=1 and
// WEFT_BIN / FORTIO_BIN set (make bench-proxy runs the full program instead).
func TestBenchSmoke(t *testing.T) {
	if os.Getenv("WEFT_BENCH") != "1" {
		t.Skip("set WEFT_BENCH=1 (and WEFT_BIN, FORTIO_BIN) to run the data-plane benchmark")
	}
	cfg := Config{Weft: os.Getenv("WEFT_BIN"), Fortio: os.Getenv("FORTIO_BIN"),
		Duration: 3 * time.Second, MaxDuration: 3 * time.Second, Services: 10, Slices: 1}
	cfg.HAProxy, _ = exec.LookPath("haproxy")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	rep.Print(&b)
	t.Log("\n" + b.String())
	w := rep.Find("B")
	if w == nil || w.Requests < 2000 || w.Errors != 0 || w.MaxRPS <= 0 || w.RSS <= 0 || w.RSSMax <= 0 || w.CPUPer1K <= 0 || w.LockP99 <= 0 {
		t.Errorf("weft topology incomplete: %+v", w)
	}
	if !strings.Contains(b.String(), "weft max rps / HAProxy max rps") && cfg.HAProxy != "" {
		t.Error("report lacks the HAProxy ratio")
	}
	if fl := rep.Find("E"); fl == nil || fl.Requests < 2000 || fl.Errors != 0 || fl.CPUPer1K <= 0 {
		t.Errorf("Go floor topology incomplete: %+v", fl)
	}
	if !strings.Contains(b.String(), "Lockstep:") {
		t.Error("report lacks the lockstep run")
	}
}

func TestProcRSSSplit(t *testing.T) {
	anon, file, pss, err := ProcRSSSplit(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rss, err := ProcRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if anon <= 0 || file <= 0 || anon+file > 2*rss {
		t.Errorf("anon %d + file %d vs RSS %d", anon, file, rss)
	}
	if pss <= 0 || pss > anon+file {
		t.Errorf("Pss %d, want within (0, anon %d + file %d]", pss, anon, file)
	}
}

// A real fortio result: the merged-histogram percentile of one run must
// agree with fortio's own, and two copies of a run merge to the same
// percentiles (twice the counts everywhere).
func TestHistogramMatchesFortio(t *testing.T) {
	b, err := os.ReadFile("testdata/fortio-1000qps.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseFortio(b)
	if err != nil {
		t.Fatal(err)
	}
	h := r.Histogram()
	if len(h) < 5 {
		t.Fatalf("histogram has %d buckets", len(h))
	}
	twice := append(append(Histogram{}, h...), h...)
	for _, p := range []float64{50, 90, 99} {
		want, err := r.Percentile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.Percentile(p); math.Abs(got-want) > 0.005*want {
			t.Errorf("p%g = %.6f, fortio says %.6f", p, got, want)
		}
		if got, one := twice.Percentile(p), h.Percentile(p); math.Abs(got-one) > 1e-9 {
			t.Errorf("p%g of a run merged with itself = %.6f, of the run %.6f", p, got, one)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	fast := Histogram{{Start: 0.001, End: 0.002, Count: 99}, {Start: 0.002, End: 0.003, Count: 1}}
	slow := Histogram{{Start: 0.010, End: 0.020, Count: 100}}
	m := append(append(Histogram{}, fast...), slow...)
	// 200 requests: the 50th percentile is the last of the fast run's
	// (100th request, 0.003 s), p75 lies halfway through the slow run.
	if got := m.Percentile(50); math.Abs(got-0.003) > 1e-6 {
		t.Errorf("p50 = %v, want 0.003", got)
	}
	if got := m.Percentile(75); math.Abs(got-0.015) > 1e-6 {
		t.Errorf("p75 = %v, want 0.015", got)
	}
	if got := fast.Percentile(50); math.Abs(got-(0.001+0.001*50.0/99)) > 1e-6 {
		t.Errorf("fast p50 = %v", got)
	}
	if got := (Histogram{}).Percentile(99); got != 0 {
		t.Errorf("empty p99 = %v", got)
	}
}
