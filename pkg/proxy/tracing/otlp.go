package tracing

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// otlpExporter wraps the OpenTelemetry Go OTLP exporters: spans recorded
// by the proxy become SDK read-only spans with their original ids.
type otlpExporter struct {
	exp sdktrace.SpanExporter
	res map[string]*resource.Resource // by service name; Export is serial
}

func newOTLP(ctx context.Context, cfg *Config) (*otlpExporter, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	if cfg.Provider == OTLPGRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Addr), otlptracegrpc.WithInsecure()}
		exp, err = otlptracegrpc.New(ctx, opts...)
	} else {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(cfg.Addr), otlptracehttp.WithInsecure()}
		if cfg.Path != "" {
			opts = append(opts, otlptracehttp.WithURLPath(cfg.Path))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp exporter %s: %w", cfg.Addr, err)
	}
	return &otlpExporter{exp: exp, res: map[string]*resource.Resource{}}, nil
}

func (o *otlpExporter) Export(ctx context.Context, spans []*Span) error {
	stubs := make(tracetest.SpanStubs, len(spans))
	for i, s := range spans {
		flags := trace.TraceFlags(0)
		if s.Ctx.Sampled {
			flags = trace.FlagsSampled
		}
		ts, _ := trace.ParseTraceState(s.Ctx.TraceState)
		st := tracetest.SpanStub{
			Name: s.Name,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID(s.Ctx.TraceID),
				SpanID: trace.SpanID(s.Ctx.SpanID), TraceFlags: flags, TraceState: ts}),
			SpanKind:  trace.SpanKindServer,
			StartTime: s.Start,
			EndTime:   s.Start.Add(s.Duration),
		}
		if st.Resource = o.res[s.ServiceName()]; st.Resource == nil {
			st.Resource = resource.NewSchemaless(attribute.String("service.name", s.ServiceName()))
			o.res[s.ServiceName()] = st.Resource
		}
		if s.Kind == Client {
			st.SpanKind = trace.SpanKindClient
		}
		if !s.Parent.IsZero() {
			st.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID(s.Ctx.TraceID),
				SpanID: trace.SpanID(s.Parent), TraceFlags: flags, Remote: true})
		}
		st.Attributes = make([]attribute.KeyValue, 0, len(s.Tags)+2)
		for _, t := range s.Tags {
			st.Attributes = append(st.Attributes, attribute.String(t.Key, t.Value))
		}
		if s.Remote != "" {
			st.Attributes = append(st.Attributes, attribute.String("peer.address", s.Remote))
		}
		if s.Error {
			st.Status = sdktrace.Status{Code: codes.Error}
		}
		stubs[i] = st
	}
	if err := o.exp.ExportSpans(ctx, stubs.Snapshots()); err != nil {
		return fmt.Errorf("otlp export: %w", err)
	}
	return nil
}

func (o *otlpExporter) Shutdown(ctx context.Context) error { return o.exp.Shutdown(ctx) }
