package tracing

import (
	"encoding/binary"
	"net/http"
	"time"
)

// Kind is a span's role.
type Kind int

// Span kinds: an inbound request is a SERVER span, an outbound one CLIENT.
const (
	Server Kind = iota
	Client
)

func (k Kind) String() string {
	if k == Client {
		return "CLIENT"
	}
	return "SERVER"
}

// Provider is the exporter protocol.
type Provider int

// Providers.
const (
	Zipkin   Provider = iota // JSON v2 over HTTP POST
	OTLPGRPC                 // OTLP over gRPC
	OTLPHTTP                 // OTLP protobuf over HTTP POST
)

// CustomTag is a tag added to every span: a literal, a request header or
// an environment variable (resolved when the config is built), with a
// default for missing values.
type CustomTag struct {
	Name    string
	Literal string
	Header  string // canonical header name; empty if not a header tag
	Default string
}

// Config is one listener's compiled tracing configuration. It is
// immutable; a new xDS update builds a new one.
type Config struct {
	Provider Provider
	// Addr is the collector's HOST:PORT; Path the HTTP path (Zipkin
	// "/api/v2/spans", OTLP/HTTP "/v1/traces"); Host the Host header.
	Addr, Path, Host string
	// ServiceName is the local service reported in spans (Istio:
	// APP.NAMESPACE).
	ServiceName string
	// SamplePerMillion is the random sampling rate (percent × 10 000):
	// Istio's default 1 % is 10 000.
	SamplePerMillion uint32
	// ForcePerMillion applies to requests with x-client-trace-id
	// (Envoy's client_sampling, default 100 %).
	ForcePerMillion uint32
	// NoReport keeps propagating and sampling but exports nothing
	// (Telemetry disableSpanReporting).
	NoReport bool
	Tags     []CustomTag
	// MaxPathTagLength bounds http.url (Envoy's default 256).
	MaxPathTagLength int
}

// key identifies the exporter a config needs.
func (c *Config) key() exporterKey {
	return exporterKey{c.Provider, c.Addr, c.Path, c.Host, c.ServiceName}
}

// Tag is one span tag.
type Tag struct{ Key, Value string }

// Span is one finished (or in-flight) request span.
type Span struct {
	Ctx      SpanContext
	Parent   SpanID
	Kind     Kind
	Name     string
	Start    time.Time
	Duration time.Duration
	// Local and Remote are the proxy's and the peer's IP:PORT, if known.
	Local, Remote string
	// Service is the local service name (used unless the config names one).
	Service string
	Tags    []Tag
	Error   bool
	cfg     *Config
}

// Config returns the configuration the span was started with.
func (s *Span) Config() *Config { return s.cfg }

// Tag appends a tag (empty values are skipped).
func (s *Span) Tag(k, v string) {
	if v != "" {
		s.Tags = append(s.Tags, Tag{k, v})
	}
}

// Rand supplies random 64-bit numbers (ids and sampling); it must be safe
// for concurrent use (lb.Rand is).
type Rand interface{ Uint64() uint64 }

// Start begins a span of kind for the request headers h under cfg: it
// extracts the parent, decides sampling, and rewrites h's trace headers to
// the new span's context so the request forwarded upstream carries it.
// It returns nil (after still propagating the decision) when the request
// is not sampled or cfg reports nothing.
func Start(cfg *Config, h http.Header, kind Kind, rnd Rand, now time.Time) *Span {
	parent, ok := Extract(h)
	sc := SpanContext{SampledSet: true, TraceState: parent.TraceState, Debug: parent.Debug}
	switch {
	case parent.SampledSet:
		sc.Sampled = parent.Sampled
	case first(h, HeaderForceTrace) != "":
		sc.Sampled = true
	case first(h, HeaderClientTrace) != "":
		sc.Sampled = rnd.Uint64()%1_000_000 < uint64(cfg.ForcePerMillion)
	default:
		sc.Sampled = cfg.SamplePerMillion > 0 && rnd.Uint64()%1_000_000 < uint64(cfg.SamplePerMillion)
	}
	if ok {
		sc.TraceID = parent.TraceID
	} else {
		binary.BigEndian.PutUint64(sc.TraceID[:8], rnd.Uint64())
		binary.BigEndian.PutUint64(sc.TraceID[8:], rnd.Uint64()|1)
		if !parent.SampledSet && first(h, HeaderClientTrace) != "" {
			// x-client-trace-id names the trace when it is a valid id.
			if t, valid := parseTraceID(first(h, HeaderClientTrace)); valid {
				sc.TraceID = t
			}
		}
	}
	binary.BigEndian.PutUint64(sc.SpanID[:], rnd.Uint64()|1)
	var pid SpanID
	if ok {
		pid = parent.SpanID
	}
	Inject(h, sc, pid)
	if !sc.Sampled || cfg.NoReport {
		return nil
	}
	return &Span{Ctx: sc, Parent: pid, Kind: kind, Start: now, cfg: cfg}
}
