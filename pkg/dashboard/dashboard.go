// Package dashboard is Weft's web UI (port 20001 by default): a service graph
// with live request rate, error rate, p99 latency and mTLS per edge, per
// service and per workload golden signals over time, the applied Istio
// configuration with validation warnings, proxy sync status and recent
// non-2xx responses with their Envoy response flags.
//
// The dashboard scrapes every connected proxy's /stats/prometheus (the Istio
// standard metrics) itself and keeps an in-memory ring buffer of deltas, so
// it needs no Prometheus. It learns about proxies and configuration through
// the Sources interface: the control plane implements it in-process, and
// HTTPSources implements it over the control plane's admin API for the
// standalone `weft dashboard` command.
//
// The single-page app is built from web/ with npm into dist/ and embedded.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/weftmesh/weft/pkg/config"
)

//go:embed all:dist
var distFS embed.FS

// Options configure a Dashboard.
type Options struct {
	// Sources lists proxies and configuration; required.
	Sources Sources
	// Logger defaults to a discarding logger.
	Logger *slog.Logger
	// Clock returns the current time; defaults to time.Now.
	Clock func() time.Time
	// ScrapeInterval is the time between scrape rounds; default 5s.
	ScrapeInterval time.Duration
	// ScrapeTimeout bounds one proxy's scrape; default ScrapeInterval.
	ScrapeTimeout time.Duration
	// Retention is how much history is kept; default 1h.
	Retention time.Duration
	// Window is the default window graph numbers cover; default 1m.
	Window time.Duration
	// Assets overrides the embedded single-page app (tests, development).
	Assets fs.FS
	// HTTPClient is used for scraping; default a plain client.
	HTTPClient *http.Client
	// TracesURL is the base URL of a trace read API (GET
	// /api/v1/traces?service=S, /api/v1/traces/{id}), e.g. the control
	// plane's admin API; empty: the Traces tab has no data.
	TracesURL string
}

// Dashboard scrapes proxies and serves the UI and its JSON API.
type Dashboard struct {
	opts   Options
	log    *slog.Logger
	client *http.Client
	hist   *history
	assets fs.FS
}

