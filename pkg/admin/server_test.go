package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/bolt"
	"github.com/weftmesh/weft/pkg/config/store/file"
)

const vsYAML = `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
  namespace: bookinfo
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
`

const seYAML = `apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: ext-service
spec:
  hosts:
  - extsvc.example.com
  ports:
  - number: 80
    name: http
    protocol: HTTP
`

// invalidVS has a negative weight on line 13.
const invalidVS = `apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: broken
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
      weight: 50
      weight: -5
`

type env struct {
	st  *bolt.Store
	c   *admin.Client
	url string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "config.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newEnvStore(t, st)
}

func newEnvStore(t *testing.T, st store.Store) *env {
	t.Helper()
	srv, err := admin.NewServer(admin.Options{Store: st, Version: "test-1"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	e := &env{c: &admin.Client{BaseURL: hs.URL}, url: hs.URL}
	e.st, _ = st.(*bolt.Store)
	return e
}

func decode(t *testing.T, docs ...string) []*config.Resource {
	t.Helper()
	rs, err := config.Decode("test.yaml", []byte(strings.Join(docs, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func results(ar *admin.ApplyResponse) []string {
	var out []string
	for _, r := range ar.Results {
		out = append(out, r.Kind+"/"+r.Name+"="+r.Result)
	}
	return out
}

func TestApplyGetListDelete(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	ar, err := e.c.Apply(c, decode(t, vsYAML, seYAML), false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(results(ar), " "), "VirtualService/reviews=created ServiceEntry/ext-service=created"; got != want {
		t.Fatalf("results = %s, want %s", got, want)
	}
	if ar.Results[0].ResourceVersion == "" || ar.Revision != e.st.Revision() {
		t.Fatalf("resourceVersion %q, revision %d (store %d)", ar.Results[0].ResourceVersion, ar.Revision, e.st.Revision())
	}

	// Re-applying the same content changes nothing; a changed spec is "configured".
	ar, err = e.c.Apply(c, decode(t, vsYAML, strings.Replace(seYAML, "number: 80", "number: 8080", 1)), false)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(results(ar), " "), "VirtualService/reviews=unchanged ServiceEntry/ext-service=configured"; got != want {
		t.Fatalf("results = %s, want %s", got, want)
	}

	got, err := e.c.Get(c, config.Key{Kind: "VirtualService", Namespace: "bookinfo", Name: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta.Name != "reviews" || got.Meta.ResourceVersion == "" || got.Spec == nil {
		t.Fatalf("Get returned %+v", got)
	}
	// Kind in the path may be a short name or plural.
	if _, err := e.c.Get(c, config.Key{Kind: "vs", Namespace: "bookinfo", Name: "reviews"}); err != nil {
		t.Fatalf("Get by short name: %v", err)
	}

	for _, tc := range []struct {
		kind, ns string
		want     int
	}{
		{"", "", 2},
		{"VirtualService", "", 1},
		{"serviceentries", "default", 1},
		{"", "bookinfo", 1},
		{"DestinationRule", "", 0},
		{"", "nowhere", 0},
	} {
		lr, err := e.c.List(c, tc.kind, tc.ns)
		if err != nil {
			t.Fatalf("List(%q, %q): %v", tc.kind, tc.ns, err)
		}
		if len(lr.Items) != tc.want {
			t.Errorf("List(%q, %q) = %d items, want %d", tc.kind, tc.ns, len(lr.Items), tc.want)
		}
	}

	k := config.Key{Kind: "ServiceEntry", Namespace: "default", Name: "ext-service"}
	if _, err := e.c.Delete(c, k, "999"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Delete with stale resourceVersion: err = %v, want conflict", err)
	}
	if _, err := e.c.Delete(c, k, ""); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.Get(c, k)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after delete: err = %v, want 404 not found", err)
	}
	if _, err := e.c.Delete(c, k, ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete: err = %v, want not found", err)
	}
}

func TestDryRunStoresNothing(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	ar, err := e.c.Apply(c, decode(t, vsYAML), true)
	if err != nil {
		t.Fatal(err)
	}
	if !ar.DryRun || len(ar.Results) != 1 || ar.Results[0].Result != admin.ResultCreated {
		t.Fatalf("dry run response %+v", ar)
	}
	if lr, _, _ := e.st.List(c, "", ""); len(lr) != 0 || e.st.Revision() != 0 {
		t.Fatalf("dry run stored %d resources (revision %d)", len(lr), e.st.Revision())
	}
	if _, err := e.c.Apply(c, decode(t, vsYAML), false); err != nil {
		t.Fatal(err)
	}
	rev := e.st.Revision()
	for _, tc := range []struct {
		doc, want string
	}{
		{vsYAML, admin.ResultUnchanged},
		{strings.Replace(vsYAML, "subset: v1", "subset: v2", 1), admin.ResultConfigured},
	} {
		ar, err := e.c.Apply(c, decode(t, tc.doc), true)
		if err != nil {
			t.Fatal(err)
		}
		if ar.Results[0].Result != tc.want {
			t.Errorf("dry run result %q, want %q", ar.Results[0].Result, tc.want)
		}
	}
	if e.st.Revision() != rev {
		t.Fatalf("dry runs moved the revision from %d to %d", rev, e.st.Revision())
	}
	// Preconditions are checked in dry runs too.
	stale := decode(t, vsYAML)
	stale[0].Meta.ResourceVersion = "12345"
	if _, err := e.c.Apply(c, stale, true); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("dry run with stale resourceVersion: err = %v, want conflict", err)
	}
}

func TestStaleResourceVersionConflict(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	ar, err := e.c.Apply(c, decode(t, vsYAML), false)
	if err != nil {
		t.Fatal(err)
	}
	rv := ar.Results[0].ResourceVersion
	// Someone else changes it.
	if _, err := e.c.Apply(c, decode(t, strings.Replace(vsYAML, "subset: v1", "subset: v2", 1)), false); err != nil {
		t.Fatal(err)
	}
	mine := decode(t, strings.Replace(vsYAML, "subset: v1", "subset: v3", 1))
	mine[0].Meta.ResourceVersion = rv
	_, err = e.c.Apply(c, mine, false)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || ae.Reason != admin.ReasonConflict {
		t.Fatalf("apply with stale resourceVersion: err = %#v, want 409 Conflict", err)
	}
	// With the current resourceVersion it goes through.
	cur, err := e.c.Get(c, mine[0].Key())
	if err != nil {
		t.Fatal(err)
	}
	mine[0].Meta.ResourceVersion = cur.Meta.ResourceVersion
	if _, err := e.c.Apply(c, mine, false); err != nil {
		t.Fatalf("apply with current resourceVersion: %v", err)
	}
}

func TestApplyInvalid(t *testing.T) {
	for _, tc := range []struct {
		name        string
		body        string
		contentType string
		status      int
		want        []string // substrings of the details
	}{
		{
			name: "negative weight names line and field path", body: invalidVS, contentType: "application/yaml",
			status: http.StatusBadRequest, want: []string{"request:13:", "spec.http[0].route[0].weight"},
		},
		{
			name: "one bad doc of three is rejected", body: vsYAML + "---\n" + invalidVS + "---\n" + seYAML, contentType: "application/yaml",
			status: http.StatusBadRequest, want: []string{"VirtualService default/broken", "spec.http[0].route[0].weight"},
		},
		{
			name: "unknown field in JSON array", contentType: "application/json",
			body:   `[{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"x"},"spec":{"hostz":["a"]}}]`,
			status: http.StatusBadRequest, want: []string{"spec.hostz", "hosts"},
		},
		{
			name: "unknown kind", contentType: "application/yaml",
			body:   "apiVersion: networking.istio.io/v1\nkind: VirtualServis\nmetadata:\n  name: x\n",
			status: http.StatusBadRequest, want: []string{"VirtualServis"},
		},
		{
			name: "same resource twice", contentType: "application/yaml", body: vsYAML + "---\n" + vsYAML,
			status: http.StatusBadRequest, want: []string{"defined twice"},
		},
		{name: "empty body", body: "", status: http.StatusBadRequest, want: []string{"no resources"}},
		{name: "valid YAML is accepted", body: vsYAML + "---\n" + seYAML, contentType: "application/yaml", status: http.StatusOK},
		{name: "valid JSON List is accepted", contentType: "application/json", status: http.StatusOK,
			body: `{"kind":"List","items":[{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"x"},"spec":{"hosts":["a"],"http":[{"route":[{"destination":{"host":"a"}}]}]}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			resp, err := http.Post(e.url+"/api/v1/apply", tc.contentType, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == http.StatusOK {
				if e.st.Revision() == 0 {
					t.Fatal("valid apply stored nothing")
				}
				return
			}
			var eb admin.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
				t.Fatalf("error body %s: %v", body, err)
			}
			all := eb.Error + "\n" + strings.Join(eb.Details, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("error %q does not mention %q", all, w)
				}
			}
			if lr, _, _ := e.st.List(context.Background(), "", ""); len(lr) != 0 {
				t.Fatalf("rejected apply stored %d resources", len(lr))
			}
		})
	}
}

func TestClientErrorCarriesDetails(t *testing.T) {
	e := newEnv(t)
	_, err := e.c.ApplyRaw(ctx(t), []byte(invalidVS), "application/yaml", false)
	var ae *admin.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.StatusCode != http.StatusBadRequest || ae.Reason != admin.ReasonInvalid || len(ae.Details) != 1 ||
		!strings.Contains(ae.Details[0], "spec.http[0].route[0].weight") {
		t.Fatalf("APIError = %+v", ae)
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		t.Fatal("a validation error must not match store sentinels")
	}
}

func TestHTTPStatuses(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/healthz", 200, `"ok"`},
		{"GET", "/version", 200, "test-1"},
		{"GET", "/api/v1/resources", 200, `"items":[]`},
		{"GET", "/api/v1/resources?kind=nosuchkind", 400, "unknown resource type"},
		{"GET", "/api/v1/resources/vs/default/missing", 404, `"reason":"NotFound"`},
		{"GET", "/api/v1/resources/nosuchkind/default/x", 400, "unknown resource type"},
		{"DELETE", "/api/v1/resources/vs/default/missing", 404, "not found"},
		{"POST", "/api/v1/apply?dryRun=maybe", 400, "dryRun"},
		{"GET", "/api/v1/watch?from=-1", 400, "from"},
		{"PUT", "/api/v1/apply", 405, ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.url+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.contains) {
				t.Fatalf("%s %s = %d %s, want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.contains)
			}
		})
	}
}

func TestReadOnlyStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "se.yaml"), []byte(seYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := file.Open(dir, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := newEnvStore(t, st)
	c := ctx(t)
	lr, err := e.c.List(c, "se", "")
	if err != nil || len(lr.Items) != 1 {
		t.Fatalf("List = %v, %v; want the file's ServiceEntry", lr, err)
	}
	_, err = e.c.Apply(c, decode(t, vsYAML), false)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusMethodNotAllowed || !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Apply on read-only store: err = %v, want 405 read-only", err)
	}
	if _, err := e.c.Delete(c, lr.Items[0].Key(), ""); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Delete on read-only store: err = %v, want read-only", err)
	}
}

func TestWatchStreamsEvents(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	// One change before the watch starts.
	if _, err := e.c.Apply(c, decode(t, seYAML), false); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(c)
	defer cancel()
	events, streamErr, err := e.c.Watch(wctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// from=0 means "from now": the ServiceEntry above is not replayed.
	if _, err := e.c.Apply(c, decode(t, vsYAML), false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Delete(c, config.Key{Kind: "ServiceEntry", Namespace: "default", Name: "ext-service"}, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"ADDED VirtualService reviews", "DELETED ServiceEntry ext-service"}
	var last int64
	for i, w := range want {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream closed after %d events: %v", i, streamErr())
			}
			if got := string(ev.Type) + " " + ev.Object.Kind + " " + ev.Object.Meta.Name; got != w {
				t.Fatalf("event %d = %q, want %q", i, got, w)
			}
			if ev.Revision <= last {
				t.Fatalf("event %d revision %d not after %d", i, ev.Revision, last)
			}
			last = ev.Revision
		case <-time.After(5 * time.Second):
			t.Fatalf("no event %d (%s) within 5s", i, w)
		}
	}

	// Replay from a revision: the first apply (revision 1) is seen again.
	resp, err := http.Get(e.url + "/api/v1/watch?from=1&kind=vs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("Content-Type %q", ct)
	}
	var ev admin.WatchEvent
	if err := json.NewDecoder(resp.Body).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Object.Kind != "VirtualService" || ev.Type != store.Added {
		t.Fatalf("replayed first event %+v, want the VirtualService (kind filter)", ev)
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				if err := streamErr(); err != nil {
					t.Fatalf("stream error after cancel: %v", err)
				}
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after cancel")
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "config.db"), bolt.Options{Retention: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := newEnvStore(t, st)
	c := ctx(t)
	for _, subset := range []string{"v1", "v2", "v3"} {
		if _, err := e.c.Apply(c, decode(t, strings.Replace(vsYAML, "subset: v1", "subset: "+subset, 1)), false); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = e.c.Watch(c, 1)
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusGone || !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch from a compacted revision: err = %v, want 410 compacted", err)
	}
	// The latest revision is still watchable.
	wctx, cancel := context.WithCancel(c)
	defer cancel()
	if _, _, err := e.c.Watch(wctx, st.Revision()); err != nil {
		t.Fatalf("Watch from the latest revision: %v", err)
	}
}
