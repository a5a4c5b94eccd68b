package admin

import (
	"io"
	"net/http"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"
)

// maxProfile bounds GET /debug/pprof/profile?seconds=N.
const maxProfile = 120 * time.Second

// cpuProfile writes a pprof CPU profile of the next ?seconds=N (default 10)
// seconds, the Go counterpart of Envoy's admin /cpuprofiler. Only one
// profile runs at a time; a second request gets 409.
func cpuProfile(w http.ResponseWriter, r *http.Request) {
	record(w, r, 10*time.Second, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// execTrace writes a runtime execution trace (`go tool trace`) of the
// next ?seconds=N (default 1) seconds: scheduling latency, GC pauses and
// blocking per goroutine. One trace at a time (409).
func execTrace(w http.ResponseWriter, r *http.Request) {
	record(w, r, time.Second, trace.Start, trace.Stop)
}

// record runs start → wait ?seconds=N (default def, at most maxProfile, or
// until the client goes away) → stop, streaming to w.
func record(w http.ResponseWriter, r *http.Request, def time.Duration, start func(io.Writer) error, stop func()) {
	d := def
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n <= 0 || time.Duration(n*float64(time.Second)) > maxProfile {
			http.Error(w, "seconds: a number in (0, 120]", http.StatusBadRequest)
			return
		}
		d = time.Duration(n * float64(time.Second))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := start(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
	stop()
}

// namedProfile writes one of runtime/pprof's profiles (heap, allocs,
// goroutine, mutex, block, threadcreate) in pprof's binary format;
// ?gc=1 runs a collection first so heap shows live objects only.
func namedProfile(w http.ResponseWriter, r *http.Request) {
	p := pprof.Lookup(r.PathValue("name"))
	if p == nil {
		http.Error(w, "unknown profile", http.StatusNotFound)
		return
	}
	if r.URL.Query().Get("gc") == "1" {
		runtime.GC()
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_ = p.WriteTo(w, 0)
}
