package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe bytes.Buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDashboardCommand(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/proxies":
			_, _ = w.Write([]byte(`[{"id":"sidecar~127.0.0.1~ratings-v1.default~default.svc.cluster.local","namespace":"default","workload":"ratings-v1","sync":{"CDS":{"status":"STALE"}}}]`))
		case "/api/v1/resources":
			_, _ = w.Write([]byte(`[]`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer admin.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	root := NewRoot(strings.NewReader(""), &out, &errOut)
	root.SetArgs([]string{"dashboard", "--address", "127.0.0.1:0", "--server", admin.URL, "--scrape-interval", "200ms"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	re := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("command exited early: %v\n%s", err, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard did not report its address; stdout %q stderr %q", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	resp, err := http.Get("http://" + addr + "/api/proxies")
	if err != nil {
		t.Fatal(err)
	}
	var ps []struct {
		Workload string                       `json:"workload"`
		Sync     map[string]map[string]string `json:"sync"`
	}
	err = json.NewDecoder(resp.Body).Decode(&ps)
	resp.Body.Close()
	if err != nil || len(ps) != 1 || ps[0].Workload != "ratings-v1" || ps[0].Sync["CDS"]["status"] != "STALE" {
		t.Fatalf("GET /api/proxies = %+v, %v", ps, err)
	}
	resp, err = http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("command returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("command did not stop after cancel")
	}
}

func TestDashboardCommandBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"dashboard", "--server", "http://"},
		{"dashboard", "--log-level", "loud"},
		{"dashboard", "extra-arg"},
	} {
		root := NewRoot(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
		root.SetArgs(args)
		if err := root.ExecuteContext(context.Background()); err == nil {
			t.Errorf("%v: want error", args)
		}
	}
}