// New returns a Dashboard; call Run to scrape and Handler to serve.
func New(opts Options) (*Dashboard, error) {
	if opts.Sources == nil {
		return nil, errors.New("dashboard: Options.Sources is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = 5 * time.Second
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = opts.ScrapeInterval
	}
	if opts.Retention <= 0 {
		opts.Retention = time.Hour
	}
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	assets := opts.Assets
	if assets == nil {
		sub, err := fs.Sub(distFS, "dist")
		if err != nil {
			return nil, fmt.Errorf("dashboard: embedded assets: %w", err)
		}
		assets = sub
	}
	capacity := int(opts.Retention / opts.ScrapeInterval)
	if capacity < 2 {
		capacity = 2
	}
	return &Dashboard{
		opts:   opts,
		log:    opts.Logger,
		client: opts.HTTPClient,
		hist:   newHistory(capacity, 500),
		assets: assets,
	}, nil
}

// Run scrapes all proxies every ScrapeInterval until ctx is done.
func (d *Dashboard) Run(ctx context.Context) error {
	t := time.NewTicker(d.opts.ScrapeInterval)
	defer t.Stop()
	for {
		if err := d.scrapeOnce(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("dashboard scrape failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ListenAndServe scrapes and serves the dashboard on addr until ctx is done.
// ready, if not nil, is called with the bound address once listening.
func (d *Dashboard) ListenAndServe(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dashboard: listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	scrapeDone := make(chan struct{})
	go func() {
		defer close(scrapeDone)
		_ = d.Run(ctx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	d.log.Info("dashboard listening", "address", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case <-ctx.Done():
		shCtx, shCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer shCancel()
		_ = srv.Shutdown(shCtx)
		<-serveErr
		err = nil
	case err = <-serveErr:
		cancel()
		err = fmt.Errorf("dashboard: serve: %w", err)
	}
	<-scrapeDone
	return err
}

// Handler serves the JSON API under /api/ and the single-page app elsewhere.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/graph", d.handleGraph)
	mux.HandleFunc("GET /api/services/{ns}/{name}", d.handleDetail(NodeService))
	mux.HandleFunc("GET /api/workloads/{ns}/{name}", d.handleDetail(NodeWorkload))
	mux.HandleFunc("GET /api/config", d.handleConfig)
	mux.HandleFunc("GET /api/proxies", d.handleProxies)
	mux.HandleFunc("GET /api/errors", d.handleErrors)
	mux.HandleFunc("GET /api/traces", d.handleTraces)
	mux.HandleFunc("GET /api/traces/{id}", d.handleTraces)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API: "+r.Method+" "+r.URL.Path)
	})
	mux.HandleFunc("/", d.serveSPA)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// durationParam reads a duration query parameter ("30s", "5m").
func durationParam(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("query parameter %s=%q: want a positive duration like 30s or 5m", name, v)
	}
	return d, nil
}

func (d *Dashboard) snapshot() []tick {
	d.hist.mu.RLock()
	defer d.hist.mu.RUnlock()
	return append([]tick(nil), d.hist.ordered()...)
}

// knownProxies returns the proxies seen by the latest scrape round.
func (d *Dashboard) knownProxies() []ProxyInfo {
	d.hist.mu.RLock()
	defer d.hist.mu.RUnlock()
	out := make([]ProxyInfo, 0, len(d.hist.proxies))
	for _, st := range d.hist.proxies {
		out = append(out, st.info)
	}
	return out
}

func (d *Dashboard) handleGraph(w http.ResponseWriter, r *http.Request) {
	win, err := durationParam(r, "window", d.opts.Window)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, buildGraph(d.snapshot(), d.knownProxies(), d.opts.Clock(), win))
}

func (d *Dashboard) handleDetail(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		win, err := durationParam(r, "window", d.opts.Window)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		span, err := durationParam(r, "range", 10*time.Minute)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		ns, name := r.PathValue("ns"), r.PathValue("name")
		det, ok := buildDetail(kind, ns, name, d.snapshot(), d.opts.Clock(), win, span)
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no traffic recorded for %s %s/%s", kind, ns, name))
			return
		}
		writeJSON(w, det)
	}
}

// ConfigView is the answer of GET /api/config.
type ConfigView struct {
	Resources []*config.Resource `json:"resources"`
	Warnings  []string           `json:"warnings"`
}

func (d *Dashboard) handleConfig(w http.ResponseWriter, r *http.Request) {
	res, warns, err := d.opts.Sources.Resources(r.Context())
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	sort.Slice(res, func(i, j int) bool {
		a, b := res[i].Key(), res[j].Key()
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	if res == nil {
		res = []*config.Resource{}
	}
	if warns == nil {
		warns = []string{}
	}
	writeJSON(w, ConfigView{Resources: res, Warnings: warns})
}

// ProxyView is one row of GET /api/proxies.
type ProxyView struct {
	ProxyInfo
	Scrape *ScrapeStatus `json:"scrape,omitempty"`
}

func (d *Dashboard) handleProxies(w http.ResponseWriter, r *http.Request) {
	ps, err := d.opts.Sources.Proxies(r.Context())
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].ID < ps[j].ID })
	out := make([]ProxyView, 0, len(ps))
	d.hist.mu.RLock()
	for _, p := range ps {
		v := ProxyView{ProxyInfo: p}
		if st := d.hist.proxies[p.ID]; st != nil {
			v.Scrape = &ScrapeStatus{LastScrape: st.lastScrape, Error: st.lastErr, Series: st.series}
		}
		out = append(out, v)
	}
	d.hist.mu.RUnlock()
	writeJSON(w, out)
}

func (d *Dashboard) handleErrors(w http.ResponseWriter, r *http.Request) {
	d.hist.mu.RLock()
	out := make([]ErrorEvent, 0, len(d.hist.errors))
	for i := len(d.hist.errors) - 1; i >= 0; i-- { // newest first
		out = append(out, d.hist.errors[i])
	}
	d.hist.mu.RUnlock()
	writeJSON(w, out)
}

// serveSPA serves a built asset when one exists at the path, otherwise
// index.html so client-side routes survive a reload.
func (d *Dashboard) serveSPA(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	p := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if p != "" {
		if st, err := fs.Stat(d.assets, p); err == nil && !st.IsDir() {
			if strings.HasPrefix(p, "assets/") {
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			}
			http.ServeFileFS(w, r, d.assets, p)
			return
		}
	}
	data, err := fs.ReadFile(d.assets, "index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "dashboard assets missing index.html (run `make web`)")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(data)
}
