package proxy

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// RuntimeSettings are the Go runtime knobs of a sidecar process (flags
// --concurrency, --gogc, --memory-limit). They are process-wide, so the CLI
// applies them once; proxies embedded in tests leave the runtime alone.
type RuntimeSettings struct {
	// Concurrency caps the OS threads running Go code (GOMAXPROCS), like
	// Istio's proxy `concurrency` (default 2). 0 uses every CPU.
	Concurrency int
	// AdaptiveConcurrency runs one P while the process uses little CPU and
	// Concurrency Ps when it is busy (see ConcurrencyScaler).
	AdaptiveConcurrency bool
	// GOGC is the GC target percentage; 0 keeps the runtime's (or $GOGC's).
	// `weft proxy` defaults to 50: its request path allocates a few dozen
	// bytes per request, so collections stay rare and cheap, and the heap's
	// headroom over the live data is half the runtime default's.
	GOGC int
	// MemoryLimit is the soft heap limit in bytes (GOMEMLIMIT); the GC runs
	// harder as the process nears it. 0 keeps the runtime's (or $GOMEMLIMIT's).
	MemoryLimit int64
}

// Apply sets the process's GOMAXPROCS, GC percent and memory limit. An
// environment variable (GOMAXPROCS, GOGC, GOMEMLIMIT) wins over the
// corresponding default when the flag was not set explicitly (explicit
// says which ones were). With AdaptiveConcurrency and more than one P
// allowed it returns the scaler the caller runs (ConcurrencyScaler.Run),
// which then sets GOMAXPROCS; otherwise nil.
func (s RuntimeSettings) Apply(explicit func(flag string) bool) *ConcurrencyScaler {
	var scaler *ConcurrencyScaler
	if s.Concurrency > 0 && (explicit("concurrency") || os.Getenv("GOMAXPROCS") == "") {
		n := min(s.Concurrency, runtime.NumCPU())
		runtime.GOMAXPROCS(n)
		if s.AdaptiveConcurrency && n > 1 {
			scaler = NewConcurrencyScaler(n)
		}
	}
	if s.GOGC > 0 && (explicit("gogc") || os.Getenv("GOGC") == "") {
		debug.SetGCPercent(s.GOGC)
	}
	if s.MemoryLimit > 0 && (explicit("memory-limit") || os.Getenv("GOMEMLIMIT") == "") {
		debug.SetMemoryLimit(s.MemoryLimit)
	}
	return scaler
}

// ParseByteSize parses "64MiB", "20MB", "1GiB", "1048576" (bytes) into bytes;
// "0" or "" is 0 (no limit).
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("byte size %q: want a non-negative integer with an optional KiB/MiB/GiB/KB/MB/GB suffix", s)
	}
	return n * mult, nil
}

// ReleaseStartupPages drops this process's page-table mappings of its own
// executable's read-only segments (code and read-only data) with
// madvise(MADV_DONTNEED). Startup (package initialisation of the whole weft
// binary, shared by the control plane, CLI and proxy) touches most of the
// ~100 MB executable; the proxy's steady state uses a small part of it. The
// pages stay in the shared page cache, and whatever the proxy runs next is
// faulted back in on first use, so afterwards RSS counts the proxy's
// working set rather than the whole binary. Writable mappings are left
// alone. It returns the size of the address ranges advised (Linux only;
// other systems return 0, nil).
func ReleaseStartupPages() (int64, error) {
	return releaseExecutablePages()
}
