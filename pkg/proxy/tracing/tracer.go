package tracing

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Exporter sends a batch of finished spans. Export is called serially per
// exporter, never on the request path.
type Exporter interface {
	Export(ctx context.Context, spans []*Span) error
	Shutdown(ctx context.Context) error
}

type exporterKey struct {
	p                Provider
	addr, path, host string
	service          string
}

// Options tune a Tracer; zero values take the defaults.
type Options struct {
	// QueueSize bounds spans waiting per exporter (default 4096); when
	// full, new spans are dropped and counted.
	QueueSize int
	// BatchSize is the most spans per export call (default 512).
	BatchSize int
	// FlushInterval is how long a partial batch waits (default 1s).
	FlushInterval time.Duration
	// Timeout bounds one export call (default 5s).
	Timeout time.Duration
	Log     *slog.Logger
	// Counter, when set, supplies the counters by name
	// ("tracing.spans_exported", "tracing.spans_dropped",
	// "tracing.spans_failed"), e.g. the proxy's stats registry.
	Counter func(name string) *atomic.Uint64
	// NewExporter overrides exporter construction (tests).
	NewExporter func(ctx context.Context, cfg *Config) (Exporter, error)
}

// Tracer owns the exporters (one batching queue per collector) and
// outlives configuration updates. Safe for concurrent use.
type Tracer struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	queues map[exporterKey]*queue
	wg     sync.WaitGroup
	closed bool

	// Counters: spans exported, dropped (queue full) and failed to export.
	Exported, Dropped, Failed *atomic.Uint64
}

type queue struct {
	ch  chan *Span
	exp Exporter
}

// NewTracer returns a tracer; Close flushes and stops it.
func NewTracer(opts Options) *Tracer {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 4096
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 512
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.NewExporter == nil {
		opts.NewExporter = NewExporter
	}
	if opts.Counter == nil {
		m := map[string]*atomic.Uint64{}
		opts.Counter = func(n string) *atomic.Uint64 {
			if m[n] == nil {
				m[n] = new(atomic.Uint64)
			}
			return m[n]
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Tracer{opts: opts, ctx: ctx, cancel: cancel, queues: map[exporterKey]*queue{},
		Exported: opts.Counter("tracing.spans_exported"), Dropped: opts.Counter("tracing.spans_dropped"),
		Failed: opts.Counter("tracing.spans_failed")}
}

// Finish ends s now and queues it for export without blocking; it drops
// the span (counted in Dropped) when the queue is full or the tracer is
// closed. A nil tracer or span is a no-op.
func (t *Tracer) Finish(s *Span, end time.Time) {
	if t == nil || s == nil {
		return
	}
	s.Duration = end.Sub(s.Start)
	q := t.queue(s.cfg)
	if q == nil {
		t.Dropped.Add(1)
		return
	}
	select {
	case q.ch <- s:
	default:
		t.Dropped.Add(1)
	}
}

func (t *Tracer) queue(cfg *Config) *queue {
	k := cfg.key()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	if q := t.queues[k]; q != nil {
		return q
	}
	exp, err := t.opts.NewExporter(t.ctx, cfg)
	if err != nil {
		t.opts.Log.Warn("tracing exporter", "collector", cfg.Addr, "err", err)
		return nil
	}
	q := &queue{ch: make(chan *Span, t.opts.QueueSize), exp: exp}
	t.queues[k] = q
	t.wg.Add(1)
	go t.run(q, cfg.Addr)
	return q
}

func (t *Tracer) run(q *queue, addr string) {
	defer t.wg.Done()
	batch := make([]*Span, 0, t.opts.BatchSize)
	tick := time.NewTicker(t.opts.FlushInterval)
	defer tick.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
		err := q.exp.Export(ctx, batch)
		cancel()
		if err != nil {
			t.Failed.Add(uint64(len(batch)))
			t.opts.Log.Debug("tracing export failed", "collector", addr, "spans", len(batch), "err", err)
		} else {
			t.Exported.Add(uint64(len(batch)))
		}
		batch = make([]*Span, 0, t.opts.BatchSize)
	}
	for {
		select {
		case s := <-q.ch:
			batch = append(batch, s)
			if len(batch) >= t.opts.BatchSize {
				flush()
			}
		case <-tick.C:
			flush()
		case <-t.ctx.Done():
			for {
				select {
				case s := <-q.ch:
					batch = append(batch, s)
					if len(batch) >= t.opts.BatchSize {
						flush()
					}
				default:
					flush()
					ctx, cancel := context.WithTimeout(context.Background(), t.opts.Timeout)
					_ = q.exp.Shutdown(ctx)
					cancel()
					return
				}
			}
		}
	}
}

// Flush exports what is queued now (tests and shutdown): it waits until
// every queue is empty or ctx ends.
func (t *Tracer) Flush(ctx context.Context) error {
	for {
		t.mu.Lock()
		n := 0
		for _, q := range t.queues {
			n += len(q.ch)
		}
		t.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close exports the queued spans and stops the exporters; idempotent.
func (t *Tracer) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(t.opts.Timeout + time.Second):
		return errors.New("tracing: exporters did not stop in time")
	}
}
