// Package admin is the control plane's admin HTTP API (plain JSON over
// HTTP, documented in docs/admin-api.md) and its Go client. The server reads
// and writes Istio resources in a store.Store; other components add their own
// routes (proxy status, proxy config, ...) with Server.Handle.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/validation"
)

// MaxBodyBytes bounds the size of an apply request body.
const MaxBodyBytes = 16 << 20

// Apply results, as kubectl prints them.
const (
	ResultCreated    = "created"
	ResultConfigured = "configured"
	ResultUnchanged  = "unchanged"
)

// Error reasons carried in error bodies; the client maps them back to the
// store's sentinel errors.
const (
	ReasonInvalid       = "Invalid"
	ReasonBadRequest    = "BadRequest"
	ReasonNotFound      = "NotFound"
	ReasonConflict      = "Conflict"
	ReasonAlreadyExists = "AlreadyExists"
	ReasonReadOnly      = "ReadOnly"
	ReasonCompacted     = "Compacted"
	ReasonInternal      = "Internal"
)

// Options configures NewServer.
type Options struct {
	// Store holds the resources; required.
	Store store.Store
	// Logger receives request errors. Nil discards them.
	Logger *slog.Logger
	// Version is reported by GET /version. Default "dev".
	Version string
}

// Server serves the admin API. Create it with NewServer, add extra routes
// with Handle before serving, then call Serve (or use it as an http.Handler).
//
// Concurrency: Handle must not be called concurrently with serving; every
// other method is safe for concurrent use.
type Server struct {
	st      store.Store
	log     *slog.Logger
	version string
	mux     *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// NewServer builds the admin API over opts.Store.
func NewServer(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("admin: Options.Store is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	s := &Server{st: opts.Store, log: opts.Logger, version: opts.Version, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /version", s.versionHandler)
	s.mux.HandleFunc("GET /api/v1/resources", s.list)
	s.mux.HandleFunc("GET /api/v1/resources/{kind}/{namespace}/{name}", s.get)
	s.mux.HandleFunc("DELETE /api/v1/resources/{kind}/{namespace}/{name}", s.delete)
	s.mux.HandleFunc("POST /api/v1/apply", s.apply)
	s.mux.HandleFunc("GET /api/v1/watch", s.watch)
	return s, nil
}

// Handle registers an extra route on the API, with a Go 1.22 ServeMux
// pattern such as "GET /api/v1/proxies". It panics on a conflicting pattern,
// like http.ServeMux.Handle.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleFunc is Handle for a function.
func (s *Server) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	s.mux.HandleFunc(pattern, h)
}

// Mux returns the router, for components that register themselves on an
// *http.ServeMux (e.g. xds/server.Server.RegisterHTTP).
func (s *Server) Mux() *http.ServeMux { return s.mux }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve serves the API on lis until ctx ends, then shuts down gracefully
// (waiting up to 5 s for requests in flight; watch streams end with ctx).
// It returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin API on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin API on %s: %w", lis.Addr(), err)
	}
	return nil
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error   string   `json:"error"`
	Reason  string   `json:"reason,omitempty"`
	Details []string `json:"details,omitempty"`
}

// ListResponse is the body of GET /api/v1/resources.
type ListResponse struct {
	Revision int64              `json:"revision"`
	Items    []*config.Resource `json:"items"`
	// Warnings are problems the store knows about (e.g. invalid files in a
	// --config-dir), one message each.
	Warnings []string `json:"warnings,omitempty"`
}

// ApplyResult is the outcome for one resource of an apply.
type ApplyResult struct {
	APIVersion      string `json:"apiVersion"`
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace"`
	Name            string `json:"name"`
	Result          string `json:"result"` // created, configured or unchanged
	ResourceVersion string `json:"resourceVersion"`
}

// ApplyResponse is the body of a successful POST /api/v1/apply.
type ApplyResponse struct {
	DryRun   bool          `json:"dryRun"`
	Revision int64         `json:"revision"`
	Results  []ApplyResult `json:"results"`
	Warnings []string      `json:"warnings,omitempty"`
}

// WatchEvent is one line of GET /api/v1/watch.
type WatchEvent struct {
	Type     store.EventType  `json:"type"`
	Revision int64            `json:"revision"`
	Object   *config.Resource `json:"object"`
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "revision": s.st.Revision()})
}

