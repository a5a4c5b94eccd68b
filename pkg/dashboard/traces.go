package dashboard

import (
	"io"
	"net/http"
	"net/url"
	"strings"
)

// handleTraces serves /api/traces and /api/traces/{id} from the trace
// read API at Options.TracesURL (the control plane's admin API, which has
// it when the built-in collector runs: `weft control-plane
// --zipkin-address`). The answers are Zipkin v2 spans: a trace is an
// array of spans, /api/traces an array of traces.
func (d *Dashboard) handleTraces(w http.ResponseWriter, r *http.Request) {
	if d.opts.TracesURL == "" {
		writeError(w, http.StatusNotFound, "no trace collector configured")
		return
	}
	path := "/api/v1/traces"
	if id := r.PathValue("id"); id != "" {
		path += "/" + url.PathEscape(id)
	}
	q := url.Values{}
	if s := r.URL.Query().Get("service"); s != "" {
		q.Set("service", s)
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		q.Set("limit", l)
	}
	base := d.opts.TracesURL
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := strings.TrimSuffix(base, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	resp, err := d.client.Do(req)
	if err != nil {
		writeError(w, http.StatusBadGateway, "trace collector: "+err.Error())
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound && r.PathValue("id") == "" {
		writeError(w, http.StatusNotFound, "the control plane runs no trace collector (weft control-plane --zipkin-address)")
		return
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		writeError(w, resp.StatusCode, strings.TrimSpace(string(b)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 32<<20))
}
