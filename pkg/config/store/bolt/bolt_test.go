package bolt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
	"github.com/weftmesh/weft/pkg/config/store/storetest"
)

const crashRetention = 100

// crashHelperEnv makes the test binary act as the crash-test writer.
const crashHelperEnv = "WEFT_BOLT_CRASH_HELPER_DB"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashHelperEnv); path != "" {
		if err := crashWriter(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func open(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "weft.db"), Options{})
	})
}

func TestReopenKeepsStateAndHistory(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "weft.db")
	s := open(t, path, Options{})
	out, err := s.Apply(ctx, store.Upsert, []*config.Resource{storetest.VS("default", "a", "1")})
	if err != nil {
		t.Fatal(err)
	}
	first := out[0]
	if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{storetest.VS("default", "a", "2")}); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get(ctx, first.Key()); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: err = %v, want ErrClosed", err)
	}

	s = open(t, path, Options{})
	defer s.Close()
	if s.Revision() != rev {
		t.Fatalf("revision after reopen = %d, want %d", s.Revision(), rev)
	}
	got, err := s.Get(ctx, first.Key())
	if err != nil {
		t.Fatal(err)
	}
	if got.Meta.Generation != 2 || !got.Meta.CreationTimestamp.Equal(first.Meta.CreationTimestamp) || got.APIVersion != "networking.istio.io/v1" {
		t.Fatalf("reopened resource = %+v", got)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx, 0+1)
	if err != nil {
		t.Fatal(err)
	}
	ev := <-ch
	if ev.Type != store.Modified || ev.Revision != 2 || ev.Resource.Spec.(*networking.VirtualService).Hosts[0] != "2" {
		t.Fatalf("replayed event after reopen = %+v", ev)
	}
}

func TestSecondOpenFailsWhileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weft.db")
	s := open(t, path, Options{})
	defer s.Close()
	if _, err := Open(path, Options{OpenTimeout: 100 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a locked store succeeded")
	}
}

