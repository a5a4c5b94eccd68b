package wasm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// through runs p as the listener runs a ResponseFilter: request phases,
// app writing through the wrapped writer, then done with the stream info.
func through(t *testing.T, p *Plugin, req *http.Request, app http.HandlerFunc) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	wrap, done, handled := p.FilterResponse(rec, req)
	if !handled {
		var w http.ResponseWriter = rec
		if wrap != nil {
			w = wrap(rec)
		}
		app(w, req)
	}
	if done != nil {
		done(listener.StreamInfo{ResponseCode: rec.Code, ResponseFlags: "-", Cluster: "inbound|80||", UpstreamHost: "127.0.0.1:80",
			Duration: 3 * time.Millisecond})
	}
	return rec
}

func newPlugin(t *testing.T, e *Engine, name, cfg string) *Plugin {
	t.Helper()
	p, err := e.NewPlugin(context.Background(), example(t, name), PluginConfig{Name: name, Configuration: []byte(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestResponseAndLogPhases(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p := newPlugin(t, e, "go-response", "from-config")
	tests := []struct {
		name   string
		status int
		errors int64
	}{
		{"ok", 200, 0},
		{"server error", 502, 1},
		{"ok again", 204, 1},
	}
	for i, tt := range tests {
		rec := through(t, p, httptest.NewRequest("GET", "/r", nil), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Internal", "secret")
			w.Header().Set("X-App", "yes")
			w.WriteHeader(tt.status)
			if tt.status != 204 {
				_, _ = io.WriteString(w, "body")
			}
		})
		if rec.Code != tt.status || rec.Header().Get("X-Wasm-Response") != "from-config" || rec.Header().Get("X-Internal") != "" || rec.Header().Get("X-App") != "yes" {
			t.Errorf("%s: %d %v", tt.name, rec.Code, rec.Header())
		}
		if got, _ := e.Metric("wasm_go_response_5xx_total"); got != tt.errors {
			t.Errorf("%s: 5xx counter %d, want %d", tt.name, got, tt.errors)
		}
		if got, _ := e.Metric("wasm_go_response_duration_ms"); got != int64(i+1) {
			t.Errorf("%s: duration histogram count %d, want %d", tt.name, got, i+1)
		}
	}
	var b strings.Builder
	if err := e.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE wasm_go_response_5xx_total counter\nwasm_go_response_5xx_total 1\n",
		"# TYPE wasm_go_response_duration_ms histogram\n",
		`wasm_go_response_duration_ms_bucket{le="1"} 0`, // each took 3 ms
		`wasm_go_response_duration_ms_bucket{le="5"} 3`,
		"wasm_go_response_duration_ms_sum 9\n",
		"wasm_go_response_duration_ms_count 3\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, b.String())
		}
	}
}

// chunky reads its data a few bytes at a time.
type chunky struct{ r io.Reader }

func (c *chunky) Read(p []byte) (int, error) {
	if len(p) > 3 {
		p = p[:3]
	}
	return c.r.Read(p)
}

func TestBodyRewrite(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p := newPlugin(t, e, "go-body", "hello=HELLO")
	req := httptest.NewRequest("POST", "/b", io.NopCloser(&chunky{strings.NewReader("hello world, hello")}))
	req.ContentLength = -1
	var got string
	rec := through(t, p, req, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
		}
		got = string(b)
		w.Header().Set("Content-Length", "24")
		_, _ = io.WriteString(w, "you said ")
		_, _ = io.WriteString(w, "hel")
		_, _ = io.WriteString(w, "lo, hello")
	})
	if got != "HELLO world, HELLO" || req.ContentLength != int64(len(got)) {
		t.Errorf("app read %q (content length %d)", got, req.ContentLength)
	}
	if rec.Body.String() != "you said HELLO, HELLO" || rec.Header().Get("Content-Length") != "21" {
		t.Errorf("client got %q, Content-Length %q", rec.Body.String(), rec.Header().Get("Content-Length"))
	}
}

// TestStreamedRequestBody: a gRPC request body is not read before the
// request goes upstream (the client may wait for the response), and still
// passes through the plugin.
func TestStreamedRequestBody(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p := newPlugin(t, e, "go-body", "hello=HELLO")
	pr, pw := io.Pipe()
	req := httptest.NewRequest("POST", "/svc/Method", pr)
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/grpc")
	type result struct {
		wrap    func(http.ResponseWriter) http.ResponseWriter
		done    func(listener.StreamInfo)
		handled bool
	}
	ch := make(chan result, 1)
	go func() {
		wrap, done, handled := p.FilterResponse(httptest.NewRecorder(), req)
		ch <- result{wrap, done, handled}
	}()
	var res result
	select {
	case res = <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("the request phase waited for the body")
	}
	if res.handled {
		t.Fatal("handled")
	}
	go func() {
		_, _ = io.WriteString(pw, "say hel")
		_, _ = io.WriteString(pw, "lo")
		_ = pw.Close()
	}()
	b, err := io.ReadAll(req.Body)
	if err != nil || string(b) != "say HELLO" {
		t.Errorf("streamed body %q %v", b, err)
	}
	res.done(listener.StreamInfo{})
}

