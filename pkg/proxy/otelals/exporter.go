package otelals

import (
	"context"
	"encoding/hex"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/telemetry/logformat"
)

// The format types are package logformat's.
type (
	// Record is what the proxy knows of a request or TCP connection.
	Record = logformat.Record
	// Peer is a telemetry peer (filter state upstream_peer/downstream_peer).
	Peer = logformat.Peer
	// Format is a compiled Envoy format string.
	Format = logformat.Format
)

// Compile compiles an Envoy format string (logformat.Compile).
func Compile(src string) (*Format, error) { return logformat.Compile(src) }

// ErrUnknownOperator is logformat.ErrUnknownOperator.
var ErrUnknownOperator = logformat.ErrUnknownOperator

// Stat names (Envoy's access_logs.open_telemetry_access_log.* counters).
const (
	// StatWritten counts LogRecords the collector accepted.
	StatWritten = "access_logs.open_telemetry_access_log.logs_written"
	// StatDropped counts LogRecords lost: the queue was full (collector
	// slow or down) or their export failed.
	StatDropped = "access_logs.open_telemetry_access_log.logs_dropped"
)

// Envoy's defaults for an OpenTelemetry access logger's buffer.
const (
	DefaultFlushInterval = time.Second
	DefaultBufferBytes   = 16384
)

// Attr is one LogRecord attribute: a key and its format.
type Attr struct {
	Key   string
	Value *Format
}

// Config is one compiled access logger (an OpenTelemetryAccessLogConfig).
// Read-only once built; shared by every request that logs to it.
type Config struct {
	// Addr is the collector's HOST:PORT, Authority its :authority.
	Addr, Authority string
	// LogName is common_config.log_name (the builtin log_name label).
	LogName string
	// Body renders the LogRecord body (nil: none); Attributes its
	// attributes, in order.
	Body       *Format
	Attributes []Attr
	// FilterState are the filter state objects logged as attributes
	// (upstream_peer, downstream_peer; others are absent here).
	FilterState []string
	// Builtin adds Envoy's built-in resource labels (log_name,
	// zone_name, cluster_name, node_name; disable_builtin_labels off);
	// Resource (resource_attributes) follows, replacing equal keys.
	Builtin  bool
	Resource []*commonpb.KeyValue
	// FlushInterval is how long records wait before an export (default
	// 1 s); BufferBytes is the batch size that triggers one sooner
	// (default 16384 bytes of encoded LogRecords).
	FlushInterval time.Duration
	BufferBytes   int
	key           string
}

// Record renders r as an OTLP LogRecord: time (the request start), body,
// attributes, filter state and trace context.
func (c *Config) Record(r *Record) *logspb.LogRecord {
	lr := &logspb.LogRecord{TimeUnixNano: uint64(r.Start.UnixNano())}
	if c.Body != nil {
		lr.Body = &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: c.Body.Render(r)}}
	}
	for _, a := range c.Attributes {
		lr.Attributes = append(lr.Attributes, stringKV(a.Key, a.Value.Render(r)))
	}
	for _, k := range c.FilterState {
		if v := logformat.FilterState(r, k); v != "" {
			lr.Attributes = append(lr.Attributes, stringKV(k, v))
		}
	}
	if b, err := hex.DecodeString(r.TraceID); err == nil && len(b) == 16 {
		lr.TraceId = b
	} else if err == nil && len(b) == 8 {
		lr.TraceId = append(make([]byte, 8), b...)
	}
	if b, err := hex.DecodeString(r.SpanID); err == nil && len(b) == 8 {
		lr.SpanId = b
	}
	return lr
}

