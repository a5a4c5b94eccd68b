package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestProxyStatusAndConfigCommands(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/proxies", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`[{"id":"sidecar~1.1.1.1~a.default~default.svc.cluster.local","connected":true,"version":"7",
			"warnings":["EnvoyFilter default/redis: network filter envoy.filters.network.redis_proxy is not executed by weft proxy (configPatches[0])"],
			"types":{"CDS":{"state":"SYNCED"},"LDS":{"state":"NACKED","error":"listener x: bad port"},"RDS":{"state":"STALE"}}}]`))
	})
	mux.HandleFunc("GET /api/v1/proxies/{id}/config", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != "sidecar~1.1.1.1~a.default~default.svc.cluster.local" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"proxy ` + r.PathValue("id") + ` not found"}`))
			return
		}
		_, _ = w.Write([]byte(`{"version":"7","resources":[{"name":"outbound|9080||reviews.default.svc.cluster.local","type":"EDS","edsClusterConfig":{}},
			{"name":"inbound|9080||"}]}`))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()

	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{name: "status table", args: []string{"proxy-status"},
			want: []string{"NAME", "CDS", "LAST PUSH", "WARN", "SYNCED", "NACKED (listener x: bad port)", "STALE", "NOT SENT", " 7 ",
				"\nWARN sidecar~1.1.1.1~a.default~default.svc.cluster.local: EnvoyFilter default/redis: network filter envoy.filters.network.redis_proxy is not executed by weft proxy"}},
		{name: "clusters table", args: []string{"proxy-config", "clusters", "sidecar~1.1.1.1~a.default~default.svc.cluster.local"},
			want: []string{"outbound|9080||reviews.default.svc.cluster.local", "EDS", "inbound|9080||", "STATIC", "ROUND_ROBIN"}},
		{name: "clusters json", args: []string{"proxy-config", "cluster", "sidecar~1.1.1.1~a.default~default.svc.cluster.local", "-o", "json"},
			want: []string{`"edsClusterConfig": {}`}},
		{name: "unknown node", args: []string{"proxy-config", "clusters", "nope"}, wantErr: "proxy nope not found"},
		{name: "unknown type", args: []string{"proxy-config", "secrets", "x"}, wantErr: `unknown config type "secrets"`},
		{name: "bad output", args: []string{"proxy-config", "routes", "x", "-o", "yaml"}, wantErr: `unknown output format "yaml"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			root := NewRoot(strings.NewReader(""), &out, &out)
			root.SetArgs(append(tc.args, "--server", ts.URL))
			err := root.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
