// Package tracing is the proxy's distributed tracing: it extracts and
// injects W3C Trace Context (traceparent/tracestate) and B3 (x-b3-* and
// single-header b3) span contexts, decides sampling like Envoy (an incoming
// decision wins, x-envoy-force-trace / x-client-trace-id force it, else a
// random percentage), records one span per proxied request and exports
// finished spans in batches to Zipkin (JSON v2 over HTTP) or OTLP (gRPC or
// HTTP, through the OpenTelemetry Go exporters) without ever blocking the
// request path: a full queue drops the span and counts it.
//
// The configuration comes from the HTTP connection manager's `tracing`
// field (see FromHCM and docs/xds-conventions.md). A listener without it
// does no tracing work at all; trace headers are then passed on untouched.
package tracing

import (
	"encoding/hex"
	"net/http"
	"strings"
)

// TraceID is a 128-bit trace id (a 64-bit B3 id is left-padded with zeros).
type TraceID [16]byte

// SpanID is a 64-bit span id.
type SpanID [8]byte

// IsZero reports whether the id is all zeros (invalid).
func (t TraceID) IsZero() bool { return t == TraceID{} }

// IsZero reports whether the id is all zeros (invalid).
func (s SpanID) IsZero() bool { return s == SpanID{} }

func (t TraceID) String() string { return hex.EncodeToString(t[:]) }
func (s SpanID) String() string  { return hex.EncodeToString(s[:]) }

// SpanContext is what travels in request headers.
type SpanContext struct {
	TraceID TraceID
	SpanID  SpanID
	// Sampled is the sampling decision; SampledSet says one was present.
	Sampled, SampledSet bool
	// Debug is B3's x-b3-flags: 1 (forces sampling).
	Debug bool
	// TraceState is W3C tracestate, passed on unchanged.
	TraceState string
}

// Header names (canonical form, for direct map access).
const (
	HeaderTraceparent  = "Traceparent"
	HeaderTracestate   = "Tracestate"
	HeaderB3           = "B3"
	HeaderB3TraceID    = "X-B3-Traceid"
	HeaderB3SpanID     = "X-B3-Spanid"
	HeaderB3ParentSpan = "X-B3-Parentspanid"
	HeaderB3Sampled    = "X-B3-Sampled"
	HeaderB3Flags      = "X-B3-Flags"
	HeaderForceTrace   = "X-Envoy-Force-Trace"
	HeaderClientTrace  = "X-Client-Trace-Id"
)

func first(h http.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Extract reads a span context from h: W3C traceparent first, then B3
// multi-header, then single-header b3. ok is false when none is valid; a
// B3 header carrying only a sampling decision ("b3: 0", x-b3-sampled
// alone) returns ok=false with the decision set.
func Extract(h http.Header) (sc SpanContext, ok bool) {
	if v := first(h, HeaderTraceparent); v != "" {
		if sc, ok = parseTraceparent(v); ok {
			sc.TraceState = strings.Join(h[HeaderTracestate], ",")
			return sc, true
		}
	}
	if tid := first(h, HeaderB3TraceID); tid != "" {
		if sc.TraceID, ok = parseTraceID(tid); ok {
			if sc.SpanID, ok = parseSpanID(first(h, HeaderB3SpanID)); ok {
				sc.Sampled, sc.SampledSet = parseB3Sampled(first(h, HeaderB3Sampled))
				if first(h, HeaderB3Flags) == "1" {
					sc.Debug, sc.Sampled, sc.SampledSet = true, true, true
				}
				return sc, true
			}
		}
		sc = SpanContext{}
	}
	if v := first(h, HeaderB3); v != "" {
		return parseB3Single(v)
	}
	if s := first(h, HeaderB3Sampled); s != "" {
		sc.Sampled, sc.SampledSet = parseB3Sampled(s)
	}
	return sc, false
}

func parseB3Sampled(s string) (sampled, set bool) {
	switch s {
	case "1", "true", "d":
		return true, true
	case "0", "false":
		return false, true
	}
	return false, false
}

// parseTraceparent parses version-traceid-spanid-flags (version 00; higher
// versions are read by the same prefix, as the spec asks).
func parseTraceparent(v string) (SpanContext, bool) {
	var sc SpanContext
	v = strings.TrimSpace(v)
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' || (len(v) > 55 && v[55] != '-') {
		return sc, false
	}
	if v[:2] == "ff" || (v[:2] == "00" && len(v) != 55) {
		return sc, false
	}
	if _, err := hex.Decode(sc.TraceID[:], []byte(v[3:35])); err != nil || sc.TraceID.IsZero() {
		return sc, false
	}
	if _, err := hex.Decode(sc.SpanID[:], []byte(v[36:52])); err != nil || sc.SpanID.IsZero() {
		return sc, false
	}
	var fl [1]byte
	if _, err := hex.Decode(fl[:], []byte(v[53:55])); err != nil {
		return sc, false
	}
	sc.Sampled, sc.SampledSet = fl[0]&1 == 1, true
	return sc, true
}

