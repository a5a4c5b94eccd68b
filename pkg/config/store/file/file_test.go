package file

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/storetest"
)

// vsYAML is a valid VirtualService routing hosts to the first host.
func vsYAML(name string, hosts ...string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %s
spec:
  hosts: [%s]
  http:
  - route:
    - destination:
        host: %s
`, name, strings.Join(hosts, ", "), hosts[0])
}

const drYAML = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: shop
spec:
  host: reviews
`

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace writes like editors and kubectl's ConfigMap updates do: a
// temporary file renamed over the target.
func replace(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	write(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// testLogger logs at debug level into the test's output (shown on failure
// or with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Debounce: 20 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func watch(t *testing.T, s *Store) <-chan store.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// expect waits up to 2s for the next event and checks its type and key.
func expect(t *testing.T, ch <-chan store.Event, typ store.EventType, kind, ns, name string) store.Event {
	t.Helper()
	select {
	case ev := <-ch:
		k := ev.Resource.Key()
		if ev.Type != typ || k.Kind != kind || k.Namespace != ns || k.Name != name {
			t.Fatalf("event = %s %s, want %s %s %s/%s", ev.Type, k, typ, kind, ns, name)
		}
		return ev
	case <-time.After(2 * time.Second):
		t.Fatalf("no %s event for %s %s/%s within 2s", typ, kind, ns, name)
	}
	return store.Event{}
}

func expectNone(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %s %s", ev.Type, ev.Resource.Key())
	case <-time.After(200 * time.Millisecond):
	}
}

func hosts(t *testing.T, s *Store, name string) []string {
	t.Helper()
	r, err := s.Get(context.Background(), config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return r.Spec.(*networking.VirtualService).GetHosts()
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), vsYAML("a", "a")+"---\n"+drYAML)
	write(t, filepath.Join(dir, "sub", "deeper", "b.yml"), vsYAML("b", "b"))
	write(t, filepath.Join(dir, "c.json"), `{"apiVersion":"networking.istio.io/v1beta1","kind":"Gateway","metadata":{"name":"gw"},"spec":{"selector":{"istio":"ingress"},"servers":[{"port":{"number":80,"name":"http","protocol":"HTTP"},"hosts":["*"]}]}}`)
	write(t, filepath.Join(dir, "notes.txt"), "not config")
	write(t, filepath.Join(dir, ".hidden.yaml"), vsYAML("hidden", "h"))
	write(t, filepath.Join(dir, "..data", "x.yaml"), vsYAML("dotdir", "h"))
	s := openStore(t, dir)
	list, rev, err := s.List(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.Key().String())
		if r.Meta.Generation != 1 || r.Meta.ResourceVersion != "1" || r.Source != (config.Source{}) {
			t.Errorf("%s meta = %+v, source %q; want generation 1, resourceVersion 1, no source", r.Key(), r.Meta, r.Source)
		}
	}
	want := []string{"VirtualService default/a", "VirtualService default/b", "Gateway default/gw", "DestinationRule shop/reviews"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("List = %v, want %v", got, want)
	}
	if rev != 1 || s.Revision() != 1 {
		t.Fatalf("revision = %d/%d, want 1", rev, s.Revision())
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Fatalf("Errors = %v", errs)
	}
	if vs, _, _ := s.List(context.Background(), config.KindVirtualService, "default"); len(vs) != 2 {
		t.Fatalf("List(VirtualService, default) = %d items, want 2", len(vs))
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "f.yaml"), "")
	for _, tc := range []struct{ name, dir string }{
		{"missing", filepath.Join(dir, "nope")},
		{"not a directory", filepath.Join(dir, "f.yaml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := Open(tc.dir, Options{}); err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	s := openStore(t, t.TempDir())
	if _, err := s.Apply(context.Background(), store.Upsert, []*config.Resource{storetest.VS("default", "a", "a")}); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Apply: err = %v, want ErrReadOnly", err)
	}
	if _, err := s.Delete(context.Background(), config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "a"}, ""); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Delete: err = %v, want ErrReadOnly", err)
	}
}

