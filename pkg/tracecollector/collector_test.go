package tracecollector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCollector(t *testing.T) {
	c := New(4)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	post := func(body string) int {
		resp, err := http.Post(srv.URL+"/api/v2/spans", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(`[{"traceId":"00000000000000000000000000000abc","id":"0000000000000001","name":"a","timestamp":2,"localEndpoint":{"serviceName":"productpage.default"}},
	{"traceId":"abc","id":"0000000000000002","parentId":"0000000000000001","timestamp":3,"localEndpoint":{"serviceName":"reviews.default"}}]`); code != http.StatusAccepted {
		t.Fatalf("post: %d", code)
	}
	if code := post(`{"not":"an array"}`); code != http.StatusBadRequest {
		t.Fatalf("bad body: %d", code)
	}
	if code := post(`[{"id":"1"}]`); code != http.StatusBadRequest {
		t.Fatalf("missing traceId: %d", code)
	}
	get := func(path string, v any) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	var tr []Span
	if code := get("/api/v1/traces/abc", &tr); code != 200 || len(tr) != 2 || tr[0].ID != "0000000000000001" {
		t.Fatalf("trace by 64-bit id: %d %+v", code, tr)
	}
	var trs [][]Span
	if get("/api/v1/traces?service=reviews", &trs); len(trs) != 1 || len(trs[0]) != 2 {
		t.Fatalf("traces by service: %+v", trs)
	}
	if get("/api/v2/traces?serviceName=details.default", &trs); len(trs) != 0 {
		t.Fatalf("unknown service matched: %+v", trs)
	}
	// The ring keeps the newest 4 spans.
	for i := range 4 {
		post(fmt.Sprintf(`[{"traceId":"%032x","id":"%016x","timestamp":%d}]`, 100+i, i+1, 10+i))
	}
	if code := get("/api/v2/trace/abc", &tr); code != http.StatusNotFound {
		t.Fatalf("overwritten trace still found: %d", code)
	}
	var svcs []string
	if get("/api/v2/services", &svcs); len(svcs) != 0 {
		t.Fatalf("services %v", svcs)
	}
}
