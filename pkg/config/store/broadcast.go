package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrClosed is returned by operations on a store (or Broadcaster) after Close.
var ErrClosed = errors.New("store is closed")

// Broadcaster fans events out to watchers inside one process. Each watcher
// gets its own unbounded queue and goroutine, so a slow reader never blocks
// writers and never misses an event; it costs memory instead.
//
// Concurrency contract: Publish must be called serially and in increasing
// revision order (stores call it while holding their write lock, after the
// write is durable). Subscribe and Close are safe to call concurrently with
// everything else. Close is idempotent.
type Broadcaster struct {
	mu     sync.Mutex
	rev    int64 // last published revision
	subs   map[*subscriber]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewBroadcaster returns a Broadcaster whose last published revision is rev
// (the store's revision when it was opened).
func NewBroadcaster(rev int64) *Broadcaster {
	return &Broadcaster{rev: rev, subs: map[*subscriber]struct{}{}}
}

// Backlog returns the events with revision in (from, to], in order, or an
// error (ErrCompacted when from is older than the retained history). It is
// called by Subscribe while no Publish can run.
type Backlog func(from, to int64) ([]Event, error)

type subscriber struct {
	mu     sync.Mutex
	queue  []Event
	last   int64 // highest revision queued; older events are dropped as duplicates
	notify chan struct{}
	done   chan struct{} // closed by Broadcaster.Close or unsubscribe
	once   sync.Once
}

func (s *subscriber) push(evs []Event) {
	s.mu.Lock()
	added := false
	for _, ev := range evs {
		if ev.Revision < s.last {
			continue
		}
		if ev.Revision == s.last && !added {
			// Events of one revision arrive in one batch; a batch whose
			// revision was already queued (from the backlog) is a duplicate.
			continue
		}
		s.queue = append(s.queue, ev)
		s.last = ev.Revision
		added = true
	}
	s.mu.Unlock()
	if added {
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

func (s *subscriber) stop() { s.once.Do(func() { close(s.done) }) }

// Subscribe registers a watcher for every event with revision > from. When
// from is 0 the watch starts at the last published revision ("from now").
// When from is older than the last published revision, backlog supplies the
// missed events (backlog may be nil when the caller knows none exist). The
// returned channel is closed when ctx ends or the Broadcaster is closed.
func (b *Broadcaster) Subscribe(ctx context.Context, from int64, backlog Backlog) (<-chan Event, error) {
	if from < 0 {
		return nil, fmt.Errorf("watch from revision %d: revision must not be negative", from)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if from == 0 {
		from = b.rev
	}
	s := &subscriber{last: from, notify: make(chan struct{}, 1), done: make(chan struct{})}
	if from < b.rev {
		if backlog == nil {
			return nil, fmt.Errorf("watch from revision %d (current %d): %w", from, b.rev, ErrCompacted)
		}
		evs, err := backlog(from, b.rev)
		if err != nil {
			return nil, err
		}
		s.push(evs)
		// Everything up to b.rev is now queued, even revisions that had no
		// events for this watcher.
		s.mu.Lock()
		if s.last < b.rev {
			s.last = b.rev
		}
		s.mu.Unlock()
	}
	b.subs[s] = struct{}{}
	out := make(chan Event)
	b.wg.Add(1)
	go b.run(ctx, s, out)
	return out, nil
}

func (b *Broadcaster) run(ctx context.Context, s *subscriber, out chan<- Event) {
	defer b.wg.Done()
	defer close(out)
	defer func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
	}()
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, ev := range q {
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

// Publish delivers the events of one revision (or several, in order) to every
// watcher and records rev as the last published revision. Events must carry
// revisions <= rev.
func (b *Broadcaster) Publish(rev int64, evs []Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	if rev > b.rev {
		b.rev = rev
	}
	if len(evs) == 0 {
		return
	}
	for s := range b.subs {
		s.push(evs)
	}
}

// Revision returns the last published revision.
func (b *Broadcaster) Revision() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rev
}

// Close ends every watch (their channels are closed) and waits for the
// watcher goroutines to exit. Later Subscribe calls fail with ErrClosed.
func (b *Broadcaster) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.wg.Wait()
		return
	}
	b.closed = true
	for s := range b.subs {
		s.stop()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
