package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

// ProxyConfig is one proxy's generated resources of one type, as served by
// GET /api/v1/proxies/{id}/config.
type ProxyConfig struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Version string `json:"version"`
	// Resources are the Envoy resources in protojson form, sorted by name.
	Resources []json.RawMessage `json:"resources"`
}

var configTypes = map[string]int{"clusters": cds, "listeners": lds, "routes": rds, "endpoints": eds}

// RegisterHTTP adds the proxy-status and proxy-config endpoints:
// GET /api/v1/proxies, GET /api/v1/proxies/{id}/config?type=listeners|routes|clusters|endpoints,
// and GET /api/v1/sync?revision=N&timeout=10s, which answers 200 once every
// connected proxy ACKed config generated from store revision N or later
// (409 when one NACKed it, 504 on timeout), for `weft apply --wait`.
func (s *Server) RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/sync", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		rev, err := strconv.ParseInt(q.Get("revision"), 10, 64)
		if err != nil || rev < 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "revision must be a store revision number"})
			return
		}
		timeout := 10 * time.Second
		if t := q.Get("timeout"); t != "" {
			if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "timeout must be a positive duration such as 10s"})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		switch err := s.WaitForRevision(ctx, rev); {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]any{"revision": rev, "proxies": len(s.Status())})
		case errors.Is(err, ErrNacked):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusGatewayTimeout, map[string]string{"error": err.Error()})
		}
	})
	mux.HandleFunc("GET /api/v1/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("GET /api/v1/proxies/{id}/config", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		typ := strings.ToLower(r.URL.Query().Get("type"))
		ti, ok := configTypes[typ]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "type must be one of listeners, routes, clusters, endpoints"})
			return
		}
		pc, found, err := s.ProxyConfig(id, ti)
		switch {
		case !found:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "proxy " + id + " not found"})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		default:
			pc.Type = typ
			writeJSON(w, http.StatusOK, pc)
		}
	})
}

// ProxyConfig returns the generated resources of type index ti for a proxy.
func (s *Server) ProxyConfig(id string, ti int) (*ProxyConfig, bool, error) {
	s.mu.Lock()
	p := s.proxies[id]
	if p == nil {
		s.mu.Unlock()
		return nil, false, nil
	}
	g := p.gen[ti]
	s.mu.Unlock()
	pc := &ProxyConfig{ID: id, Version: g.version, Resources: []json.RawMessage{}}
	for _, r := range g.resources {
		b, err := protojson.Marshal(r)
		if err != nil {
			return nil, true, err
		}
		pc.Resources = append(pc.Resources, b)
	}
	return pc, true, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
