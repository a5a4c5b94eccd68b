package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/weftmesh/weft/pkg/config"
)

// Sync states of one xDS type on one proxy, as the ADS server reports them.
const (
	SyncSynced  = "SYNCED"
	SyncStale   = "STALE"
	SyncNacked  = "NACKED"
	SyncNotSent = "NOT SENT"
)

// Sources is what the dashboard needs from the control plane. The control
// plane implements it in-process; HTTPSources implements it over the admin API.
type Sources interface {
	// Proxies lists the proxies connected to the control plane.
	Proxies(ctx context.Context) ([]ProxyInfo, error)
	// Resources returns the applied Istio resources and validation warnings.
	Resources(ctx context.Context) ([]*config.Resource, []string, error)
}

// ProxyInfo is one connected proxy as the dashboard shows it.
type ProxyInfo struct {
	ID        string            `json:"id"`
	Namespace string            `json:"namespace"`
	Workload  string            `json:"workload"`
	Labels    map[string]string `json:"labels,omitempty"`
	// MetricsAddress is host:port serving /stats/prometheus; empty when the
	// proxy did not announce one (it is then not scraped).
	MetricsAddress string `json:"metricsAddress,omitempty"`
	// Sync maps a short xDS type name (CDS, EDS, LDS, RDS, SDS, ...) to its state.
	Sync map[string]SyncStatus `json:"sync,omitempty"`
	// Disconnected marks a proxy the control plane remembers but that has
	// no ADS stream; it is not scraped.
	Disconnected bool `json:"disconnected,omitempty"`
	// ConnectedAt is when the proxy's ADS stream started, if known.
	ConnectedAt time.Time `json:"connectedAt,omitzero"`
}

// SyncStatus is the state of one xDS type on one proxy.
type SyncStatus struct {
	Status string `json:"status"` // SyncSynced, SyncStale, SyncNacked or SyncNotSent
	Error  string `json:"error,omitempty"`
}

// HTTPSources reads proxies and resources from the control plane's admin API
// (GET /api/v1/proxies and GET /api/v1/resources).
type HTTPSources struct {
	base   *url.URL
	client *http.Client
}