// TestBodyBufferLimit: a plugin buffering a body beyond the limit gets
// the request answered 413 and the response replaced by a 500.
func TestBodyBufferLimit(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithBufferLimit(1024), WithCallTimeout(10*time.Second))
	p := newPlugin(t, e, "go-body", "")
	big := strings.Repeat("x", 4096)
	appRan := false
	rec := through(t, p, httptest.NewRequest("POST", "/", strings.NewReader(big)), func(http.ResponseWriter, *http.Request) { appRan = true })
	if rec.Code != http.StatusRequestEntityTooLarge || appRan || rec.Header().Get(DetailsHeader) != detailsRequestTooLarge {
		t.Errorf("big request: %d %v, app ran %v", rec.Code, rec.Header(), appRan)
	}
	// A sized response's headers wait for the body: replaced by a 500.
	var werr error
	rec = through(t, p, httptest.NewRequest("GET", "/", nil), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "4096")
		for i := 0; i < 8 && werr == nil; i++ {
			_, werr = io.WriteString(w, big[:512])
		}
	})
	if rec.Code != http.StatusInternalServerError || !errors.Is(werr, errResponseTooLarge) || rec.Header().Get(DetailsHeader) != detailsResponseTooLarge {
		t.Errorf("big response: %d %v, write error %v", rec.Code, rec.Header(), werr)
	}
	// A streamed one had its headers sent: the write fails, nothing of the
	// held body goes out and done resets the stream (http.ErrAbortHandler).
	werr = nil
	var aborted any
	rec = httptest.NewRecorder()
	wrap, done, _ := p.FilterResponse(rec, httptest.NewRequest("GET", "/", nil))
	w := wrap(rec)
	for i := 0; i < 8 && werr == nil; i++ {
		_, werr = io.WriteString(w, big[:512])
	}
	func() {
		defer func() { aborted = recover() }()
		done(listener.StreamInfo{})
	}()
	if rec.Code != 200 || !errors.Is(werr, errResponseTooLarge) || rec.Body.Len() != 0 || aborted != http.ErrAbortHandler {
		t.Errorf("big streamed response: %d, %d bytes, write error %v, panic %v", rec.Code, rec.Body.Len(), werr, aborted)
	}
	rec = through(t, p, httptest.NewRequest("POST", "/", strings.NewReader("small hello")), func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	if rec.Code != 200 || rec.Body.String() != "small HELLO" {
		t.Errorf("small body: %d %q", rec.Code, rec.Body.String())
	}
}

func TestTickTimer(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p, err := e.NewPlugin(context.Background(), example(t, "go-tick"), PluginConfig{Name: "tick", Configuration: []byte("10")})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.Ticks.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d ticks", p.Ticks.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if v, _ := e.Metric("wasm_go_tick_ticks_total"); v < 3 {
		t.Errorf("tick counter %d", v)
	}
	req := httptest.NewRequest("GET", "/", nil)
	through(t, p, req, func(http.ResponseWriter, *http.Request) {})
	if n, _ := strconv.Atoi(req.Header.Get("x-tick-count")); n < 3 {
		t.Errorf("x-tick-count %q", req.Header.Get("x-tick-count"))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	n := p.Ticks.Load()
	time.Sleep(100 * time.Millisecond) // ten periods: a live timer would tick
	if m := p.Ticks.Load(); m > n+1 {
		t.Errorf("ticks went on after Close: %d → %d", n, m)
	}
}

