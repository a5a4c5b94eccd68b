package proxy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/proxy"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

// upperFilter is a listener.ResponseFilter: it buffers the response body,
// upper-cases it, tags the response and records the stream info.
type upperFilter struct {
	tag    string
	closed atomic.Int32
	mu     sync.Mutex
	infos  []listener.StreamInfo
	logged []listener.StreamInfo // LogOnly: requests an earlier filter answered
}

// LogOnly makes upperFilter a listener.LogFilter.
func (u *upperFilter) LogOnly(*http.Request) func(listener.StreamInfo) {
	return func(si listener.StreamInfo) {
		u.mu.Lock()
		u.logged = append(u.logged, si)
		u.mu.Unlock()
	}
}

func (u *upperFilter) Filter(http.ResponseWriter, *http.Request) bool { return false }

func (u *upperFilter) FilterResponse(w http.ResponseWriter, r *http.Request) (func(http.ResponseWriter) http.ResponseWriter, func(listener.StreamInfo), bool) {
	done := func(si listener.StreamInfo) {
		u.mu.Lock()
		u.infos = append(u.infos, si)
		u.mu.Unlock()
	}
	if r.URL.Path == "/local" {
		w.WriteHeader(http.StatusTeapot)
		return nil, done, true
	}
	var uw *upperWriter
	wrap := func(inner http.ResponseWriter) http.ResponseWriter {
		uw = &upperWriter{ResponseWriter: inner, tag: u.tag}
		return uw
	}
	return wrap, func(si listener.StreamInfo) { uw.flush(); done(si) }, false
}

func (u *upperFilter) Close() error { u.closed.Add(1); return nil }

type upperWriter struct {
	http.ResponseWriter
	tag    string
	status int
	buf    bytes.Buffer
}

func (w *upperWriter) WriteHeader(code int)        { w.status = code }
func (w *upperWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *upperWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w *upperWriter) flush() {
	h := w.ResponseWriter.Header()
	h.Set("X-Upper", w.tag)
	h.Set("Content-Length", strconv.Itoa(w.buf.Len()))
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(bytes.ToUpper(w.buf.Bytes()))
}

// TestResponseFilterHook: a ResponseFilter rewrites the whole response
// through its wrapper, sees the stream info after it, answers locally, and
// is closed once an update no longer uses it.
func TestResponseFilterHook(t *testing.T) {
	skipShort(t)
	cp := xdstest.Start(t)
	app := startBackend(t, "app", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "11")
		_, _ = io.WriteString(w, "hello world")
	})
	_, ps, _ := net.SplitHostPort(app.addr)
	port, _ := strconv.Atoi(ps)
	withFilter := func(tags ...string) *listenerv3.Listener {
		l := virtualInbound(t, port)
		h := &hcmv3.HttpConnectionManager{}
		if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		h.HttpFilters = nil
		for _, tag := range tags {
			tc, err := anypb.New(wrapperspb.String(tag))
			if err != nil {
				t.Fatal(err)
			}
			h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "test.upper", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: tc}})
		}
		a, err := anypb.New(h)
		if err != nil {
			t.Fatal(err)
		}
		l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		return l
	}
	var mu sync.Mutex
	built := map[string]*upperFilter{}
	factory := func(a *anypb.Any) (listener.HTTPFilter, error) {
		s := &wrapperspb.StringValue{}
		if err := a.UnmarshalTo(s); err != nil {
			return nil, err
		}
		if s.GetValue() == "bad" {
			return nil, errors.New("bad filter config")
		}
		mu.Lock()
		defer mu.Unlock()
		// An update reuses the filter the running config holds; a closed
		// one (its update was rejected, possibly more than once: the
		// control plane may deliver a rejected config again) is not
		// reused, as a real factory could not revive it.
		if f := built[s.GetValue()]; f != nil && f.closed.Load() == 0 {
			return f, nil
		}
		f := &upperFilter{tag: s.GetValue()}
		built[s.GetValue()] = f
		return f, nil
	}
	res := func(tags ...string) *xdstest.Resources {
		return &xdstest.Resources{Listeners: []types.Resource{withFilter(tags...)},
			Clusters: []types.Resource{staticCluster("inbound|"+ps+"||", app.addr)}}
	}
	cp.Set(t, nodeID, res("one"))
	p := startProxy(t, cp, func(o *proxy.Options) {
		o.AppPort = port
		o.HTTPFilters = map[string]listener.FilterFactory{"test.upper": factory}
	})
	in := "http://" + p.Addresses().Inbound
	resp, err := http.Get(in + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "HELLO WORLD" || resp.Header.Get("X-Upper") != "one" {
		t.Fatalf("rewritten response: %d %q X-Upper=%q", resp.StatusCode, body, resp.Header.Get("X-Upper"))
	}
	if code, _ := httpGet(t, in+"/local"); code != http.StatusTeapot {
		t.Fatalf("local reply: %d", code)
	}
	mu.Lock()
	one := built["one"]
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for { // done may run just after the client has the response
		one.mu.Lock()
		infos := append([]listener.StreamInfo(nil), one.infos...)
		one.mu.Unlock()
		if len(infos) == 2 {
			a, b := infos[0], infos[1]
			if a.ResponseCode != 200 || a.Cluster != "inbound|"+ps+"||" || a.UpstreamHost == "" || a.Duration <= 0 || b.ResponseCode != http.StatusTeapot {
				t.Errorf("stream infos %+v", infos)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d stream infos, want 2", len(infos))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cp.Set(t, nodeID, res("two"))
	for one.closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the replaced filter was not closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		resp, err := http.Get(in + "/y")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Upper") == "two" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new filter not applied: X-Upper=%q", resp.Header.Get("X-Upper"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := one.closed.Load(); n != 1 || !strings.EqualFold(one.tag, "one") {
		t.Fatalf("closed %d times", n)
	}
	mu.Lock()
	two := built["two"]
	mu.Unlock()
	if two.closed.Load() != 0 {
		t.Fatal("the current filter was closed")
	}
	// A rejected update closes the filters it built, not the current ones.
	cp.Set(t, nodeID, res("two", "three", "bad"))
	select {
	case <-cp.NACKs:
	case <-time.After(10 * time.Second):
		t.Fatal("no NACK")
	}
	mu.Lock()
	three := built["three"]
	mu.Unlock()
	if three == nil {
		t.Fatal("the rejected update's new filter was never built")
	}
	if three.closed.Load() != 1 || two.closed.Load() != 0 {
		t.Fatalf("after a NACK: three closed %d times, two %d", three.closed.Load(), two.closed.Load())
	}
	// A filter after one that answers locally gets only its log phase, with
	// the local reply's stream info; it never sees the request otherwise.
	cp.Set(t, nodeID, res("two", "four"))
	for {
		mu.Lock()
		four := built["four"]
		mu.Unlock()
		if four != nil {
			if code, _ := httpGet(t, in+"/local"); code != http.StatusTeapot {
				t.Fatalf("local reply: %d", code)
			}
			four.mu.Lock()
			logged, infos := append([]listener.StreamInfo(nil), four.logged...), len(four.infos)
			four.mu.Unlock()
			if len(logged) > 0 {
				if logged[0].ResponseCode != http.StatusTeapot || infos != 0 {
					t.Fatalf("filter after the local reply: logged %+v, full streams %d", logged, infos)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the filter after a local reply never got its log phase")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