// NewHTTPSources returns Sources backed by the admin API at server
// ("http://127.0.0.1:8080"). A nil client uses a client with a 10 s timeout.
func NewHTTPSources(server string, client *http.Client) (*HTTPSources, error) {
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil {
		return nil, fmt.Errorf("admin API address %q: %w", server, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("admin API address %q has no host", server)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &HTTPSources{base: u, client: client}, nil
}

func (s *HTTPSources) get(ctx context.Context, path string) ([]byte, error) {
	u := s.base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build request %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// Proxies implements Sources.
func (s *HTTPSources) Proxies(ctx context.Context) ([]ProxyInfo, error) {
	body, err := s.get(ctx, "/api/v1/proxies")
	if err != nil {
		return nil, err
	}
	return decodeProxies(body)
}

// Resources implements Sources.
func (s *HTTPSources) Resources(ctx context.Context) ([]*config.Resource, []string, error) {
	body, err := s.get(ctx, "/api/v1/resources")
	if err != nil {
		return nil, nil, err
	}
	return decodeResources(body)
}

// wireProxy accepts the field spellings the admin API may use for a proxy.
type wireProxy struct {
	ID             string            `json:"id"`
	NodeID         string            `json:"nodeId"`
	Namespace      string            `json:"namespace"`
	Workload       string            `json:"workload"`
	WorkloadName   string            `json:"workloadName"`
	Labels         map[string]string `json:"labels"`
	MetricsAddress string            `json:"metricsAddress"`
	Metadata       map[string]any    `json:"metadata"`
	ConnectedAt    time.Time         `json:"connectedAt"`
	Connected      *bool             `json:"connected"`
	// Sync is {"CDS": {"status": "SYNCED"}}, {"CDS": {"state": "SYNCED"}}
	// (pkg/xds/server's "types") or {"CDS": "SYNCED"}.
	Sync   map[string]json.RawMessage `json:"sync"`
	Types  map[string]json.RawMessage `json:"types"`
	Status map[string]json.RawMessage `json:"status"`
}

type wireSync struct {
	Status string `json:"status"`
	State  string `json:"state"`
	Error  string `json:"error"`
}

func decodeProxies(body []byte) ([]ProxyInfo, error) {
	var list []wireProxy
	if err := json.Unmarshal(body, &list); err != nil {
		var wrapped struct {
			Proxies []wireProxy `json:"proxies"`
			Items   []wireProxy `json:"items"`
		}
		if err2 := json.Unmarshal(body, &wrapped); err2 != nil {
			return nil, fmt.Errorf("decode proxies: %w", err)
		}
		list = append(wrapped.Proxies, wrapped.Items...)
	}
	out := make([]ProxyInfo, 0, len(list))
	for _, w := range list {
		p := ProxyInfo{
			ID: w.ID, Namespace: w.Namespace, Workload: w.Workload, Labels: w.Labels,
			MetricsAddress: w.MetricsAddress, ConnectedAt: w.ConnectedAt,
		}
		if p.ID == "" {
			p.ID = w.NodeID
		}
		if p.Workload == "" {
			p.Workload = w.WorkloadName
		}
		if md := w.Metadata; md != nil {
			str := func(k string) string { s, _ := md[k].(string); return s }
			if p.MetricsAddress == "" {
				p.MetricsAddress = str("METRICS_ADDRESS")
			}
			if p.Namespace == "" {
				p.Namespace = str("NAMESPACE")
			}
			if p.Workload == "" {
				p.Workload = str("WORKLOAD_NAME")
			}
			if lbls, ok := md["LABELS"].(map[string]any); ok && p.Labels == nil {
				p.Labels = map[string]string{}
				for k, v := range lbls {
					if s, ok := v.(string); ok {
						p.Labels[k] = s
					}
				}
			}
		}
		p.Disconnected = w.Connected != nil && !*w.Connected
		sync := w.Sync
		if sync == nil {
			sync = w.Types
		}
		if sync == nil {
			sync = w.Status
		}
		for typ, raw := range sync {
			var st SyncStatus
			var s string
			if err := json.Unmarshal(raw, &s); err == nil {
				st.Status = s
			} else {
				var ws wireSync
				if err := json.Unmarshal(raw, &ws); err != nil {
					return nil, fmt.Errorf("decode proxy %s sync status %s: %w", p.ID, typ, err)
				}
				st = SyncStatus{Status: ws.Status, Error: ws.Error}
				if st.Status == "" {
					st.Status = ws.State
				}
			}
			st.Status = normalizeSync(st.Status)
			if p.Sync == nil {
				p.Sync = map[string]SyncStatus{}
			}
			p.Sync[typ] = st
		}
		out = append(out, p)
	}
	return out, nil
}

func normalizeSync(s string) string {
	switch strings.ToUpper(strings.ReplaceAll(s, "_", " ")) {
	case "SYNCED":
		return SyncSynced
	case "STALE":
		return SyncStale
	case "NACKED", "NACK":
		return SyncNacked
	case "NOT SENT", "NOTSENT", "":
		return SyncNotSent
	}
	return s
}

func decodeResources(body []byte) ([]*config.Resource, []string, error) {
	var wrapped struct {
		Items    []json.RawMessage `json:"items"`
		Warnings []json.RawMessage `json:"warnings"`
	}
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		if err2 := json.Unmarshal(body, &wrapped); err2 != nil {
			return nil, nil, fmt.Errorf("decode resources: %w", err)
		}
		items = wrapped.Items
	}
	var warnings []string
	for _, w := range wrapped.Warnings {
		var s string
		if json.Unmarshal(w, &s) == nil {
			warnings = append(warnings, s)
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(w, &obj); err != nil {
			return nil, nil, fmt.Errorf("decode resource warning: %w", err)
		}
		warnings = append(warnings, warningText(obj))
	}
	out := make([]*config.Resource, 0, len(items))
	for i, raw := range items {
		r := new(config.Resource)
		if err := r.UnmarshalJSON(raw); err != nil {
			// One resource the dashboard cannot parse must not hide the rest.
			warnings = append(warnings, fmt.Sprintf("resource %d: %v", i, err))
			continue
		}
		out = append(out, r)
	}
	return out, warnings, nil
}

// warningText renders a structured warning ({kind,name,path,message}).
func warningText(obj map[string]any) string {
	var parts []string
	for _, k := range []string{"kind", "name", "path"} {
		if s, ok := obj[k].(string); ok && s != "" {
			parts = append(parts, s)
		}
	}
	msg, _ := obj["message"].(string)
	if msg == "" {
		msg, _ = obj["msg"].(string)
	}
	if len(parts) == 0 {
		return msg
	}
	return strings.Join(parts, " ") + ": " + msg
}

// FuncSources adapts two functions to Sources, for wiring the dashboard into
// the control plane process (e.g. the ADS server's status and the config
// store's list).
type FuncSources struct {
	ProxiesFunc   func(ctx context.Context) ([]ProxyInfo, error)
	ResourcesFunc func(ctx context.Context) ([]*config.Resource, []string, error)
}

// Proxies implements Sources; a nil ProxiesFunc lists no proxies.
func (f FuncSources) Proxies(ctx context.Context) ([]ProxyInfo, error) {
	if f.ProxiesFunc == nil {
		return nil, nil
	}
	return f.ProxiesFunc(ctx)
}

// Resources implements Sources; a nil ResourcesFunc lists no resources.
func (f FuncSources) Resources(ctx context.Context) ([]*config.Resource, []string, error) {
	if f.ResourcesFunc == nil {
		return nil, nil, nil
	}
	return f.ResourcesFunc(ctx)
}