func TestHTTPCallout(t *testing.T) {
	t.Parallel()
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/check" || r.Host != "auth" {
			http.Error(w, "bad check request "+r.Host+r.URL.Path, 400)
			return
		}
		if r.Header.Get("Authorization") != "Bearer good" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-User", "alice")
	}))
	t.Cleanup(auth.Close)
	e := newEngine(t, WithCallTimeout(10*time.Second))
	var mu sync.Mutex
	var clusters []string
	e.SetHTTPCaller(func(ctx context.Context, cluster string, req *http.Request) (*http.Response, error) {
		mu.Lock()
		clusters = append(clusters, cluster)
		mu.Unlock()
		if cluster == "outbound|80||slow" { // never answers: the call's timeout ends it
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if cluster != "outbound|80||auth" {
			return nil, errors.New("unknown cluster")
		}
		req = req.WithContext(ctx)
		req.URL.Scheme, req.URL.Host = "http", strings.TrimPrefix(auth.URL, "http://")
		return http.DefaultTransport.RoundTrip(req)
	})
	p := newPlugin(t, e, "go-callout", "outbound|80||auth")
	tests := []struct {
		name, auth string
		code       int
		user, body string
	}{
		{"allowed", "Bearer good", 200, "alice", "app"},
		{"denied", "Bearer bad", 403, "", "who are you\n"},
		{"no header", "", 403, "", "who are you\n"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "/", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		var user string
		rec := through(t, p, req, func(w http.ResponseWriter, r *http.Request) {
			user = r.Header.Get("X-Auth-User")
			_, _ = io.WriteString(w, "app")
		})
		if rec.Code != tt.code || user != tt.user || rec.Body.String() != tt.body {
			t.Errorf("%s: %d user %q body %q", tt.name, rec.Code, user, rec.Body.String())
		}
	}
	// An unknown cluster: the call fails, the plugin answers 403.
	q := newPlugin(t, e, "go-callout", "nope")
	rec := through(t, q, httptest.NewRequest("GET", "/", nil), func(w http.ResponseWriter, r *http.Request) { t.Error("app reached") })
	if rec.Code != 403 || rec.Body.String() != "auth check failed\n" {
		t.Errorf("failed call: %d %q", rec.Code, rec.Body.String())
	}
	// A call that does not answer within its timeout (go-callout: 2 s)
	// fails, and the plugin answers 403.
	slow := newPlugin(t, e, "go-callout", "outbound|80||slow")
	start := time.Now()
	rec = through(t, slow, httptest.NewRequest("GET", "/", nil), func(w http.ResponseWriter, r *http.Request) { t.Error("app reached") })
	if rec.Code != 403 || rec.Body.String() != "auth check failed\n" || time.Since(start) < 2*time.Second {
		t.Errorf("timed-out call: %d %q after %v", rec.Code, rec.Body.String(), time.Since(start))
	}
	// Concurrent paused requests on a small pool all resume.
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("Authorization", "Bearer good")
			rec := httptest.NewRecorder()
			_, done, handled := p.FilterResponse(rec, req)
			if handled || req.Header.Get("X-Auth-User") != "alice" {
				t.Errorf("concurrent: handled %v (%d %q), user %q", handled, rec.Code, rec.Body.String(), req.Header.Get("X-Auth-User"))
			}
			if done != nil {
				done(listener.StreamInfo{})
			}
		}()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(clusters) != 3+1+1+16 {
		t.Errorf("%d calls", len(clusters))
	}
}

// TestPauseTimeout: a request paused for a callout that never answers
// fails per the plugin's policy once the pause times out.
func TestPauseTimeout(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	e := newEngine(t, WithPauseTimeout(200*time.Millisecond), WithCallTimeout(10*time.Second))
	e.SetHTTPCaller(func(ctx context.Context, _ string, _ *http.Request) (*http.Response, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return nil, errors.New("never")
	})
	p := newPlugin(t, e, "go-callout", "slow")
	rec := through(t, p, httptest.NewRequest("GET", "/", nil), func(http.ResponseWriter, *http.Request) { t.Error("app reached") })
	if rec.Code != 503 || !bytes.Contains(rec.Body.Bytes(), []byte(FailedDetails)) {
		t.Errorf("paused too long: %d %q", rec.Code, rec.Body.String())
	}
}

// TestClosedPluginPasses: a request that reaches a plugin an update just
// removed goes on without it (as under the new configuration).
func TestClosedPluginPasses(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p := newPlugin(t, e, "go-deny", "")
	if rec := through(t, p, httptest.NewRequest("GET", "/", nil), func(http.ResponseWriter, *http.Request) {}); rec.Code != 403 {
		t.Fatalf("open plugin: %d", rec.Code)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if rec := through(t, p, httptest.NewRequest("GET", "/", nil), func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "app") }); rec.Code != 200 || rec.Body.String() != "app" {
		t.Fatalf("closed plugin: %d %q", rec.Code, rec.Body.String())
	}
	if p.Instances() != 0 {
		t.Fatalf("%d instances after Close", p.Instances())
	}
}

func TestTrailers(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	p := newPlugin(t, e, "go-trailers", "")
	tests := []struct {
		name, verdict string
		code          int
		seen          string
	}{
		{"allow", "ok", 200, "ok"},
		{"deny", "deny", 403, ""},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("POST", "/", io.NopCloser(&chunky{strings.NewReader("some body")}))
		req.ContentLength = -1
		req.Trailer = http.Header{"X-Verdict": {tt.verdict}}
		var seen, body string
		rec := through(t, p, req, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			body, seen = string(b), r.Header.Get("X-Trailer-Verdict")
			_, _ = io.WriteString(w, "ok")
			w.Header().Set(http.TrailerPrefix+"X-App", "1")
		})
		if rec.Code != tt.code || seen != tt.seen {
			t.Errorf("%s: %d, x-trailer-verdict %q", tt.name, rec.Code, seen)
		}
		if tt.code != 200 {
			continue
		}
		res := rec.Result()
		if body != "some body" || res.Trailer.Get("X-Wasm-Trailer") != "1" || res.Trailer.Get("X-App") != "1" {
			t.Errorf("%s: body %q, trailers %v", tt.name, body, res.Trailer)
		}
	}
}