func TestEditAddDelete(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "one"))
	s := openStore(t, dir)
	ch := watch(t, s)
	created, err := s.Get(context.Background(), config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}

	write(t, a, vsYAML("a", "two"))
	ev := expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
	if ev.Revision != 2 || ev.Resource.Meta.Generation != 2 || ev.Resource.Meta.ResourceVersion != "2" ||
		!ev.Resource.Meta.CreationTimestamp.Equal(created.Meta.CreationTimestamp) {
		t.Fatalf("modified event revision %d meta %+v", ev.Revision, ev.Resource.Meta)
	}
	if h := hosts(t, s, "a"); h[0] != "two" {
		t.Fatalf("hosts after edit = %v", h)
	}

	// Rewriting identical content (or touching) is not a change.
	write(t, a, vsYAML("a", "two"))
	expectNone(t, ch)

	write(t, filepath.Join(dir, "new", "b.yaml"), vsYAML("b", "b")) // in a new directory
	expect(t, ch, store.Added, config.KindVirtualService, "default", "b")
	write(t, filepath.Join(dir, "new", "c.yaml"), vsYAML("c", "c")) // the new directory is watched
	expect(t, ch, store.Added, config.KindVirtualService, "default", "c")

	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	ev = expect(t, ch, store.Deleted, config.KindVirtualService, "default", "a")
	if ev.Resource.Meta.ResourceVersion != fmt.Sprint(ev.Revision) {
		t.Fatalf("deleted event resourceVersion %s, revision %d", ev.Resource.Meta.ResourceVersion, ev.Revision)
	}
	if _, err := s.Get(context.Background(), ev.Resource.Key()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get deleted: err = %v, want ErrNotFound", err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	expect(t, ch, store.Deleted, config.KindVirtualService, "default", "b")
	expect(t, ch, store.Deleted, config.KindVirtualService, "default", "c")

	// Replay from the first revision gives the same history.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	replay, err := s.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		typ  store.EventType
		name string
	}{{store.Modified, "a"}, {store.Added, "b"}, {store.Added, "c"}, {store.Deleted, "a"}, {store.Deleted, "b"}, {store.Deleted, "c"}} {
		expect(t, replay, want.typ, config.KindVirtualService, "default", want.name)
	}
}

func TestInvalidFileKeepsLastGoodState(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "good"))
	s := openStore(t, dir)
	ch := watch(t, s)

	for _, tc := range []struct {
		name, data, wantErr string
		minLine             int // the error's line is at least this
	}{
		{"bad yaml", "kind: [unclosed\n", "invalid YAML", 0},
		{"bad field", vsYAML("a", "good") + "  nonsense: 1\n", "nonsense", 1},
		{"unknown kind", "---\napiVersion: v1\nkind: Nope\nmetadata: {name: x}\n", "Nope", 2},
		// Decodes, but fails Istio's validation rules.
		{"invalid spec", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [good]\n", "route", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(t, a, tc.data)
			deadline := time.Now().Add(2 * time.Second)
			for len(s.Errors()) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			errs := s.Errors()
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.wantErr) ||
				errs[0].Source.File != a || errs[0].Source.Line < tc.minLine {
				t.Fatalf("Errors = %v, want one in %s at line >= %d mentioning %q", errs, a, tc.minLine, tc.wantErr)
			}
			if h := hosts(t, s, "a"); len(h) != 1 || h[0] != "good" {
				t.Fatalf("hosts = %v, want the last good [good]", h)
			}
			expectNone(t, ch)
			// Fix it again for the next case.
			write(t, a, vsYAML("a", "good"))
			for len(s.Errors()) != 0 && time.Now().Before(deadline.Add(2*time.Second)) {
				time.Sleep(10 * time.Millisecond)
			}
			if errs := s.Errors(); len(errs) != 0 {
				t.Fatalf("Errors after fix = %v", errs)
			}
		})
	}

	// A fix that also changes the content is a normal Modified event.
	// (Renamed into place: a truncating write stalled for over the empty
	// grace on a loaded machine would read as a deletion, which is right.)
	replace(t, a, "broken: [\n")
	replace(t, a, vsYAML("a", "better"))
	expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
}

