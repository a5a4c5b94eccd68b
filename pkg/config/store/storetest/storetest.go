// Package storetest is a conformance suite for writable store.Store
// implementations: CRUD, namespaces, kinds, generation semantics, atomic
// multi-resource apply, optimistic concurrency and watch ordering/replay.
// Implementations call Run from their tests.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
)

// NewStore returns a fresh, empty store; the suite closes it.
type NewStore func(t *testing.T) store.Store

// Options describe what a store cannot promise.
type Options struct {
	// PerObjectVersions: resourceVersions are per object, not the store
	// revision (the Kubernetes store: the API server assigns them). The
	// checks that a resourceVersion equals the store revision, that one
	// Apply gives every resource the same one, and that a watch can
	// start from a resourceVersion are skipped; everything else holds.
	PerObjectVersions bool
}

// Run runs every conformance test against stores made by newStore.
func Run(t *testing.T, newStore NewStore) { RunWith(t, newStore, Options{}) }

// RunWith is Run for a store with the limits o declares.
func RunWith(t *testing.T, newStore NewStore, o Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, o Options)
	}{
		{"CreateGetListUpdateDelete", testCRUD},
		{"ApplyModes", testModes},
		{"Namespaces", testNamespaces},
		{"KindFilter", testKinds},
		{"Generation", testGeneration},
		{"ReturnsCopies", testCopies},
		{"InvalidInput", testInvalid},
		{"AtomicApply", testAtomic},
		{"DeletePrecondition", testDeletePrecondition},
		{"ConcurrentConflict", testConcurrentConflict},
		{"WatchOrderSlowReader", testWatchOrder},
		{"WatchReplay", testWatchReplay},
		{"WatchFromNow", testWatchFromNow},
		{"WatchCancel", testWatchCancel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s, o)
		})
	}
}

// VS returns a VirtualService namespace/name with the given hosts.
func VS(namespace, name string, hosts ...string) *config.Resource {
	return &config.Resource{
		APIVersion: "networking.istio.io/v1",
		Kind:       config.KindVirtualService,
		Meta:       config.Meta{Namespace: namespace, Name: name},
		Spec:       &networking.VirtualService{Hosts: hosts},
	}
}

// DR returns a DestinationRule namespace/name for host.
func DR(namespace, name, host string) *config.Resource {
	return &config.Resource{
		APIVersion: "networking.istio.io/v1",
		Kind:       config.KindDestinationRule,
		Meta:       config.Meta{Namespace: namespace, Name: name},
		Spec:       &networking.DestinationRule{Host: host},
	}
}

func apply(t *testing.T, s store.Store, rs ...*config.Resource) []*config.Resource {
	t.Helper()
	out, err := s.Apply(context.Background(), store.Upsert, rs)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(out) != len(rs) {
		t.Fatalf("Apply returned %d resources, want %d", len(out), len(rs))
	}
	return out
}

func rv(t *testing.T, r *config.Resource) int64 {
	t.Helper()
	n, err := strconv.ParseInt(r.Meta.ResourceVersion, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("%s: resourceVersion %q is not a positive decimal", r.Key(), r.Meta.ResourceVersion)
	}
	return n
}

func specDiff(want, got *config.Resource) string {
	return cmp.Diff(want.Spec, got.Spec, protocmp.Transform())
}

func names(rs []*config.Resource) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Kind + ":" + r.Meta.Namespace + "/" + r.Meta.Name
	}
	return out
}

