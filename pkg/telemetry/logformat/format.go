// Package logformat compiles and renders Envoy access log format strings
// (command operators such as %RESPONSE_CODE%, %REQ(:PATH)%, %CEL(...)%)
// against what the proxy knows of a request or TCP connection (Record).
// It has no proxy dependencies, so the control plane (weft analyze) can
// check formats the proxies will compile.
package logformat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/pkg/telemetry/expr"
)

// Peer is a telemetry peer (what Istio's metadata exchange filter state
// upstream_peer / downstream_peer holds); empty fields are omitted.
type Peer struct {
	Workload, Namespace, Cluster, Service, Revision, App, Version string
}

// MarshalJSON renders p as Istio's peer filter state serializes (keys
// workload, namespace, cluster, service, revision, app, version).
func (p *Peer) MarshalJSON() ([]byte, error) {
	m := map[string]string{}
	for _, kv := range [...][2]string{{"workload", p.Workload}, {"namespace", p.Namespace}, {"cluster", p.Cluster},
		{"service", p.Service}, {"revision", p.Revision}, {"app", p.App}, {"version", p.Version}} {
		if kv[1] != "" && kv[1] != "unknown" {
			m[kv[0]] = kv[1]
		}
	}
	return json.Marshal(m)
}

// Record is what the proxy knows of one request (or TCP connection,
// TCP set) when it logs it. Empty strings render as "-".
type Record struct {
	Start    time.Time
	Duration time.Duration
	TCP      bool
	// Request line: method, path with query, protocol (HTTP/1.1, HTTP/2),
	// authority and scheme.
	Method, Path, Protocol, Authority, Scheme string
	// Request and Response headers (nil for TCP).
	Request, Response http.Header
	Code              int
	Flags             string
	Details           string // %RESPONSE_CODE_DETAILS%
	TermDetails       string // %CONNECTION_TERMINATION_DETAILS%
	BytesReceived     int64
	BytesSent         int64
	UpstreamHost      string
	UpstreamCluster   string
	UpstreamLocal     string
	DownstreamLocal   string
	DownstreamRemote  string
	SNI               string // %REQUESTED_SERVER_NAME%
	RouteName         string
	// DownstreamPeerURISAN and UpstreamPeerURISAN are the mTLS peers'
	// SPIFFE IDs.
	DownstreamPeerURISAN, UpstreamPeerURISAN string
	// TraceID and SpanID are hex (the LogRecord's trace context).
	TraceID, SpanID string
	// UpstreamPeer and DownstreamPeer are the metadata exchange's peers
	// (filter state upstream_peer / downstream_peer); nil when unknown.
	UpstreamPeer, DownstreamPeer *Peer
	// Attrs, when set, gives the CEL attributes for %CEL(...)%.
	Attrs func() expr.Attributes
}

// Format is a compiled Envoy substitution format string (text format).
type Format struct {
	src   string
	parts []part
}

type part struct {
	lit string
	op  func(*Record) string // nil: literal
	max int                  // truncation (the :N suffix), 0 none
}

// ErrUnknownOperator is returned for a command operator weft does not
// render.
var ErrUnknownOperator = errors.New("unknown command operator")

// Compile parses an Envoy format string: literal text, %% for a percent
// sign, and the command operators listed in the package README.
func Compile(src string) (*Format, error) {
	f := &Format{src: src}
	var lit strings.Builder
	for i := 0; i < len(src); {
		c := src[i]
		if c != '%' {
			lit.WriteByte(c)
			i++
			continue
		}
		if strings.HasPrefix(src[i:], "%%") {
			lit.WriteByte('%')
			i += 2
			continue
		}
		end := operatorEnd(src, i+1)
		if end < 0 {
			return nil, fmt.Errorf("format %q: unterminated command operator at offset %d", src, i)
		}
		p, err := compileOperator(src[i+1 : end])
		if err != nil {
			return nil, fmt.Errorf("format %q: %w", src, err)
		}
		if lit.Len() > 0 {
			f.parts = append(f.parts, part{lit: lit.String()})
			lit.Reset()
		}
		f.parts = append(f.parts, p)
		i = end + 1
	}
	if lit.Len() > 0 {
		f.parts = append(f.parts, part{lit: lit.String()})
	}
	return f, nil
}