func TestRetentionCompacts(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "weft.db"), Options{Retention: 5})
	defer s.Close()
	for i := range 12 {
		if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{storetest.VS("default", "a", strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Revision 12; the log keeps 8..12, so a watch must start at >= 7.
	for _, tc := range []struct {
		from    int64
		wantErr bool
		first   int64
	}{
		{from: 1, wantErr: true},
		{from: 6, wantErr: true},
		{from: 7, first: 8},
		{from: 10, first: 11},
	} {
		wctx, cancel := context.WithCancel(ctx)
		ch, err := s.Watch(wctx, tc.from)
		if tc.wantErr {
			if !errors.Is(err, store.ErrCompacted) {
				t.Errorf("Watch(%d): err = %v, want ErrCompacted", tc.from, err)
			}
			cancel()
			continue
		}
		if err != nil {
			t.Fatalf("Watch(%d): %v", tc.from, err)
		}
		if ev := <-ch; ev.Revision != tc.first {
			t.Errorf("Watch(%d): first event at revision %d, want %d", tc.from, ev.Revision, tc.first)
		}
		cancel()
	}
}

// waitGoroutines waits until the number of goroutines is back to at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, want <= %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCloseEndsWatches(t *testing.T) {
	before := runtime.NumGoroutine()
	s := open(t, filepath.Join(t.TempDir(), "weft.db"), Options{})
	for range 3 {
		if _, err := s.Watch(context.Background(), 0); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := s.Watch(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("event after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch channel not closed by Close")
	}
	if _, err := s.Watch(context.Background(), 0); err == nil {
		t.Fatal("Watch after Close succeeded")
	}
	waitGoroutines(t, before)
}

// crashWriter runs in the child process: it applies forever, printing
// "<revision> <i>" after each acknowledged write of counter=i and r-i.
func crashWriter(path string) error {
	// A small retention, so kills also land in log compaction.
	s, err := Open(path, Options{Retention: crashRetention})
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := s.Revision()
	for i := start; ; i++ {
		n := strconv.FormatInt(i, 10)
		out, err := s.Apply(ctx, store.Upsert, []*config.Resource{
			storetest.VS("default", "counter", n),
			storetest.DR("crash", "r-"+n, n),
		})
		if err != nil {
			return err
		}
		if _, err := fmt.Printf("%s %d\n", out[0].Meta.ResourceVersion, i); err != nil {
			return err
		}
	}
}

// TestCrashDurability kills a writer process with SIGKILL at random moments
// and checks that every write it saw acknowledged is in the reopened store.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills processes")
	}
	path := filepath.Join(t.TempDir(), "weft.db")
	ctx := context.Background()
	var total int
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1<<16)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Wait for the first acknowledged write, then kill at a random moment.
		var acked []string
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("round %d: writer exited before its first write", round)
			}
			acked = append(acked, l)
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: no write within 20s", round)
		}
		time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for l := range lines {
			acked = append(acked, l)
		}
		_ = cmd.Wait()

		s, err := Open(path, Options{Retention: crashRetention})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		var lastRev, lastI int64
		for _, l := range acked {
			revS, iS, ok := strings.Cut(l, " ")
			rev, err1 := strconv.ParseInt(revS, 10, 64)
			i, err2 := strconv.ParseInt(iS, 10, 64)
			if !ok || err1 != nil || err2 != nil {
				// The last line may be cut by the kill; it was not acknowledged.
				continue
			}
			lastRev, lastI = rev, i
			if _, err := s.Get(ctx, config.Key{Kind: config.KindDestinationRule, Namespace: "crash", Name: "r-" + iS}); err != nil {
				t.Fatalf("round %d: acknowledged write %d (revision %d) lost: %v", round, i, rev, err)
			}
		}
		if s.Revision() < lastRev {
			t.Fatalf("round %d: store revision %d < last acknowledged %d", round, s.Revision(), lastRev)
		}
		c, err := s.Get(ctx, config.Key{Kind: config.KindVirtualService, Namespace: "default", Name: "counter"})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		got, _ := strconv.ParseInt(c.Spec.(*networking.VirtualService).Hosts[0], 10, 64)
		if got < lastI {
			t.Fatalf("round %d: counter = %d, last acknowledged %d", round, got, lastI)
		}
		// History survives too: the acknowledged revision replays.
		wctx, cancel := context.WithCancel(ctx)
		ch, err := s.Watch(wctx, lastRev-1)
		if err != nil {
			t.Fatalf("round %d: Watch(%d): %v", round, lastRev-1, err)
		}
		if ev := <-ch; ev.Revision != lastRev {
			t.Fatalf("round %d: replay starts at %d, want %d", round, ev.Revision, lastRev)
		}
		cancel()
		// From revision 0 a watch means "from now", so the check needs
		// a revision past retention+1 (a round can end exactly at it).
		if _, err := s.Watch(ctx, s.Revision()-crashRetention-1); !errors.Is(err, store.ErrCompacted) && s.Revision() > crashRetention+1 {
			t.Fatalf("round %d: history beyond the retention was not compacted: %v", round, err)
		}
		reopened := s.Revision()
		// The store is writable again.
		if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{storetest.VS("default", "after-crash", "x")}); err != nil {
			t.Fatalf("round %d: Apply after reopen: %v", round, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		total += len(acked)
		t.Logf("round %d: %d acknowledged writes, last acknowledged revision %d, store revision after kill %d", round, len(acked), lastRev, reopened)
	}
	if total < 5 {
		t.Fatalf("only %d acknowledged writes over 5 rounds; the test proves little", total)
	}
}

// BenchmarkApply measures one durable (fsynced) single-resource write.
func BenchmarkApply(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "weft.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := storetest.VS("default", "r"+strconv.Itoa(i%100), strconv.Itoa(i))
		if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{r}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet measures one read.
func BenchmarkGet(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "weft.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	r := storetest.VS("default", "r", "reviews")
	if _, err := s.Apply(ctx, store.Upsert, []*config.Resource{r}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, r.Key()); err != nil {
			b.Fatal(err)
		}
	}
}