func testCRUD(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	rev0 := s.Revision()
	in := VS("default", "reviews", "reviews")
	created := apply(t, s, in)[0]
	r1 := rv(t, created)
	if !o.PerObjectVersions && (r1 <= rev0 || s.Revision() != r1) {
		t.Fatalf("resourceVersion %d, store revision %d, before %d: want new revision == store revision > before", r1, s.Revision(), rev0)
	}
	if created.Meta.Generation != 1 || created.Meta.CreationTimestamp.IsZero() {
		t.Fatalf("created meta = %+v, want generation 1 and a creation timestamp", created.Meta)
	}
	got, err := s.Get(ctx, in.Key())
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if d := specDiff(in, got); d != "" {
		t.Fatalf("Get spec mismatch (-want +got):\n%s", d)
	}
	if got.Meta.ResourceVersion != created.Meta.ResourceVersion || !got.Meta.CreationTimestamp.Equal(created.Meta.CreationTimestamp) {
		t.Fatalf("Get meta = %+v, want %+v", got.Meta, created.Meta)
	}
	list, lrev, err := s.List(ctx, config.KindVirtualService, "")
	if err != nil || len(list) != 1 || !o.PerObjectVersions && lrev != r1 || lrev != s.Revision() {
		t.Fatalf("List = %v, rev %d, err %v; want 1 item at revision %d", names(list), lrev, err, r1)
	}

	upd := VS("default", "reviews", "reviews", "reviews.example.com")
	upd.Meta.ResourceVersion = created.Meta.ResourceVersion
	updated := apply(t, s, upd)[0]
	if rv(t, updated) <= r1 {
		t.Fatalf("update resourceVersion %s not after %d", updated.Meta.ResourceVersion, r1)
	}
	got, err = s.Get(ctx, in.Key())
	if err != nil {
		t.Fatalf("Get after update: %v", err)
	}
	if d := specDiff(upd, got); d != "" {
		t.Fatalf("Get after update (-want +got):\n%s", d)
	}

	del, err := s.Delete(ctx, in.Key(), "")
	if err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if !o.PerObjectVersions && rv(t, del) <= rv(t, updated) {
		t.Fatalf("deleted resource carries resourceVersion %s, want the deleting revision", del.Meta.ResourceVersion)
	}
	if _, err := s.Get(ctx, in.Key()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after delete: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Delete(ctx, in.Key(), ""); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete: err = %v, want ErrNotFound", err)
	}
	list, _, err = s.List(ctx, "", "")
	if err != nil || len(list) != 0 {
		t.Fatalf("List after delete = %v, %v; want empty", names(list), err)
	}
}

