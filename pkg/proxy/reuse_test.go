package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// lockedBuffer is an io.Writer for the access log that tests read while
// the proxy writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// seenReq is what a backend saw of one request: its sequence number and
// every X-Tag-* field name with its value, plus the request id.
type seenReq struct {
	seq  int
	tags string
	rid  string
}

func tagsOf(h http.Header) string {
	var tags []string
	for k, vs := range h {
		if strings.HasPrefix(k, "X-Tag-") {
			tags = append(tags, k+"="+strings.Join(vs, ","))
		}
	}
	sort.Strings(tags)
	return strings.Join(tags, ";")
}

// TestKeepAliveRequestsStayApart sends pipelined requests with different
// header fields on one downstream connection through the proxy's own
// HTTP/1 server, which reuses the request, header map, URL and
// per-request state from request to request (and H1Pool reuses the
// upstream response's): a route retries a first 503 and mirrors every
// request to a slow shadow, so a retry and mirror goroutines are still at
// work while later requests on the connection are parsed. Each upstream
// request (first try, retry, mirror), response and access log line must
// carry its own request's fields and nothing of another's.
func TestKeepAliveRequestsStayApart(t *testing.T) {
	skipShort(t)
	t.Parallel()
	cp := xdstest.Start(t)
	const n = 40
	var mu sync.Mutex
	primary := map[int][]seenReq{} // seq → attempts
	var mirrored []seenReq
	see := func(r *http.Request) seenReq {
		seq, _ := strconv.Atoi(r.Header.Get("X-Seq"))
		return seenReq{seq: seq, tags: tagsOf(r.Header), rid: r.Header.Get("X-Request-Id")}
	}
	m := newMesh(t, func(w http.ResponseWriter, r *http.Request) {
		s := see(r)
		mu.Lock()
		primary[s.seq] = append(primary[s.seq], s)
		tries := len(primary[s.seq])
		mu.Unlock()
		if s.seq%3 == 0 && tries == 1 { // a retry runs for every third request
			w.Header().Set("X-Failed-Seq", strconv.Itoa(s.seq))
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Echo-Seq", strconv.Itoa(s.seq))
		w.Header().Set("X-Resp-"+strconv.Itoa(s.seq), "r"+strconv.Itoa(s.seq))
		w.Header().Add("X-Multi", "a"+strconv.Itoa(s.seq))
		w.Header().Add("X-Multi", "b"+strconv.Itoa(s.seq))
		switch s.seq % 4 {
		case 0: // empty body
		case 1: // chunked
			fmt.Fprintf(w, "seq=%d;", s.seq)
			w.(http.Flusher).Flush()
			fmt.Fprintf(w, "tags=%s", s.tags)
		default:
			fmt.Fprintf(w, "seq=%d;tags=%s", s.seq, s.tags)
		}
	}, func(_ http.ResponseWriter, r *http.Request) {
		s := see(r)
		time.Sleep(5 * time.Millisecond) // the mirror is still running when later requests arrive
		mu.Lock()
		mirrored = append(mirrored, s)
		mu.Unlock()
	})
	act := toCluster(cv1)
	act.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(1)}
	act.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: cv2}}
	cp.Set(t, nodeID, m.resources(prefixRoute("reuse", "/", act)))
	var alog lockedBuffer
	p := startProxy(t, cp, func(o *proxy.Options) { o.AccessLog = &alog })

	conn, err := net.Dial("tcp", p.Addresses().Outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var reqs bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&reqs, "GET http://reviews:9080/r/%d?q=%d HTTP/1.1\r\nHost: reviews:9080\r\nX-Seq: %d\r\n", i, i, i)
		fmt.Fprintf(&reqs, "X-Tag-%d: t%d\r\n", i, i)
		for j := 0; j < i%5; j++ { // a varying number of fields
			fmt.Fprintf(&reqs, "X-Tag-%d-%d: v%d\r\n", i, j, j)
		}
		if i%2 == 0 {
			fmt.Fprintf(&reqs, "X-Request-Id: rid-%d\r\n", i)
		}
		reqs.WriteString("\r\n")
	}
	go func() { _, _ = conn.Write(reqs.Bytes()) }() // pipelined: all at once
	br := bufio.NewReader(conn)
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Echo-Seq") != strconv.Itoa(i) {
			t.Fatalf("response %d: %d, X-Echo-Seq %q, body %q", i, resp.StatusCode, resp.Header.Get("X-Echo-Seq"), body)
		}
		for k, vs := range resp.Header {
			if strings.HasPrefix(k, "X-Resp-") && k != "X-Resp-"+strconv.Itoa(i) || k == "X-Failed-Seq" {
				t.Errorf("response %d carries %s: %q (another response's field)", i, k, vs)
			}
		}
		if got, want := strings.Join(resp.Header.Values("X-Multi"), ","), fmt.Sprintf("a%d,b%d", i, i); got != want {
			t.Errorf("response %d: X-Multi %q, want %q", i, got, want)
		}
		if i%4 != 0 && !strings.HasPrefix(string(body), fmt.Sprintf("seq=%d;tags=", i)) {
			t.Errorf("response %d: body %q", i, body)
		}
	}

	wantTags := func(i int) string {
		tags := []string{fmt.Sprintf("X-Tag-%d=t%d", i, i)}
		for j := 0; j < i%5; j++ {
			tags = append(tags, fmt.Sprintf("X-Tag-%d-%d=v%d", i, j, j))
		}
		sort.Strings(tags)
		return strings.Join(tags, ";")
	}
	eventually(t, "mirror to see every request", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(mirrored) == n
	})
	mu.Lock()
	defer mu.Unlock()
	rids := map[int]string{}
	for i := 0; i < n; i++ {
		tries := primary[i]
		if want := 1 + boolInt(i%3 == 0); len(tries) != want {
			t.Errorf("request %d: backend saw %d attempts, want %d", i, len(tries), want)
		}
		for _, s := range tries {
			if s.tags != wantTags(i) {
				t.Errorf("request %d upstream: fields %q, want %q", i, s.tags, wantTags(i))
			}
			if i%2 == 0 && s.rid != "rid-"+strconv.Itoa(i) || s.rid == "" {
				t.Errorf("request %d upstream: X-Request-Id %q", i, s.rid)
			}
			if len(tries) > 1 && s.rid != tries[0].rid {
				t.Errorf("request %d: retry X-Request-Id %q, first try %q", i, s.rid, tries[0].rid)
			}
		}
		if len(tries) > 0 {
			rids[i] = tries[0].rid
		}
	}
	seenRID := map[string]int{}
	for _, s := range mirrored {
		if s.tags != wantTags(s.seq) {
			t.Errorf("mirror of request %d: fields %q, want %q", s.seq, s.tags, wantTags(s.seq))
		}
		if s.rid != rids[s.seq] {
			t.Errorf("mirror of request %d: X-Request-Id %q, want %q", s.seq, s.rid, rids[s.seq])
		}
		if prev, dup := seenRID[s.rid]; dup {
			t.Errorf("requests %d and %d share X-Request-Id %q", prev, s.seq, s.rid)
		}
		seenRID[s.rid] = s.seq
	}

	// The access log has one line per request with its own path and id.
	eventually(t, "access log lines", func() bool { return strings.Count(alog.String(), "\n") >= n })
	logged := 0
	for _, line := range strings.Split(strings.TrimSpace(alog.String()), "\n") {
		var e struct {
			Path       string `json:"path"`
			XRequestID string `json:"x_request_id"`
			Code       int    `json:"response_code"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		var i, q int
		if _, err := fmt.Sscanf(e.Path, "/r/%d?q=%d", &i, &q); err != nil || i != q {
			t.Errorf("access log path %q", e.Path)
			continue
		}
		logged++
		if e.XRequestID != rids[i] {
			t.Errorf("access log for request %d: x_request_id %q, want %q", i, e.XRequestID, rids[i])
		}
	}
	if logged != n {
		t.Errorf("access log has %d request lines, want %d", logged, n)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