func TestInvalidFileAtStartup(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "bad.yaml"), vsYAML("a", "a")+"---\nkind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {}\n")
	write(t, filepath.Join(dir, "good.yaml"), vsYAML("g", "g"))
	s := openStore(t, dir)
	errs := s.Errors()
	// The error is in the second document, which starts at line 12.
	if len(errs) != 1 || filepath.Base(errs[0].Source.File) != "bad.yaml" || errs[0].Source.Line < 12 ||
		!strings.Contains(errs[0].Error(), "name is required") {
		t.Fatalf("Errors = %v, want bad.yaml:12 or later: name is required", errs)
	}
	list, _, _ := s.List(context.Background(), "", "")
	if len(list) != 1 || list[0].Meta.Name != "g" {
		t.Fatalf("List = %v, want only g (a bad file contributes nothing)", list)
	}
}

func TestDuplicateIsErrorForSecond(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "1.yaml"), vsYAML("a", "first"))
	write(t, filepath.Join(dir, "2.yaml"), vsYAML("x", "x")+"---\n"+vsYAML("a", "second"))
	s := openStore(t, dir)
	errs := s.Errors()
	if len(errs) != 1 || filepath.Base(errs[0].Source.File) != "2.yaml" || errs[0].Source.Line < 12 ||
		!strings.Contains(errs[0].Error(), "duplicate") || !strings.Contains(errs[0].Error(), "1.yaml:1") {
		t.Fatalf("Errors = %v, want a duplicate in 2.yaml (second document) naming 1.yaml:1", errs)
	}
	if h := hosts(t, s, "a"); h[0] != "first" {
		t.Fatalf("hosts = %v, want the first definition", h)
	}
	if _, err := s.Get(context.Background(), config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "x"}); err != nil {
		t.Fatalf("the rest of the second file is lost: %v", err)
	}
}

func TestRenameReplace(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "v1"))
	s := openStore(t, dir)
	ch := watch(t, s)
	for i := 2; i <= 4; i++ {
		replace(t, a, vsYAML("a", fmt.Sprintf("v%d", i)))
		ev := expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
		if h := ev.Resource.Spec.(*networking.VirtualService).GetHosts(); h[0] != fmt.Sprintf("v%d", i) {
			t.Fatalf("after replace %d hosts = %v", i, h)
		}
	}
	// Vim's pattern: move the original away, write a new file.
	if err := os.Rename(a, a+"~"); err != nil {
		t.Fatal(err)
	}
	write(t, a, vsYAML("a", "vim"))
	ev := expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
	if h := ev.Resource.Spec.(*networking.VirtualService).GetHosts(); h[0] != "vim" {
		t.Fatalf("hosts = %v", h)
	}
	// Moving a file to another name keeps its resources without events.
	if err := os.Rename(a, filepath.Join(dir, "renamed.yaml")); err != nil {
		t.Fatal(err)
	}
	expectNone(t, ch)
	if h := hosts(t, s, "a"); h[0] != "vim" {
		t.Fatalf("hosts after rename = %v", h)
	}
}

func TestCloseIdempotentAndEndsWatches(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("event after Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("watch not closed by Close")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after Close, %d before Open", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDebounceCoalescesBursts(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "v0"))
	s, err := Open(dir, Options{Debounce: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch := watch(t, s)
	for i := 1; i <= 20; i++ {
		write(t, a, vsYAML("a", fmt.Sprintf("v%d", i)))
		time.Sleep(5 * time.Millisecond)
	}
	ev := expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
	if h := ev.Resource.Spec.(*networking.VirtualService).GetHosts(); h[0] != "v20" || ev.Revision != 2 {
		t.Fatalf("after a burst of 20 writes: revision %d hosts %v, want one reload (revision 2) with v20", ev.Revision, h)
	}
	expectNone(t, ch)
}

func TestHistoryRetention(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "v1"))
	s, err := Open(dir, Options{Debounce: 10 * time.Millisecond, History: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ch := watch(t, s)
	for i := 2; i <= 5; i++ {
		write(t, a, vsYAML("a", fmt.Sprintf("v%d", i)))
		expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
	}
	// Revision 5; history keeps revisions 4 and 5.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Watch(ctx, 2); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch(2): err = %v, want ErrCompacted", err)
	}
	replay, err := s.Watch(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if ev := expect(t, replay, store.Modified, config.KindVirtualService, "default", "a"); ev.Revision != 4 {
		t.Fatalf("replay starts at %d, want 4", ev.Revision)
	}
}

func TestCustomParse(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), vsYAML("a", "a"))
	parse := func(file string, data []byte) ([]*config.Resource, config.ErrorList) {
		return nil, config.ErrorList{{Source: config.Source{File: file, Line: 3}, Msg: "rejected by policy"}}
	}
	s, err := Open(dir, Options{Parse: parse})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if errs := s.Errors(); len(errs) != 1 || !strings.HasSuffix(errs[0].Error(), "a.yaml:3: rejected by policy") {
		t.Fatalf("Errors = %v", errs)
	}
	if list, _, _ := s.List(context.Background(), "", ""); len(list) != 0 {
		t.Fatalf("List = %v, want nothing from a rejected file", list)
	}
}