func testModes(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	if _, err := s.Apply(ctx, store.UpdateOnly, []*config.Resource{VS("default", "a", "a")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateOnly of missing: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Apply(ctx, store.CreateOnly, []*config.Resource{VS("default", "a", "a")}); err != nil {
		t.Fatalf("CreateOnly of new: %v", err)
	}
	if _, err := s.Apply(ctx, store.CreateOnly, []*config.Resource{VS("default", "a", "b")}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateOnly of existing: err = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.Apply(ctx, store.UpdateOnly, []*config.Resource{VS("default", "a", "c")}); err != nil {
		t.Fatalf("UpdateOnly of existing: %v", err)
	}
	got, err := s.Get(ctx, config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if h := got.Spec.(*networking.VirtualService).GetHosts(); len(h) != 1 || h[0] != "c" {
		t.Fatalf("hosts = %v, want [c]", h)
	}
	// A resourceVersion on a resource that does not exist is a conflict.
	bad := VS("default", "ghost", "g")
	bad.Meta.ResourceVersion = "1"
	if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{bad}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Upsert with resourceVersion of missing resource: err = %v, want ErrConflict", err)
	}
}

func testNamespaces(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	apply(t, s, VS("ns2", "a", "x"), VS("ns1", "a", "y"), VS("ns1", "b", "z"))
	// An empty namespace means "default".
	apply(t, s, VS("", "d", "d"))
	for _, tc := range []struct {
		ns   string
		want []string
	}{
		{"ns1", []string{"VirtualService:ns1/a", "VirtualService:ns1/b"}},
		{"ns2", []string{"VirtualService:ns2/a"}},
		{"default", []string{"VirtualService:default/d"}},
		{"nope", []string{}},
		{"", []string{"VirtualService:default/d", "VirtualService:ns1/a", "VirtualService:ns1/b", "VirtualService:ns2/a"}},
	} {
		for _, kind := range []string{config.KindVirtualService, ""} {
			got, _, err := s.List(ctx, kind, tc.ns)
			if err != nil {
				t.Fatalf("List(%q, %q): %v", kind, tc.ns, err)
			}
			if d := cmp.Diff(tc.want, names(got)); d != "" {
				t.Errorf("List(%q, %q) (-want +got):\n%s", kind, tc.ns, d)
			}
		}
	}
	a1, err := s.Get(ctx, config.Key{Kind: config.KindVirtualService, Namespace: "ns1", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if h := a1.Spec.(*networking.VirtualService).GetHosts(); len(h) != 1 || h[0] != "y" {
		t.Fatalf("ns1/a hosts = %v, want [y]", h)
	}
	if _, err := s.Get(ctx, config.Key{Kind: config.KindVirtualService, Namespace: "ns3", Name: "a"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get in other namespace: err = %v, want ErrNotFound", err)
	}
}

func testKinds(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	apply(t, s, DR("default", "r", "r"), VS("default", "r", "r"), VS("default", "a", "a"))
	for _, tc := range []struct {
		kind string
		want []string
	}{
		{config.KindVirtualService, []string{"VirtualService:default/a", "VirtualService:default/r"}},
		{config.KindDestinationRule, []string{"DestinationRule:default/r"}},
		{config.KindGateway, []string{}},
		{"", []string{"VirtualService:default/a", "DestinationRule:default/r", "VirtualService:default/r"}},
	} {
		got, _, err := s.List(ctx, tc.kind, "")
		if err != nil {
			t.Fatalf("List(%q): %v", tc.kind, err)
		}
		if d := cmp.Diff(tc.want, names(got)); d != "" {
			t.Errorf("List(%q) (-want +got):\n%s", tc.kind, d)
		}
	}
	dr, err := s.Get(ctx, config.Key{Kind: config.KindDestinationRule, Namespace: "default", Name: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dr.Spec.(*networking.DestinationRule); !ok {
		t.Fatalf("DestinationRule spec has type %T", dr.Spec)
	}
}

func testGeneration(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	c := apply(t, s, VS("default", "g", "a"))[0]
	steps := []struct {
		name    string
		r       *config.Resource
		wantGen int64
		wantNew bool // a new resourceVersion
	}{
		{"same spec", VS("default", "g", "a"), 1, false},
		{"labels only", func() *config.Resource {
			r := VS("default", "g", "a")
			r.Meta.Labels = map[string]string{"l": "1"}
			return r
		}(), 1, true},
		{"spec change", VS("default", "g", "b"), 2, true},
		{"spec change again", VS("default", "g", "c"), 3, true},
		{"spec unchanged", VS("default", "g", "c"), 3, false},
	}
	prev := c
	for _, st := range steps {
		got := apply(t, s, st.r)[0]
		if got.Meta.Generation != st.wantGen {
			t.Errorf("%s: generation = %d, want %d", st.name, got.Meta.Generation, st.wantGen)
		}
		if isNew := got.Meta.ResourceVersion != prev.Meta.ResourceVersion; isNew != st.wantNew {
			t.Errorf("%s: resourceVersion %s -> %s, want new=%v", st.name, prev.Meta.ResourceVersion, got.Meta.ResourceVersion, st.wantNew)
		}
		if !got.Meta.CreationTimestamp.Equal(c.Meta.CreationTimestamp) {
			t.Errorf("%s: creationTimestamp changed from %v to %v", st.name, c.Meta.CreationTimestamp, got.Meta.CreationTimestamp)
		}
		prev = got
	}
	got, err := s.Get(ctx, c.Key())
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta.Generation != 3 || got.Meta.Labels["l"] != "" {
		t.Fatalf("final meta = %+v, want generation 3 and no labels", got.Meta)
	}
}

func testCopies(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	in := VS("default", "c", "a")
	out := apply(t, s, in)[0]
	in.Spec.(*networking.VirtualService).Hosts[0] = "mutated-in"
	out.Spec.(*networking.VirtualService).Hosts[0] = "mutated-out"
	got, err := s.Get(ctx, out.Key())
	if err != nil {
		t.Fatal(err)
	}
	got.Spec.(*networking.VirtualService).Hosts[0] = "mutated-get"
	again, err := s.Get(ctx, out.Key())
	if err != nil {
		t.Fatal(err)
	}
	if h := again.Spec.(*networking.VirtualService).GetHosts(); h[0] != "a" {
		t.Fatalf("stored hosts = %v, want [a]: the store shares memory with callers", h)
	}
}

func testInvalid(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		rs   []*config.Resource
	}{
		{"nil resource", []*config.Resource{nil}},
		{"unknown kind", []*config.Resource{{Kind: "Nope", Meta: config.Meta{Name: "x"}}}},
		{"no name", []*config.Resource{VS("default", "", "a")}},
		{"duplicate in one apply", []*config.Resource{VS("default", "d", "a"), VS("default", "d", "b")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Apply(ctx, store.Upsert, tc.rs); err == nil {
				t.Fatal("Apply succeeded, want an error")
			}
		})
	}
	if list, _, err := s.List(ctx, "", ""); err != nil || len(list) != 0 {
		t.Fatalf("after invalid applies List = %v, %v; want empty", names(list), err)
	}
}

func testAtomic(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	a := apply(t, s, VS("default", "a", "a"))[0]
	rev := s.Revision()
	stale := VS("default", "a", "a2")
	stale.Meta.ResourceVersion = strconv.FormatInt(rv(t, a)+100, 10)
	_, err := s.Apply(ctx, store.Upsert, []*config.Resource{VS("default", "b", "b"), DR("default", "c", "c"), stale})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Apply with a stale resourceVersion: err = %v, want ErrConflict", err)
	}
	for _, want := range []string{"default/a", a.Meta.ResourceVersion, stale.Meta.ResourceVersion} {
		if !contains(err.Error(), want) {
			t.Errorf("conflict message %q does not mention %q", err, want)
		}
	}
	if s.Revision() != rev {
		t.Fatalf("revision moved from %d to %d on a failed apply", rev, s.Revision())
	}
	list, _, err := s.List(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"VirtualService:default/a"}, names(list)); d != "" {
		t.Fatalf("failed apply left resources behind (-want +got):\n%s", d)
	}
	if d := specDiff(a, list[0]); d != "" {
		t.Fatalf("failed apply changed default/a:\n%s", d)
	}
	if o.PerObjectVersions {
		return
	}
	// One transaction, one revision for every resource.
	out := apply(t, s, VS("default", "b", "b"), DR("default", "c", "c"), VS("default", "a", "a3"))
	for _, r := range out[1:] {
		if r.Meta.ResourceVersion != out[0].Meta.ResourceVersion {
			t.Fatalf("resources of one Apply have resourceVersions %s and %s", out[0].Meta.ResourceVersion, r.Meta.ResourceVersion)
		}
	}
	if got := s.Revision(); got != rv(t, out[0]) {
		t.Fatalf("store revision %d, want %d", got, rv(t, out[0]))
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func testDeletePrecondition(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	a := apply(t, s, VS("default", "a", "a"))[0]
	apply(t, s, VS("default", "a", "b"))
	if _, err := s.Delete(ctx, a.Key(), a.Meta.ResourceVersion); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Delete with stale resourceVersion: err = %v, want ErrConflict", err)
	}
	cur, err := s.Get(ctx, a.Key())
	if err != nil {
		t.Fatalf("resource gone after a failed delete: %v", err)
	}
	if _, err := s.Delete(ctx, a.Key(), cur.Meta.ResourceVersion); err != nil {
		t.Fatalf("Delete with current resourceVersion: %v", err)
	}
}

func testConcurrentConflict(t *testing.T, s store.Store, o Options) {
	ctx := context.Background()
	base := apply(t, s, VS("default", "race", "v0"))[0]
	for round := range 20 {
		cur, err := s.Get(ctx, base.Key())
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := VS("default", "race", fmt.Sprintf("r%d-w%d", round, i))
				r.Meta.ResourceVersion = cur.Meta.ResourceVersion
				<-start
				_, errs[i] = s.Apply(ctx, store.Upsert, []*config.Resource{r})
			}()
		}
		close(start)
		wg.Wait()
		ok, conflicts := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrConflict):
				conflicts++
			default:
				t.Fatalf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 || conflicts != 1 {
			t.Fatalf("round %d: %d succeeded and %d conflicted, want exactly 1 and 1 (errors %v)", round, ok, conflicts, errs)
		}
	}
}

func next(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed early")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event within 5s")
	}
	return store.Event{}
}

func testWatchOrder(t *testing.T, s store.Store, o Options) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	const n = 500
	done := make(chan error, 1)
	go func() {
		// The writer never waits for the reader.
		for i := range n {
			r := VS("default", fmt.Sprintf("w%d", i%7), strconv.Itoa(i))
			if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{r}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	var last int64
	for i := range n {
		if i == 10 {
			// A reader that stops reading until every write is done.
			if err := <-done; err != nil {
				t.Fatalf("writer: %v", err)
			}
		}
		ev := next(t, ch)
		if ev.Revision <= last {
			t.Fatalf("event %d: revision %d after %d", i, ev.Revision, last)
		}
		last = ev.Revision
		wantType := store.Modified
		if i < 7 {
			wantType = store.Added
		}
		hosts := ev.Resource.Spec.(*networking.VirtualService).GetHosts()
		if ev.Type != wantType || len(hosts) != 1 || hosts[0] != strconv.Itoa(i) {
			t.Fatalf("event %d = %s %s hosts %v, want %s with hosts [%d]", i, ev.Type, ev.Resource.Key(), hosts, wantType, i)
		}
		if !o.PerObjectVersions && ev.Resource.Meta.ResourceVersion != strconv.FormatInt(ev.Revision, 10) {
			t.Fatalf("event %d: resourceVersion %s, revision %d", i, ev.Resource.Meta.ResourceVersion, ev.Revision)
		}
	}
	select {
	case ev := <-ch:
		t.Fatalf("unexpected extra event %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

func testWatchReplay(t *testing.T, s store.Store, o Options) {
	if o.PerObjectVersions {
		t.Skip("watches start from store revisions, which resourceVersions are not")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := apply(t, s, VS("default", "a", "1"))[0]
	apply(t, s, VS("default", "a", "2"), DR("default", "b", "b"))
	if _, err := s.Delete(ctx, first.Key(), ""); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, rv(t, first))
	if err != nil {
		t.Fatalf("Watch(%d): %v", rv(t, first), err)
	}
	want := []string{"MODIFIED VirtualService default/a", "ADDED DestinationRule default/b", "DELETED VirtualService default/a"}
	var got []string
	var revs []int64
	for range want {
		ev := next(t, ch)
		got = append(got, string(ev.Type)+" "+ev.Resource.Key().String())
		revs = append(revs, ev.Revision)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("replayed events (-want +got):\n%s", d)
	}
	if revs[0] != revs[1] || revs[2] <= revs[1] || revs[2] != s.Revision() {
		t.Fatalf("replayed revisions %v, store revision %d", revs, s.Revision())
	}
	// Live events follow the replay without a gap.
	apply(t, s, VS("default", "c", "c"))
	if ev := next(t, ch); ev.Type != store.Added || ev.Resource.Meta.Name != "c" {
		t.Fatalf("live event after replay = %s %s", ev.Type, ev.Resource.Key())
	}
	if _, err := s.Watch(ctx, -1); err == nil {
		t.Fatal("Watch(-1) succeeded, want an error")
	}
}

func testWatchFromNow(t *testing.T, s store.Store, o Options) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apply(t, s, VS("default", "old", "old"))
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, VS("default", "new", "new"))
	ev := next(t, ch)
	if ev.Resource.Meta.Name != "new" || ev.Type != store.Added {
		t.Fatalf("first event = %s %s, want ADDED default/new (from now, not history)", ev.Type, ev.Resource.Key())
	}
}

func testWatchCancel(t *testing.T, s store.Store, o Options) {
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, VS("default", "x", "x"))
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed 5s after ctx cancel")
		}
	}
}