// operatorEnd finds the % closing the operator starting at i (skipping
// parenthesised arguments, which may contain %).
func operatorEnd(s string, i int) int {
	depth := 0
	for ; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case '%':
			if depth <= 0 {
				return i
			}
		}
	}
	return -1
}

// Source is the format string.
func (f *Format) Source() string { return f.src }

// Render formats r.
func (f *Format) Render(r *Record) string {
	if len(f.parts) == 1 && f.parts[0].op == nil {
		return f.parts[0].lit
	}
	var b strings.Builder
	for _, p := range f.parts {
		if p.op == nil {
			b.WriteString(p.lit)
			continue
		}
		v := p.op(r)
		if v == "" {
			v = "-"
		}
		if p.max > 0 && len(v) > p.max {
			v = v[:p.max]
		}
		b.WriteString(v)
	}
	return b.String()
}

func str(f func(*Record) string) func(*Record) string { return f }

func num(f func(*Record) int64) func(*Record) string {
	return func(r *Record) string { return strconv.FormatInt(f(r), 10) }
}

// simple are the operators without arguments.
var simple = map[string]func(*Record) string{
	"START_TIME": func(r *Record) string { return r.Start.UTC().Format("2006-01-02T15:04:05.000Z") },
	"PROTOCOL": func(r *Record) string {
		if r.TCP {
			return ""
		}
		return r.Protocol
	},
	"RESPONSE_CODE":                     num(func(r *Record) int64 { return int64(r.Code) }),
	"RESPONSE_FLAGS":                    str(func(r *Record) string { return r.Flags }),
	"RESPONSE_CODE_DETAILS":             str(func(r *Record) string { return r.Details }),
	"CONNECTION_TERMINATION_DETAILS":    str(func(r *Record) string { return r.TermDetails }),
	"UPSTREAM_TRANSPORT_FAILURE_REASON": str(func(*Record) string { return "" }),
	"BYTES_RECEIVED":                    num(func(r *Record) int64 { return r.BytesReceived }),
	"BYTES_SENT":                        num(func(r *Record) int64 { return r.BytesSent }),
	"DURATION":                          num(func(r *Record) int64 { return r.Duration.Milliseconds() }),
	"UPSTREAM_HOST":                     str(func(r *Record) string { return r.UpstreamHost }),
	"UPSTREAM_CLUSTER":                  str(func(r *Record) string { return r.UpstreamCluster }),
	"UPSTREAM_CLUSTER_RAW":              str(func(r *Record) string { return r.UpstreamCluster }),
	"UPSTREAM_LOCAL_ADDRESS":            str(func(r *Record) string { return r.UpstreamLocal }),
	"DOWNSTREAM_LOCAL_ADDRESS":          str(func(r *Record) string { return r.DownstreamLocal }),
	"DOWNSTREAM_REMOTE_ADDRESS":         str(func(r *Record) string { return r.DownstreamRemote }),
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": func(r *Record) string {
		if h, _, err := net.SplitHostPort(r.DownstreamRemote); err == nil {
			return h
		}
		return r.DownstreamRemote
	},
	"REQUESTED_SERVER_NAME":   str(func(r *Record) string { return r.SNI }),
	"ROUTE_NAME":              str(func(r *Record) string { return r.RouteName }),
	"DOWNSTREAM_PEER_URI_SAN": str(func(r *Record) string { return r.DownstreamPeerURISAN }),
	"UPSTREAM_PEER_URI_SAN":   str(func(r *Record) string { return r.UpstreamPeerURISAN }),
	"TRACE_ID":                str(func(r *Record) string { return r.TraceID }),
	"HOSTNAME": func(*Record) string {
		h, _ := os.Hostname()
		return h
	},
}

