package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// adminAPI is a control plane admin API stand-in serving fixed JSON bodies.
func adminAPI(t *testing.T, proxies, resources string, code int) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body string
		switch r.URL.Path {
		case "/api/v1/proxies":
			body = proxies
		case "/api/v1/resources":
			body = resources
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

const vsJSON = `{"apiVersion":"networking.istio.io/v1","kind":"VirtualService",
 "metadata":{"name":"reviews","namespace":"default","generation":2},
 "spec":{"hosts":["reviews"],"http":[{"route":[{"destination":{"host":"reviews","subset":"v1"}}]}]}}`

func TestHTTPSourcesProxies(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		code     int
		wantErr  string
		wantID   string
		wantAddr string
		wantWL   string
		wantLDS  SyncStatus
	}{
		{
			name: "plain list with structured sync",
			body: `[{"id":"sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local","namespace":"default",
			  "workload":"reviews-v1","metricsAddress":"127.0.0.1:15090",
			  "sync":{"LDS":{"status":"NACKED","error":"bad filter"},"CDS":{"status":"SYNCED"}}}]`,
			code: 200, wantID: "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local",
			wantAddr: "127.0.0.1:15090", wantWL: "reviews-v1", wantLDS: SyncStatus{Status: SyncNacked, Error: "bad filter"},
		},
		{
			name: "wrapped list, node metadata and string statuses",
			body: `{"proxies":[{"nodeId":"sidecar~1~a.ns~ns.svc.cluster.local",
			  "metadata":{"NAMESPACE":"ns","WORKLOAD_NAME":"a","METRICS_ADDRESS":"127.0.0.1:9","LABELS":{"app":"a"}},
			  "status":{"LDS":"not_sent"}}]}`,
			code: 200, wantID: "sidecar~1~a.ns~ns.svc.cluster.local", wantAddr: "127.0.0.1:9", wantWL: "a",
			wantLDS: SyncStatus{Status: SyncNotSent},
		},
		{
			name: "pkg/xds/server ProxyStatus shape",
			body: `[{"id":"sidecar~10.0.0.2~details-v1.default~default.svc.cluster.local","type":"sidecar","namespace":"default",
			  "workload":"details-v1","connected":true,"revision":3,"metricsAddress":"127.0.0.1:15091","labels":{"app":"details"},
			  "types":{"CDS":{"state":"SYNCED","version":"3"},"LDS":{"state":"STALE","version":"3","acked":"2"}}}]`,
			code: 200, wantID: "sidecar~10.0.0.2~details-v1.default~default.svc.cluster.local", wantAddr: "127.0.0.1:15091",
			wantWL: "details-v1", wantLDS: SyncStatus{Status: SyncStale},
		},
		{name: "server error", body: `{"error":"boom"}`, code: 500, wantErr: "500"},
		{name: "not JSON", body: `<html>`, code: 200, wantErr: "decode proxies"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := adminAPI(t, tc.body, "[]", tc.code)
			src, err := NewHTTPSources(srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			ps, err := src.Proxies(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) != 1 {
				t.Fatalf("proxies = %+v", ps)
			}
			p := ps[0]
			if p.ID != tc.wantID || p.MetricsAddress != tc.wantAddr || p.Workload != tc.wantWL || p.Sync["LDS"] != tc.wantLDS {
				t.Errorf("proxy = %+v", p)
			}
		})
	}
}

func TestHTTPSourcesResources(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantN     int
		wantWarns []string
		wantErr   bool
	}{
		{"plain list", "[" + vsJSON + "]", 1, nil, false},
		{"items and warnings", `{"items":[` + vsJSON + `],"warnings":["w1",{"kind":"VirtualService","name":"default/reviews","path":"spec.http[0]","message":"no subset"}]}`,
			1, []string{"w1", "VirtualService default/reviews spec.http[0]: no subset"}, false},
		{"unparseable resource becomes a warning", `[{"apiVersion":"networking.istio.io/v1","kind":"Nope","metadata":{"name":"x"}}]`,
			0, []string{"resource 0:"}, false},
		{"garbage", `"nope"`, 0, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := adminAPI(t, "[]", tc.body, 200)
			src, err := NewHTTPSources(strings.TrimPrefix(srv.URL, "http://"), nil) // scheme optional
			if err != nil {
				t.Fatal(err)
			}
			rs, warns, err := src.Resources(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(rs) != tc.wantN || len(warns) != len(tc.wantWarns) {
				t.Fatalf("resources %d warnings %q, want %d and %q", len(rs), warns, tc.wantN, tc.wantWarns)
			}
			for i, w := range tc.wantWarns {
				if !strings.HasPrefix(warns[i], w) {
					t.Errorf("warning %d = %q, want prefix %q", i, warns[i], w)
				}
			}
			if tc.wantN > 0 && (rs[0].Kind != "VirtualService" || rs[0].Meta.Name != "reviews") {
				t.Errorf("resource = %+v", rs[0])
			}
		})
	}
	if _, err := NewHTTPSources("http://", nil); err == nil {
		t.Error("NewHTTPSources without host: want error")
	}
}

// TestDashboardOverAdminAPI runs the standalone wiring: admin API → HTTPSources
// → scrape loop → graph, with a real scrape interval.
func TestDashboardOverAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real scrape loop for a few seconds")
	}
	pp := newFakeProxy(t)
	admin := adminAPI(t, `[{"id":"sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local","namespace":"default",
		"workload":"productpage-v1","metricsAddress":"`+pp.addr()+`","sync":{"CDS":{"status":"SYNCED"}}}]`, "[]", 200)
	src, err := NewHTTPSources(admin.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Sources: src, ScrapeInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pp.add(ppDetailsOK, 5, 3)
		var g Graph
		getJSON(t, d.Handler(), "/api/graph", http.StatusOK, &g)
		if e := findEdge(g, svcPP, svcDetails); e != nil && e.RPS > 0 && e.MTLS {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no busy productpage -> details edge after 5 s: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
