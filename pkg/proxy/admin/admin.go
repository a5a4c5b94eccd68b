// Package admin serves the proxy's Envoy-like admin endpoints
// (/config_dump, /clusters, /certs, /stats, /stats/prometheus, /ready, /logging,
// and Go profiles under /debug/pprof/)
// and the health and status endpoints (/healthz/ready, /quitquitquit).
package admin

import (
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/weftmesh/weft/pkg/proxy/stats"
)

// Source is what the admin endpoints read. Implementations must be safe
// for concurrent use.
type Source interface {
	// ConfigDump returns JSON of the current xDS resources.
	ConfigDump() ([]byte, error)
	// WriteClusters writes Envoy-style "cluster::host::stat::value" lines.
	WriteClusters(w io.Writer)
	// Ready reports whether the first complete config was applied.
	Ready() bool
	// WriteStats writes Envoy-named "cluster.NAME.STAT: VALUE" lines.
	WriteStats(w io.Writer)
}

// Handlers builds the HTTP muxes.
type Handlers struct {
	Src   Source
	Stats *stats.Registry
	Level *slog.LevelVar
	// Quit is called by POST /quitquitquit.
	Quit func()
	// Certs returns the workload certificate chain in use (leaf first), or
	// nil without one; GET /certs shows it like Envoy's admin /certs.
	Certs func() []*x509.Certificate
}

// Admin returns the admin mux.
func (h *Handlers) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		b, err := h.Src.ConfigDump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /clusters", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		h.Src.WriteClusters(w)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		h.Src.WriteStats(w)
		_ = h.Stats.WriteText(w)
	})
	mux.HandleFunc("GET /stats/prometheus", h.prometheus)
	mux.HandleFunc("GET /ready", h.ready)
	mux.HandleFunc("GET /certs", h.certs)
	mux.HandleFunc("POST /logging", h.logging)
	mux.HandleFunc("GET /logging", h.logging)
	mux.HandleFunc("POST /quitquitquit", h.quit)
	mux.HandleFunc("GET /debug/pprof/profile", cpuProfile)
	mux.HandleFunc("GET /debug/pprof/trace", execTrace)
	mux.HandleFunc("GET /debug/pprof/{name}", namedProfile)
	return mux
}

// Health returns the health mux (/healthz/ready).
func (h *Handlers) Health() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", h.ready)
	return mux
}

// Status returns the status mux (Istio's 15020): /healthz/ready,
// /stats/prometheus (merged proxy metrics) and POST /quitquitquit.
func (h *Handlers) Status() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", h.ready)
	mux.HandleFunc("GET /stats/prometheus", h.prometheus)
	mux.HandleFunc("POST /quitquitquit", h.quit)
	return mux
}

// Metrics returns the metrics mux (/stats/prometheus).
func (h *Handlers) Metrics() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats/prometheus", h.prometheus)
	return mux
}

func (h *Handlers) prometheus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_ = h.Stats.WritePrometheus(w)
}

func (h *Handlers) ready(w http.ResponseWriter, _ *http.Request) {
	if !h.Src.Ready() {
		http.Error(w, "not ready: no complete configuration from the control plane yet", http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "LIVE\n")
}

func (h *Handlers) quit(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, "OK\n")
	if h.Quit != nil {
		go h.Quit()
	}
}

func (h *Handlers) logging(w http.ResponseWriter, r *http.Request) {
	if lv := r.URL.Query().Get("level"); lv != "" && r.Method == http.MethodPost {
		var l slog.Level
		if err := l.UnmarshalText([]byte(strings.ToUpper(lv))); err != nil {
			if strings.EqualFold(lv, "trace") {
				l = slog.LevelDebug
			} else {
				http.Error(w, fmt.Sprintf("bad level %q: %v", lv, err), http.StatusBadRequest)
				return
			}
		}
		h.Level.Set(l)
	}
	fmt.Fprintf(w, "active loggers:\n  weft: %s\n", strings.ToLower(h.Level.Level().String()))
}
