package admin

import (
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
	d := 10 * time.Second
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n <= 0 || time.Duration(n*float64(time.Second)) > maxProfile {
			http.Error(w, "seconds: a number in (0, 120]", http.StatusBadRequest)
			return
		}
		d = time.Duration(n * float64(time.Second))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}

// execTrace writes a runtime execution trace (`go tool trace`) of the
// next ?seconds=N (default 1, at most 120) seconds: scheduling latency,
// GC pauses and blocking per goroutine. One trace at a time (409).
func execTrace(w http.ResponseWriter, r *http.Request) {
	d := time.Second
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n <= 0 || time.Duration(n*float64(time.Second)) > maxProfile {
			http.Error(w, "seconds: a number in (0, 120]", http.StatusBadRequest)
			return
		}
		d = time.Duration(n * float64(time.Second))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := trace.Start(w); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
	trace.Stop()
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