// TestConfigMapMount follows a Kubernetes ConfigMap volume: files are
// symlinks through "..data", which the kubelet swaps atomically.
func TestConfigMapMount(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "..v1", "a.yaml"), vsYAML("a", "v1"))
	for _, l := range []struct{ target, name string }{{"..v1", "..data"}, {filepath.Join("..data", "a.yaml"), "a.yaml"}} {
		if err := os.Symlink(l.target, filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, dir)
	if h := hosts(t, s, "a"); h[0] != "v1" {
		t.Fatalf("hosts = %v", h)
	}
	ch := watch(t, s)
	write(t, filepath.Join(dir, "..v2", "a.yaml"), vsYAML("a", "v2"))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	ev := expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
	if h := ev.Resource.Spec.(*networking.VirtualService).GetHosts(); h[0] != "v2" {
		t.Fatalf("hosts after ConfigMap update = %v", h)
	}
	if errs := s.Errors(); len(errs) != 0 {
		t.Fatalf("Errors = %v", errs)
	}
}

// TestUnrelatedWritesDoNotStarveReloads keeps writing a non-config file
// faster than the debounce; config edits still load.
func TestUnrelatedWritesDoNotStarveReloads(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "v1"))
	s := openStore(t, dir)
	ch := watch(t, s)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if err := os.WriteFile(filepath.Join(dir, "app.log"), []byte(strconv.Itoa(i)), 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	write(t, a, vsYAML("a", "v2"))
	expect(t, ch, store.Modified, config.KindVirtualService, "default", "a")
	// A config file written constantly (faster than the 20ms debounce)
	// still reloads within the max wait of 10 debounce periods (a reload
	// may catch a half-written file and keep the last good state, so allow
	// several).
	stopA := make(chan struct{})
	doneA := make(chan struct{})
	go func() {
		defer close(doneA)
		for i := 3; ; i++ {
			select {
			case <-stopA:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if err := os.WriteFile(a, []byte(vsYAML("a", fmt.Sprintf("v%d", i))), 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stopA); <-doneA }()
	select {
	case ev := <-ch:
		if ev.Type != store.Modified {
			t.Fatalf("event %s rev %d, want MODIFIED; errors %v", ev.Type, ev.Revision, s.Errors())
		}
	case <-time.After(3 * time.Second):
		// Without the max wait no reload happens while the writes go on.
		t.Fatal("no reload within 3s while a config file is written every 10ms")
	}
}

// TestEmptiedFile: emptying a file on purpose removes its resources, after a
// grace period that protects against catching a writer mid-rewrite.
func TestEmptiedFile(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	write(t, a, vsYAML("a", "v1"))
	s := openStore(t, dir)
	ch := watch(t, s)
	start := time.Now()
	write(t, a, "")
	expect(t, ch, store.Deleted, config.KindVirtualService, "default", "a")
	if d := time.Since(start); d < emptyGrace-100*time.Millisecond {
		t.Fatalf("resources dropped %v after the file was emptied, want after the %v grace", d, emptyGrace)
	}
	write(t, a, vsYAML("a", "v2"))
	expect(t, ch, store.Added, config.KindVirtualService, "default", "a")
}