func stringKV(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// Options tune an Exporter; zero values take the defaults.
type Options struct {
	// QueueSize bounds the LogRecords waiting per collector (default
	// 4096); when it is full new records are dropped and counted.
	QueueSize int
	// Timeout bounds one Export call (default 5 s).
	Timeout time.Duration
	Log     *slog.Logger
	// Counter supplies the counters by name (StatWritten, StatDropped),
	// e.g. the proxy's stats registry.
	Counter func(name string) *atomic.Uint64
	// Node is what the built-in resource labels say about the proxy.
	Node Node
}

// Node is the proxy as Envoy's node info: id, cluster and locality zone.
type Node struct {
	Name, Cluster, Zone string
}

// resource is the ResourceLogs resource attributes of c.
func (o *Options) resource(c *Config) []*commonpb.KeyValue {
	var out []*commonpb.KeyValue
	if c.Builtin {
		out = append(out, stringKV("log_name", c.LogName), stringKV("zone_name", o.Node.Zone),
			stringKV("cluster_name", o.Node.Cluster), stringKV("node_name", o.Node.Name))
	}
	for _, kv := range c.Resource {
		replaced := false
		for i, x := range out {
			if x.GetKey() == kv.GetKey() {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// Exporter owns one batching queue and gRPC connection per collector
// (and log name) and outlives configuration updates. Safe for concurrent
// use; Log never blocks.
type Exporter struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	queues map[string]*queue
	wg     sync.WaitGroup
	closed bool

	// Written and Dropped are the StatWritten and StatDropped counters.
	Written, Dropped *atomic.Uint64
}

type queue struct {
	cfg  *Config
	ch   chan *logspb.LogRecord
	conn *grpc.ClientConn
	cl   collogspb.LogsServiceClient
	busy atomic.Int32 // records taken from ch but not yet exported
}

// NewExporter returns an exporter; Close flushes and stops it.
func NewExporter(o Options) *Exporter {
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Counter == nil {
		m := map[string]*atomic.Uint64{StatWritten: new(atomic.Uint64), StatDropped: new(atomic.Uint64)}
		o.Counter = func(n string) *atomic.Uint64 { return m[n] }
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Exporter{opts: o, ctx: ctx, cancel: cancel, queues: map[string]*queue{},
		Written: o.Counter(StatWritten), Dropped: o.Counter(StatDropped)}
}

// Log renders r for c and queues it without blocking: dropped (and
// counted) when the queue is full or the exporter closed. A nil exporter
// or config is a no-op.
func (e *Exporter) Log(c *Config, r *Record) {
	if e == nil || c == nil {
		return
	}
	q := e.queue(c)
	if q == nil {
		e.Dropped.Add(1)
		return
	}
	select {
	case q.ch <- c.Record(r):
	default:
		e.Dropped.Add(1)
	}
}

func (e *Exporter) queue(c *Config) *queue {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	if q := e.queues[c.key]; q != nil {
		return q
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if c.Authority != "" {
		opts = append(opts, grpc.WithAuthority(c.Authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+c.Addr, opts...)
	if err != nil {
		e.opts.Log.Warn("otel access log collector", "addr", c.Addr, "err", err)
		return nil
	}
	q := &queue{cfg: c, ch: make(chan *logspb.LogRecord, e.opts.QueueSize), conn: conn, cl: collogspb.NewLogsServiceClient(conn)}
	e.queues[c.key] = q
	e.wg.Add(1)
	go e.run(q)
	return q
}

func (e *Exporter) run(q *queue) {
	defer e.wg.Done()
	defer q.conn.Close()
	c := q.cfg
	interval, limit := c.FlushInterval, c.BufferBytes
	if interval <= 0 {
		interval = DefaultFlushInterval
	}
	if limit <= 0 {
		limit = DefaultBufferBytes
	}
	res := &resourcepb.Resource{Attributes: e.opts.resource(c)}
	var batch []*logspb.LogRecord
	size := 0
	tick := time.NewTicker(interval)
	defer tick.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		req := &collogspb.ExportLogsServiceRequest{ResourceLogs: []*logspb.ResourceLogs{{
			Resource:  res,
			ScopeLogs: []*logspb.ScopeLogs{{LogRecords: batch}},
		}}}
		ctx, cancel := context.WithTimeout(context.Background(), e.opts.Timeout)
		resp, err := q.cl.Export(ctx, req)
		cancel()
		n := uint64(len(batch))
		switch {
		case err != nil:
			e.Dropped.Add(n)
			e.opts.Log.Debug("otel access log export failed", "collector", c.Addr, "records", n, "err", err)
		default:
			rejected := uint64(max(resp.GetPartialSuccess().GetRejectedLogRecords(), 0))
			e.Written.Add(n - min(rejected, n))
			e.Dropped.Add(min(rejected, n))
		}
		q.busy.Add(-int32(len(batch)))
		batch, size = nil, 0
	}
	take := func(lr *logspb.LogRecord) {
		q.busy.Add(1)
		batch = append(batch, lr)
		if size += proto.Size(lr); size >= limit {
			flush()
		}
	}
	for {
		select {
		case lr := <-q.ch:
			take(lr)
		case <-tick.C:
			flush()
		case <-e.ctx.Done():
			for {
				select {
				case lr := <-q.ch:
					take(lr)
				default:
					flush()
					return
				}
			}
		}
	}
}

// Flush waits until every queued record has been exported (or dropped),
// or ctx ends; records wait for their flush interval as usual.
func (e *Exporter) Flush(ctx context.Context) error {
	for {
		e.mu.Lock()
		n := 0
		for _, q := range e.queues {
			n += len(q.ch) + int(q.busy.Load())
		}
		e.mu.Unlock()
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

// Close exports what is queued and stops the exporter; idempotent.
func (e *Exporter) Close() error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.opts.Timeout + time.Second):
	}
	return nil
}