func parseTraceID(s string) (TraceID, bool) {
	var t TraceID
	switch len(s) {
	case 32:
		if _, err := hex.Decode(t[:], []byte(s)); err != nil {
			return t, false
		}
	case 16:
		if _, err := hex.Decode(t[8:], []byte(s)); err != nil {
			return t, false
		}
	default:
		return t, false
	}
	return t, !t.IsZero()
}

func parseSpanID(s string) (SpanID, bool) {
	var id SpanID
	if len(s) != 16 {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, false
	}
	return id, !id.IsZero()
}

// parseB3Single parses b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]
// or a bare sampling state.
func parseB3Single(v string) (SpanContext, bool) {
	var sc SpanContext
	parts := strings.Split(strings.TrimSpace(v), "-")
	if len(parts) == 1 {
		sc.Sampled, sc.SampledSet = parseB3Sampled(parts[0])
		sc.Debug = parts[0] == "d"
		return sc, false
	}
	var ok bool
	if sc.TraceID, ok = parseTraceID(parts[0]); !ok {
		return SpanContext{}, false
	}
	if sc.SpanID, ok = parseSpanID(parts[1]); !ok {
		return SpanContext{}, false
	}
	if len(parts) > 2 {
		sc.Sampled, sc.SampledSet = parseB3Sampled(parts[2])
		sc.Debug = parts[2] == "d"
	}
	return sc, true
}

// Inject writes sc as the current span into h: traceparent (tracestate kept
// as it is), the B3 multi headers with parent as x-b3-parentspanid, and a
// single b3 header when the request came with one. Other headers, such as
// x-request-id, are untouched.
func Inject(h http.Header, sc SpanContext, parent SpanID) {
	var tp [55]byte
	copy(tp[:], "00-")
	hex.Encode(tp[3:35], sc.TraceID[:])
	tp[35] = '-'
	hex.Encode(tp[36:52], sc.SpanID[:])
	tp[52] = '-'
	tp[53] = '0'
	tp[54] = '0'
	if sc.Sampled {
		tp[54] = '1'
	}
	h[HeaderTraceparent] = []string{string(tp[:])}
	tid, sid := string(tp[3:35]), string(tp[36:52])
	h[HeaderB3TraceID] = []string{tid}
	h[HeaderB3SpanID] = []string{sid}
	if parent.IsZero() {
		delete(h, HeaderB3ParentSpan)
	} else {
		h[HeaderB3ParentSpan] = []string{parent.String()}
	}
	s := "0"
	if sc.Sampled {
		s = "1"
	}
	h[HeaderB3Sampled] = []string{s}
	if _, ok := h[HeaderB3]; ok {
		st := s
		if sc.Debug {
			st = "d"
		}
		b := tid + "-" + sid + "-" + st
		if !parent.IsZero() {
			b += "-" + parent.String()
		}
		h[HeaderB3] = []string{b}
	}
}
