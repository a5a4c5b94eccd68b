package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// TestRequestBodies sends request bodies through the outbound listener to
// a backend: a large one echoed while it still arrives, one the backend
// answers early without reading (413), and chunked ones of unknown length,
// each on a kept-alive upstream connection where the backend allows it.
func TestRequestBodies(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	be := startBackend(t, "v1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remote", r.RemoteAddr)
		switch r.URL.Path {
		case "/echo":
			_, _ = io.Copy(w, r.Body)
		case "/reject":
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		default:
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%d %x", len(b), sha256.Sum256(b))
		}
	})
	cp.Set(t, nodeID, oneRoute(xdstest.HTTPListener(9080), be.addr))
	c := client(startProxy(t, cp))
	send := func(path string, body io.Reader, n int64) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, svcURL+path, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = n
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("POST %s: read answer: %v", path, err)
		}
		return resp, b
	}
	sum := func(b []byte) string { return fmt.Sprintf("%d %x", len(b), sha256.Sum256(b)) }

	small := []byte("a small body")
	_, got := send("/sum", bytes.NewReader(small), int64(len(small)))
	if string(got) != sum(small) {
		t.Fatalf("small POST: backend saw %q, want %q", got, sum(small))
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 512*1024) // 8 MiB
	if _, got := send("/echo", bytes.NewReader(big), int64(len(big))); !bytes.Equal(got, big) {
		t.Errorf("8 MiB echo: %d bytes back, want %d", len(got), len(big))
	}
	// An answer before the body was read: through at once, not after the
	// body, which the backend never reads.
	start := time.Now()
	huge := io.LimitReader(zeros{}, 64<<20)
	if resp, _ := send("/reject", huge, 64<<20); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("early answer: status %d, want 413", resp.StatusCode)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("early answer took %v", d)
	}
	// Chunked (unknown length), small and large.
	for _, b := range [][]byte{small, big} {
		pr, pw := io.Pipe()
		go func() {
			for rest := b; len(rest) > 0; {
				n := min(len(rest), 100<<10)
				_, _ = pw.Write(rest[:n])
				rest = rest[n:]
			}
			pw.Close()
		}()
		if _, got := send("/sum", pr, -1); string(got) != sum(b) {
			t.Errorf("chunked POST of %d bytes: backend saw %q, want %q", len(b), got, sum(b))
		}
	}
	// A body read before the answer leaves the upstream connection to be
	// reused: two small POSTs in a row come on one.
	var remotes []string
	for range 2 {
		resp, got := send("/sum", bytes.NewReader(small), int64(len(small)))
		if string(got) != sum(small) {
			t.Fatalf("small POST: backend saw %q", got)
		}
		remotes = append(remotes, resp.Header.Get("X-Remote"))
	}
	if remotes[0] != remotes[1] {
		t.Errorf("two small POSTs came on upstream connections %v: a body ended the connection's use", remotes)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestResponseHopHeaders: hop-by-hop fields of an upstream answer, and the
// fields its Connection names, are not passed on to the client.
func TestResponseHopHeaders(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	be := startBackend(t, "v1", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Connection"] = []string{"X-Secret, x-other"}
		h["X-Secret"] = []string{"s"}
		h["X-Other"] = []string{"o"}
		for _, k := range []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade"} {
			h[k] = []string{"hop"}
		}
		h["X-Kept"] = []string{"k1", "k2"}
		_, _ = io.WriteString(w, "ok")
	})
	cp.Set(t, nodeID, oneRoute(xdstest.HTTPListener(9080), be.addr))
	c := client(startProxy(t, cp))
	for i := range 2 { // the second on a kept-alive connection: reused header storage
		res := get(t, c, svcURL+"/")
		if res.status != 200 || res.body != "ok" {
			t.Fatalf("answer %d: %d %q", i, res.status, res.body)
		}
		for _, k := range []string{"X-Secret", "X-Other", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Upgrade"} {
			if v, ok := res.header[k]; ok {
				t.Errorf("answer %d: hop-by-hop %s: %q passed on", i, k, v)
			}
		}
		if got := strings.Join(res.header["X-Kept"], ","); got != "k1,k2" {
			t.Errorf("answer %d: X-Kept %q, want k1,k2", i, got)
		}
	}
}
