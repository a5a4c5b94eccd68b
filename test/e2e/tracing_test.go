package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// zspan is the part of a Zipkin v2 span the test reads.
type zspan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind"`
	Tags          map[string]string `json:"tags"`
	LocalEndpoint struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
}

func (s zspan) svc() string { return strings.SplitN(s.LocalEndpoint.ServiceName, ".", 2)[0] }

// fetchTrace reads one trace from the control plane's built-in collector.
func fetchTrace(server, id string) ([]zspan, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(server + "/api/v1/traces/" + id)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET trace %s: %s", id, resp.Status)
	}
	var spans []zspan
	return spans, json.NewDecoder(resp.Body).Decode(&spans)
}

// TestDemoTracing runs `weft demo` (100 % sampling to the control plane's
// built-in Zipkin collector) and checks that one request through the
// ingress gives one trace spanning productpage → reviews → ratings with an
// inbound (SERVER) and outbound (CLIENT) span per hop and consistent
// parent links; that an incoming W3C traceparent (sampled) and B3 headers
// are continued, a "not sampled" decision is honoured, and the access log
// lines of each hop carry the trace id.
func TestDemoTracing(t *testing.T) {
	m := startDemo(t, "--load", "10") // as the acceptance test runs it: with background load
	rid := 0
	// sendUntilRatings sends requests carrying the trace headers hdr(i)
	// until reviews v2/v3 (which call ratings) answered; it returns the
	// trace id used for that request.
	sendUntilRatings := func(hdr func(i int) (traceID string, kv []string)) string {
		for i := 0; i < 30; i++ {
			rid++
			id, kv := hdr(rid)
			code, body := m.get(t, kv...)
			if code != http.StatusOK {
				t.Fatalf("productpage answered %d", code)
			}
			if strings.Contains(body, "reviews-v2") || strings.Contains(body, "reviews-v3") {
				return id
			}
		}
		t.Fatal("reviews v2/v3 never answered in 30 requests")
		return ""
	}
	const parentSpan = "00f067aa0ba902b7"
	w3c := sendUntilRatings(func(i int) (string, []string) {
		id := fmt.Sprintf("4bf92f3577b34da6a3ce929d%08x", i)
		return id, []string{"traceparent", "00-" + id + "-" + parentSpan + "-01"}
	})

	var spans []zspan
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		spans, err = fetchTrace(m.server, w3c)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, s := range spans {
			have[s.svc()+"/"+s.Kind] = true
		}
		if have["productpage/SERVER"] && have["productpage/CLIENT"] && have["reviews/SERVER"] && have["reviews/CLIENT"] && have["ratings/SERVER"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s incomplete after 20s: %v", w3c, have)
		}
		time.Sleep(300 * time.Millisecond)
	}
	byID := map[string]zspan{}
	for _, s := range spans {
		if s.TraceID != w3c {
			t.Fatalf("span %s has trace id %s, want %s", s.ID, s.TraceID, w3c)
		}
		if _, dup := byID[s.ID]; dup {
			t.Fatalf("span id %s used twice", s.ID)
		}
		byID[s.ID] = s
	}
	for _, s := range spans {
		t.Logf("span %s parent %s %s/%s %s status %s", s.ID, s.ParentID, s.LocalEndpoint.ServiceName, s.Kind, s.Name, s.Tags["http.status_code"])
	}
	roots := 0
	for _, s := range spans {
		if s.ParentID == parentSpan {
			roots++
			continue
		}
		p, ok := byID[s.ParentID]
		if !ok {
			t.Errorf("span %s (%s %s) has parent %q not in the trace", s.ID, s.svc(), s.Kind, s.ParentID)
			continue
		}
		// A SERVER span's parent is the caller's CLIENT span; a CLIENT
		// span's parent is its own workload's SERVER span (the app
		// propagated the headers) or the ingress.
		switch {
		case s.Kind == "SERVER" && p.Kind != "CLIENT":
			t.Errorf("server span %s/%s has parent kind %s", s.svc(), s.ID, p.Kind)
		case s.Kind == "CLIENT" && p.Kind == "SERVER" && p.svc() != s.svc():
			t.Errorf("client span of %s is a child of %s's server span", s.svc(), p.svc())
		}
		if s.Tags["http.status_code"] == "" || s.Tags["guid:x-request-id"] == "" || s.Tags["http.method"] != "GET" {
			t.Errorf("span %s/%s lacks tags: %v", s.svc(), s.Kind, s.Tags)
		}
	}
	if roots != 1 {
		t.Errorf("%d spans are children of the incoming traceparent's span, want 1 (the ingress)", roots)
	}
	// The chain productpage → reviews → ratings.
	chain := func(child, parentSvc string) {
		for _, s := range spans {
			if s.svc() == child && s.Kind == "SERVER" && byID[s.ParentID].svc() == parentSvc && byID[s.ParentID].Kind == "CLIENT" {
				return
			}
		}
		t.Errorf("no %s SERVER span whose parent is a %s CLIENT span", child, parentSvc)
	}
	chain("reviews", "productpage")
	chain("ratings", "reviews")
	chain("details", "productpage")

	// B3 multi-header context is continued too.
	b3 := sendUntilRatings(func(i int) (string, []string) {
		id := fmt.Sprintf("a3ce929d0e0e4736%016x", i)
		return id, []string{"x-b3-traceid", id, "x-b3-spanid", parentSpan, "x-b3-sampled", "1"}
	})
	// An incoming "not sampled" decision is honoured: no spans.
	unsampled := fmt.Sprintf("5bf92f3577b34da6a3ce929d%08x", 1)
	if code, _ := m.get(t, "traceparent", "00-"+unsampled+"-"+parentSpan+"-00"); code != http.StatusOK {
		t.Fatalf("productpage answered %d", code)
	}
	eventually(t, "B3 trace collected", func() error {
		s, err := fetchTrace(m.server, b3)
		if err != nil {
			return err
		}
		svcs := map[string]bool{}
		for _, sp := range s {
			svcs[sp.svc()] = true
		}
		if !svcs["productpage"] || !svcs["reviews"] || !svcs["ratings"] {
			return fmt.Errorf("B3 trace %s has services %v", b3, svcs)
		}
		return nil
	})
	time.Sleep(2500 * time.Millisecond) // > the proxies' 1 s export interval
	if s, err := fetchTrace(m.server, unsampled); err != nil || len(s) != 0 {
		t.Errorf("traceparent sampled=00 produced %d spans (err %v)", len(s), err)
	}

	// Access log lines of every hop carry the trace id.
	files, _ := filepath.Glob(filepath.Join(m.logDir, "*"))
	withID := map[string]bool{}
	principals := map[string]int{} // lines of this trace naming the peer's SPIFFE ID, by direction
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, `"trace_id":"`+w3c+`"`) {
				withID[filepath.Base(f)] = true
				if strings.Contains(line, `"direction":"outbound"`) && strings.Contains(line, `"upstream_peer_uri_san":"spiffe://cluster.local/ns/default/sa/`) {
					principals["outbound"]++
				}
				if strings.Contains(line, `"direction":"inbound"`) && strings.Contains(line, `"downstream_peer_uri_san":"spiffe://cluster.local/ns/`) {
					principals["inbound"]++
				}
			}
		}
	}
	// The demo runs mutual TLS: both principals of every hop are logged
	// (ingress→productpage, productpage→details, productpage→reviews, reviews→ratings).
	if principals["outbound"] < 4 || principals["inbound"] < 4 {
		t.Errorf("access log lines with peer principals: %v, want >= 4 each", principals)
	}
	for _, w := range []string{"productpage", "reviews", "ratings"} {
		found := false
		for f := range withID {
			if strings.Contains(f, w) {
				found = true
			}
		}
		if !found {
			t.Errorf("no access log line of %s has trace_id %s (files with it: %v)", w, w3c, withID)
		}
	}
}
