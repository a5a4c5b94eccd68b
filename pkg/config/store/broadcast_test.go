package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/config"
)

func ev(rev int64, name string) Event {
	return Event{Type: Modified, Revision: rev, Resource: &config.Resource{Kind: "VirtualService", Meta: config.Meta{Name: name}}}
}

func recv(t *testing.T, ch <-chan Event, n int) []string {
	t.Helper()
	var out []string
	for range n {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %v", out)
			}
			out = append(out, fmt.Sprintf("%d:%s", e.Revision, e.Resource.Meta.Name))
		case <-time.After(2 * time.Second):
			t.Fatalf("timeout after %v", out)
		}
	}
	return out
}

func recvNone(t *testing.T, ch <-chan Event) {
	t.Helper()
	select {
	case e := <-ch:
		t.Fatalf("unexpected event %d:%s", e.Revision, e.Resource.Meta.Name)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestBroadcasterSubscribe(t *testing.T) {
	history := []Event{ev(3, "a"), ev(4, "b"), ev(4, "c"), ev(5, "d")}
	backlog := func(from, to int64) ([]Event, error) {
		if from < 2 {
			return nil, ErrCompacted
		}
		var out []Event
		for _, e := range history {
			if e.Revision > from && e.Revision <= to {
				out = append(out, e)
			}
		}
		return out, nil
	}
	for _, tc := range []struct {
		name    string
		from    int64
		backlog Backlog
		want    []string
		wantErr error
	}{
		{name: "from now", from: 0, backlog: backlog, want: []string{"6:e", "6:f", "7:g"}},
		{name: "replay all", from: 2, backlog: backlog, want: []string{"3:a", "4:b", "4:c", "5:d", "6:e", "6:f", "7:g"}},
		{name: "replay part", from: 4, backlog: backlog, want: []string{"5:d", "6:e", "6:f", "7:g"}},
		{name: "at head", from: 5, backlog: nil, want: []string{"6:e", "6:f", "7:g"}},
		{name: "future", from: 6, backlog: nil, want: []string{"7:g"}},
		{name: "compacted", from: 1, backlog: backlog, wantErr: ErrCompacted},
		{name: "no backlog", from: 3, backlog: nil, wantErr: ErrCompacted},
		{name: "negative", from: -1, backlog: backlog, wantErr: errors.New("any")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBroadcaster(5)
			defer b.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch, err := b.Subscribe(ctx, tc.from, tc.backlog)
			if tc.wantErr != nil {
				if err == nil || (errors.Is(tc.wantErr, ErrCompacted) && !errors.Is(err, ErrCompacted)) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b.Publish(6, []Event{ev(6, "e"), ev(6, "f")})
			b.Publish(7, []Event{ev(7, "g")})
			got := recv(t, ch, len(tc.want))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			recvNone(t, ch)
		})
	}
}

// A revision committed but not yet published is in the backlog and then
// published again: the watcher must see it once.
func TestBroadcasterDeduplicatesBacklogAndPublish(t *testing.T) {
	b := NewBroadcaster(1)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := b.Subscribe(ctx, 0, func(from, to int64) ([]Event, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	b.Publish(2, []Event{ev(2, "a")})
	// A second subscriber whose backlog already has revision 3.
	ch2, err := b.Subscribe(ctx, 1, func(from, to int64) ([]Event, error) {
		return []Event{ev(2, "a"), ev(3, "b"), ev(3, "c")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Publish(3, []Event{ev(3, "b"), ev(3, "c")})
	b.Publish(4, []Event{ev(4, "d")})
	if got := fmt.Sprint(recv(t, ch, 4)); got != "[2:a 3:b 3:c 4:d]" {
		t.Fatalf("first watcher got %s", got)
	}
	if got := fmt.Sprint(recv(t, ch2, 4)); got != "[2:a 3:b 3:c 4:d]" {
		t.Fatalf("second watcher got %s", got)
	}
	recvNone(t, ch2)
}

func TestBroadcasterSlowReaderAndClose(t *testing.T) {
	b := NewBroadcaster(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := b.Subscribe(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	cancelled, err := b.Subscribe(cctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= n; i++ {
			b.Publish(int64(i), []Event{ev(int64(i), "x")})
		}
	}()
	select {
	case <-done: // Publish never waits for readers.
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a reader that does not read")
	}
	ccancel()
	for range cancelled {
	}
	for i := 1; i <= n; i++ {
		e := <-slow
		if e.Revision != int64(i) {
			t.Fatalf("event %d has revision %d", i, e.Revision)
		}
	}
	b.Close()
	b.Close()
	if _, ok := <-slow; ok {
		t.Fatal("channel open after Close")
	}
	if _, err := b.Subscribe(ctx, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: err = %v, want ErrClosed", err)
	}
}
