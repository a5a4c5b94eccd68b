package admin

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/stats"
)

type src struct{ ready atomic.Bool }

func (s *src) ConfigDump() ([]byte, error) { return []byte(`{"clusters":[]}`), nil }
func (s *src) WriteClusters(w io.Writer)   { _, _ = io.WriteString(w, "c::1.2.3.4:80::rq_total::0\n") }
func (s *src) Ready() bool                 { return s.ready.Load() }
func (s *src) WriteStats(w io.Writer)      { _, _ = io.WriteString(w, "cluster.c.upstream_rq_total: 0\n") }

func TestEndpoints(t *testing.T) {
	s := &src{}
	lv := new(slog.LevelVar)
	quit := make(chan struct{}, 1)
	h := &Handlers{Src: s, Stats: stats.NewRegistry(), Level: lv, Quit: func() { quit <- struct{}{} }}
	admin, health, status := httptest.NewServer(h.Admin()), httptest.NewServer(h.Health()), httptest.NewServer(h.Status())
	defer admin.Close()
	defer health.Close()
	defer status.Close()
	do := func(method, url string) (int, string) {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		name, method, url string
		code              int
		body              string
	}{
		{"not ready", "GET", health.URL + "/healthz/ready", 503, "not ready"},
		{"config dump", "GET", admin.URL + "/config_dump", 200, "clusters"},
		{"clusters", "GET", admin.URL + "/clusters", 200, "rq_total"},
		{"stats", "GET", admin.URL + "/stats", 200, "cluster.c.upstream_rq_total: 0"},
		{"prometheus", "GET", status.URL + "/stats/prometheus", 200, "istio_requests_total"},
		{"logging bad level", "POST", admin.URL + "/logging?level=loud", 400, "bad level"},
		{"logging debug", "POST", admin.URL + "/logging?level=debug", 200, "debug"},
		{"quit needs POST", "GET", status.URL + "/quitquitquit", 405, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(tc.method, tc.url)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("%d %q, want %d containing %q", code, body, tc.code, tc.body)
			}
		})
	}
	if lv.Level() != slog.LevelDebug {
		t.Fatalf("level %v after POST /logging?level=debug", lv.Level())
	}
	s.ready.Store(true)
	if code, _ := do("GET", health.URL+"/healthz/ready"); code != 200 {
		t.Fatalf("ready: %d", code)
	}
	if code, _ := do("POST", status.URL+"/quitquitquit"); code != 200 {
		t.Fatalf("quit: %d", code)
	}
	<-quit
}

func TestProfiles(t *testing.T) {
	h := &Handlers{Src: &src{}, Stats: stats.NewRegistry(), Level: new(slog.LevelVar)}
	admin := httptest.NewServer(h.Admin())
	defer admin.Close()
	get := func(path string) (int, []byte) {
		resp, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// pprof's format is a gzipped protobuf: check the gzip stream is whole
	// and not empty.
	isProfile := func(b []byte) bool {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return false
		}
		raw, err := io.ReadAll(zr)
		return err == nil && len(raw) > 0
	}
	for _, p := range []string{"/debug/pprof/profile?seconds=0.2", "/debug/pprof/heap?gc=1", "/debug/pprof/goroutine", "/debug/pprof/allocs"} {
		if code, b := get(p); code != 200 || !isProfile(b) {
			t.Errorf("GET %s: %d, %d bytes, not a pprof profile", p, code, len(b))
		}
	}
	for p, want := range map[string]int{"/debug/pprof/profile?seconds=x": 400, "/debug/pprof/profile?seconds=500": 400, "/debug/pprof/nosuch": 404} {
		if code, _ := get(p); code != want {
			t.Errorf("GET %s: %d, want %d", p, code, want)
		}
	}
	// An execution trace starts with the format's "go 1.N trace" header.
	if code, b := get("/debug/pprof/trace?seconds=0.2"); code != 200 || !bytes.HasPrefix(b, []byte("go 1.")) || !bytes.Contains(b[:16], []byte(" trace")) {
		t.Errorf("GET trace: %d, %d bytes, no trace header", code, len(b))
	}
	if code, _ := get("/debug/pprof/trace?seconds=-1"); code != 400 {
		t.Errorf("GET trace?seconds=-1: %d, want 400", code)
	}
	// Two CPU profiles cannot overlap: the second is refused.
	done := make(chan int)
	go func() { code, _ := get("/debug/pprof/profile?seconds=1"); done <- code }()
	time.Sleep(300 * time.Millisecond)
	if code, _ := get("/debug/pprof/profile?seconds=0.1"); code != http.StatusConflict {
		t.Errorf("overlapping CPU profile: %d, want 409", code)
	}
	if code := <-done; code != 200 {
		t.Errorf("first CPU profile: %d", code)
	}
}