func TestProperties(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithNodeMetadata("sidecar~10.0.0.1~web.default", map[string]string{"WORKLOAD_NAME": "web"}))
	p := &Plugin{e: e, cfg: PluginConfig{Name: "props", RootID: "root"}}
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/default/sa/client")
	r := httptest.NewRequest("GET", "http://web/a/b?c=d", nil)
	r.Header.Set("X-Request-Id", "rid")
	r.TLS = &tls.ConnectionState{ServerName: "web.default", PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{spiffe}}}}
	s := &stream{p: p, r: r, start: time.Unix(0, 42)}
	st := &callState{p: p, s: s, origin: s}
	u64 := func(v uint64) string { return string(binary.LittleEndian.AppendUint64(nil, v)) }
	before := map[string]string{
		"plugin_name": "props", "plugin_root_id": "root", "node.id": "sidecar~10.0.0.1~web.default",
		"node.metadata.WORKLOAD_NAME": "web", "request.path": "/a/b?c=d", "request.url_path": "/a/b",
		"request.query": "c=d", "request.method": "GET", "request.host": "web", "request.id": "rid",
		"request.headers.x-request-id": "rid", "request.time": u64(42), "source.principal": spiffe.String(),
		"connection.mtls": "\x01", "connection.requested_server_name": "web.default",
	}
	for k, want := range before {
		if got, ok := e.property(st, strings.Split(k, ".")); !ok || string(got) != want {
			t.Errorf("%s = %q %v, want %q", k, got, ok, want)
		}
	}
	for _, k := range []string{"response.code", "request.duration", "upstream.address", "node.metadata.NOPE"} {
		if got, ok := e.property(st, strings.Split(k, ".")); ok {
			t.Errorf("%s before the response = %q", k, got)
		}
	}
	s.info = &listener.StreamInfo{ResponseCode: 503, Details: "upstream connect error", Cluster: "inbound|80||",
		UpstreamHost: "127.0.0.1:80", RouteName: "default", Duration: 3 * time.Millisecond, BytesReceived: 5, BytesSent: 7}
	after := map[string]string{
		"response.code": u64(503), "response.code_details": "upstream_connect_error", "request.duration": u64(3e6),
		"request.size": u64(5), "response.size": u64(7), "upstream.address": "127.0.0.1:80",
		"xds.cluster_name": "inbound|80||", "xds.route_name": "default",
	}
	for k, want := range after {
		if got, ok := e.property(st, strings.Split(k, ".")); !ok || string(got) != want {
			t.Errorf("%s = %q %v, want %q", k, got, ok, want)
		}
	}
}

// A plugin after one that answers locally still gets its log phase
// (LogOnly), as in Envoy: go-deny refuses the request with 403, then
// go-response's proxy_on_log records the request duration and would count
// a 5xx.
func TestLogPhaseAfterLocalReply(t *testing.T) {
	t.Parallel()
	e := newEngine(t, WithCallTimeout(10*time.Second))
	deny := newPlugin(t, e, "go-deny", "")
	logger := newPlugin(t, e, "go-response", "x")
	for i, code := range []int{403, 503} {
		r := httptest.NewRequest("GET", "/secret", nil)
		rec := httptest.NewRecorder()
		_, denyDone, handled := deny.FilterResponse(rec, r)
		if !handled || rec.Code != 403 {
			t.Fatalf("go-deny did not answer: handled %v, %d", handled, rec.Code)
		}
		done := logger.LogOnly(r)
		if done == nil {
			t.Fatal("go-response exports proxy_on_log but LogOnly returned nil")
		}
		si := listener.StreamInfo{ResponseCode: code, ResponseFlags: "-", Details: "go_deny", Duration: 2 * time.Millisecond}
		done(si)
		if denyDone != nil {
			denyDone(si)
		}
		if got, _ := e.Metric("wasm_go_response_duration_ms"); got != int64(i+1) {
			t.Errorf("request %d: go-response logged %d requests, want %d", i, got, i+1)
		}
	}
	if got, _ := e.Metric("wasm_go_response_5xx_total"); got != 1 {
		t.Errorf("5xx counter %d, want 1 (the 503)", got)
	}
}