// compileOperator compiles one operator (without the % signs), e.g.
// REQ(:PATH):10.
func compileOperator(s string) (part, error) {
	name, arg, rest := s, "", ""
	if i := strings.IndexByte(s, '('); i >= 0 {
		j := strings.LastIndexByte(s, ')')
		if j < i {
			return part{}, fmt.Errorf("command operator %%%s%%: unbalanced parentheses", s)
		}
		name, arg, rest = s[:i], s[i+1:j], s[j+1:]
	}
	p := part{}
	if rest != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(rest, ":"))
		if !strings.HasPrefix(rest, ":") || err != nil || n < 0 {
			return part{}, fmt.Errorf("command operator %%%s%%: want a :LENGTH suffix, got %q", s, rest)
		}
		p.max = n
	}
	if arg == "" && !strings.Contains(s, "(") {
		op, ok := simple[name]
		if !ok {
			return part{}, fmt.Errorf("%w %%%s%%", ErrUnknownOperator, s)
		}
		p.op = op
		return p, nil
	}
	switch name {
	case "START_TIME":
		p.op = simple["START_TIME"] // strftime formats are not supported: the default format
	case "REQ", "RESP", "TRAILER":
		main, alt, _ := strings.Cut(arg, "?")
		main, alt = strings.ToLower(main), strings.ToLower(alt)
		resp := name != "REQ"
		trailer := name == "TRAILER"
		p.op = func(r *Record) string {
			if v := header(r, main, resp, trailer); v != "" || alt == "" {
				return v
			}
			return header(r, alt, resp, trailer)
		}
	case "REQ_WITHOUT_QUERY":
		main, alt, _ := strings.Cut(arg, "?")
		main, alt = strings.ToLower(main), strings.ToLower(alt)
		p.op = func(r *Record) string {
			v := header(r, main, false, false)
			if v == "" && alt != "" {
				v = header(r, alt, false, false)
			}
			v, _, _ = strings.Cut(v, "?")
			return v
		}
	case "ENVIRONMENT":
		p.op = func(*Record) string { return os.Getenv(arg) }
	case "CEL":
		prog, err := expr.Compile(arg)
		if err != nil {
			return part{}, fmt.Errorf("command operator %%CEL(%s)%%: %w", arg, err)
		}
		p.op = func(r *Record) string {
			if r.Attrs == nil {
				return ""
			}
			return prog.Label(r.Attrs(), "")
		}
	case "FILTER_STATE":
		key, _, _ := strings.Cut(arg, ":")
		p.op = func(r *Record) string { return FilterState(r, key) }
	default:
		return part{}, fmt.Errorf("%w %%%s%%", ErrUnknownOperator, s)
	}
	return p, nil
}

// header reads a request (or response/trailer) header; pseudo-headers
// :method, :path, :authority and :scheme come from the request line.
func header(r *Record, name string, resp, trailer bool) string {
	if !resp {
		switch name {
		case ":method":
			return r.Method
		case ":path":
			return r.Path
		case ":authority", "host":
			return r.Authority
		case ":scheme":
			return r.Scheme
		}
		return r.Request.Get(name)
	}
	if trailer {
		return r.Response.Get(http.TrailerPrefix + http.CanonicalHeaderKey(name))
	}
	return r.Response.Get(name)
}

// FilterState renders the peers' filter state as Envoy's
// FILTER_STATE / filter_state_objects_to_log do (JSON); "" when absent.
func FilterState(r *Record, key string) string {
	var p *Peer
	switch key {
	case "upstream_peer", "wasm.upstream_peer":
		p = r.UpstreamPeer
	case "downstream_peer", "wasm.downstream_peer":
		p = r.DownstreamPeer
	}
	if p == nil {
		return ""
	}
	b, err := p.MarshalJSON()
	if err != nil {
		return ""
	}
	return string(b)
}