func (s *Server) versionHandler(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": s.version})
}

// resolveKind accepts a Kind, plural or short name; "" means every kind.
func resolveKind(name string) (string, error) {
	if name == "" || name == "all" {
		return "", nil
	}
	sch, err := config.ResolveKind(name)
	if err != nil {
		return "", err
	}
	return sch.Kind, nil
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	kind, err := resolveKind(r.URL.Query().Get("kind"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, ReasonBadRequest, err, nil)
		return
	}
	items, rev, err := s.st.List(r.Context(), kind, r.URL.Query().Get("namespace"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if items == nil {
		items = []*config.Resource{}
	}
	resp := ListResponse{Revision: rev, Items: items}
	if es, ok := s.st.(interface{ Errors() config.ErrorList }); ok {
		for _, e := range es.Errors() {
			resp.Warnings = append(resp.Warnings, e.Error())
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) key(r *http.Request) (config.Key, error) {
	kind, err := resolveKind(r.PathValue("kind"))
	if err != nil {
		return config.Key{}, err
	}
	if kind == "" {
		return config.Key{}, errors.New("a single resource needs a kind")
	}
	return config.Key{Kind: kind, Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	k, err := s.key(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, ReasonBadRequest, err, nil)
		return
	}
	res, err := s.st.Get(r.Context(), k)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	k, err := s.key(r)
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, ReasonBadRequest, err, nil)
		return
	}
	res, err := s.st.Delete(r.Context(), k, r.URL.Query().Get("resourceVersion"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// decodeApplyBody parses a JSON array of objects, a JSON List object, or a
// (multi-document) YAML stream, then validates every resource.
func decodeApplyBody(body []byte) ([]*config.Resource, config.ErrorList) {
	const file = "request"
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '[' {
		// A bare JSON array: wrap it as a List without moving any line.
		body = append(append([]byte(`{"kind":"List","items":`), body...), '}')
	}
	rs, errs := validation.ParseFile(file, body)
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	if len(rs) == 0 {
		return nil, config.ErrorList{{Source: config.Source{File: file}, Msg: "no resources in request body"}}
	}
	seen := map[config.Key]bool{}
	for _, res := range rs {
		if seen[res.Key()] {
			errs = append(errs, res.FieldError("metadata.name", false, "defined twice in one apply"))
		}
		seen[res.Key()] = true
	}
	if len(errs.Errors()) > 0 {
		return nil, errs
	}
	return rs, errs
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	dryRun := false
	if v := r.URL.Query().Get("dryRun"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.fail(w, r, http.StatusBadRequest, ReasonBadRequest, fmt.Errorf("dryRun=%q: want true or false", v), nil)
			return
		}
		dryRun = b
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		s.fail(w, r, http.StatusRequestEntityTooLarge, ReasonBadRequest, fmt.Errorf("read request body: %w", err), nil)
		return
	}
	rs, problems := decodeApplyBody(body)
	if errs := problems.Errors(); len(errs) > 0 {
		details := make([]string, len(errs))
		for i, e := range errs {
			details[i] = e.Error()
		}
		err := fmt.Errorf("%d validation error(s); nothing was applied", len(errs))
		s.fail(w, r, http.StatusBadRequest, ReasonInvalid, err, details)
		return
	}
	var warnings []string
	for _, e := range problems.Warnings() {
		warnings = append(warnings, e.Error())
	}
	// Read the current state first, to tell created/configured/unchanged
	// apart (the store keeps the resourceVersion of unchanged resources).
	olds := make([]*config.Resource, len(rs))
	for i, res := range rs {
		old, err := s.st.Get(r.Context(), res.Key())
		switch {
		case err == nil:
			olds[i] = old
		case errors.Is(err, store.ErrNotFound):
		default:
			s.storeError(w, r, err)
			return
		}
	}
	resp := ApplyResponse{DryRun: dryRun, Results: make([]ApplyResult, len(rs))}
	if dryRun {
		if err := dryRunCheck(rs, olds); err != nil {
			s.storeError(w, r, err)
			return
		}
		resp.Revision = s.st.Revision()
		for i, res := range rs {
			resp.Results[i] = result(res, olds[i], dryRunOutcome(res, olds[i]))
		}
	} else {
		stored, err := s.st.Apply(r.Context(), store.Upsert, rs)
		if err != nil {
			s.storeError(w, r, err)
			return
		}
		resp.Revision = s.st.Revision()
		for i, res := range stored {
			outcome := ResultCreated
			switch {
			case olds[i] == nil:
			case olds[i].Meta.ResourceVersion == res.Meta.ResourceVersion:
				outcome = ResultUnchanged
			default:
				outcome = ResultConfigured
			}
			resp.Results[i] = result(res, res, outcome)
		}
	}
	resp.Warnings = warnings
	writeJSON(w, http.StatusOK, resp)
}

func result(res, version *config.Resource, outcome string) ApplyResult {
	ar := ApplyResult{APIVersion: res.APIVersion, Kind: res.Kind, Namespace: res.Meta.Namespace, Name: res.Meta.Name, Result: outcome}
	if version != nil {
		ar.ResourceVersion = version.Meta.ResourceVersion
	}
	return ar
}

// dryRunCheck applies the store's resourceVersion preconditions without
// writing.
func dryRunCheck(rs, olds []*config.Resource) error {
	for i, res := range rs {
		rv, old := res.Meta.ResourceVersion, olds[i]
		switch {
		case rv == "":
		case old == nil:
			return fmt.Errorf("apply %s: %w: resourceVersion %s was given but the resource does not exist", res.Key(), store.ErrConflict, rv)
		case rv != old.Meta.ResourceVersion:
			return fmt.Errorf("apply %s: %w: resourceVersion %s was given but the stored one is %s", res.Key(), store.ErrConflict, rv, old.Meta.ResourceVersion)
		}
	}
	return nil
}

func dryRunOutcome(res, old *config.Resource) string {
	switch {
	case old == nil:
		return ResultCreated
	case proto.Equal(res.Spec, old.Spec) && res.APIVersion == old.APIVersion &&
		maps.Equal(res.Meta.Labels, old.Meta.Labels) && maps.Equal(res.Meta.Annotations, old.Meta.Annotations):
		return ResultUnchanged
	default:
		return ResultConfigured
	}
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var from int64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			s.fail(w, r, http.StatusBadRequest, ReasonBadRequest, fmt.Errorf("from=%q: want a revision (non-negative integer)", v), nil)
			return
		}
		from = n
	}
	kind, err := resolveKind(q.Get("kind"))
	if err != nil {
		s.fail(w, r, http.StatusBadRequest, ReasonBadRequest, err, nil)
		return
	}
	ns := q.Get("namespace")
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events, err := s.st.Watch(ctx, from)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for ev := range events {
		if ev.Resource == nil || (kind != "" && ev.Resource.Kind != kind) || (ns != "" && ev.Resource.Meta.Namespace != ns) {
			continue
		}
		if err := enc.Encode(WatchEvent{Type: ev.Type, Revision: ev.Revision, Object: ev.Resource}); err != nil {
			s.log.Debug("watch client went away", "err", err)
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// storeError maps the store's sentinel errors to HTTP statuses.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	status, reason := http.StatusInternalServerError, ReasonInternal
	switch {
	case errors.Is(err, store.ErrNotFound):
		status, reason = http.StatusNotFound, ReasonNotFound
	case errors.Is(err, store.ErrConflict):
		status, reason = http.StatusConflict, ReasonConflict
	case errors.Is(err, store.ErrAlreadyExists):
		status, reason = http.StatusConflict, ReasonAlreadyExists
	case errors.Is(err, store.ErrReadOnly):
		w.Header().Set("Allow", "GET, HEAD")
		status, reason = http.StatusMethodNotAllowed, ReasonReadOnly
	case errors.Is(err, store.ErrCompacted):
		status, reason = http.StatusGone, ReasonCompacted
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		status = http.StatusServiceUnavailable
	}
	s.fail(w, r, status, reason, err, nil)
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, reason string, err error, details []string) {
	if status >= 500 {
		s.log.Error("admin API request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, ErrorBody{Error: err.Error(), Reason: reason, Details: details})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := new(bytes.Buffer)
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		b, _ := json.Marshal(ErrorBody{Error: "encode response: " + err.Error(), Reason: ReasonInternal})
		buf.Write(b)
		buf.WriteByte('\n')
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
