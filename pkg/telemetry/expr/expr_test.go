package expr

import (
	"errors"
	"strings"
	"testing"
)

type headers map[string]string

func (h headers) Lookup(k string) (string, bool) { v, ok := h[strings.ToLower(k)]; return v, ok }

type attrs map[string]Value

func (a attrs) Attribute(n string) (Value, bool) { v, ok := a[n]; return v, ok }

var req = attrs{
	"request.host":          StringValue("reviews:9080"),
	"request.url_path":      StringValue("/reviews/1"),
	"request.path":          StringValue("/reviews/1?x=1"),
	"request.method":        StringValue("GET"),
	"request.headers":       MapValue(headers{"x-user": "jason", "x-n": "42"}),
	"response.code":         IntValue(503),
	"connection.mtls":       BoolValue(true),
	"source.workload":       StringValue("productpage-v1"),
	"destination.port":      IntValue(9080),
	"upstream_peer.app":     StringValue("reviews"),
	"downstream_peer.app":   StringValue("productpage"),
	"upstream_peer.labels":  MapValue(headers{"app": "reviews"}),
	"response.code_details": StringValue("via_upstream"),
}

func TestEval(t *testing.T) {
	t.Parallel()
	cases := []struct {
		src  string
		want string // Value.String(), or "error"
	}{
		// Istio's documented access log filters.
		{"response.code >= 400", "true"},
		{"response.code >= 400 && response.code < 500", "false"},
		{"response.code == 503 || request.url_path == '/x'", "true"},
		{`request.headers['x-user'] == 'jason'`, "true"},
		{`request.headers["X-User"] == "jason"`, "true"},
		{"request.headers.x-user == 'jason'", "error"}, // not an identifier: x - user
		{"connection.mtls", "true"},
		{"!connection.mtls", "false"},
		{"connection.mtls && request.url_path.startsWith('/reviews')", "true"},
		{"request.url_path.endsWith('/1')", "true"},
		{"request.host.contains('view')", "true"},
		{"request.url_path.matches('^/reviews/[0-9]+$')", "true"},
		{"request.url_path.matches(request.host)", "false"},
		// Tag values.
		{"request.host", "reviews:9080"},
		{"string(destination.port)", "9080"},
		{"string(response.code) + '-' + request.method", "503-GET"},
		{"upstream_peer.app", "reviews"},
		{"downstream_peer.app", "productpage"},
		{"upstream_peer.labels['app'].value", "reviews"},
		{"upstream_peer.labels['app']", "reviews"},
		{"request.headers['x-user'].value", "error"},
		{"source.workload", "productpage-v1"},
		{"'literal'", "literal"},
		{"42", "42"},
		{"-42 + 2", "-40"},
		{"int(request.headers['x-n']) * 2 % 5", "4"},
		{"size('héllo')", "5"},
		{"has(request.headers['x-user']) ? request.headers['x-user'] : 'anonymous'", "jason"},
		{"has(request.headers.x_missing) ? 'y' : 'anonymous'", "anonymous"},
		{"has(request.referer)", "false"},
		{"has(request.host)", "true"},
		{"'x-user' in request.headers", "true"},
		{"!('nope' in request.headers)", "true"},
		{"(1 + 2) * 3 == 9", "true"},
		{"'a' < 'b' && 2 <= 2 && 3 > 2 && 'b' >= 'b' && 1 != 2", "true"},
		{"true ? 1 : false ? 2 : 3", "1"},
		// Errors: absent attributes and keys, division by zero.
		{"request.headers['nope']", "error"},
		{"request.referer == 'x'", "error"},
		{"1 / (response.code - 503)", "error"},
		{"int('x')", "error"},
		// CEL's commutative && / ||: the deciding side absorbs an error.
		{"request.headers['nope'] == 'x' || response.code == 503", "true"},
		{"request.headers['nope'] == 'x' && response.code == 200", "false"},
		{"request.headers['nope'] == 'x' && response.code == 503", "error"},
	}
	for _, tc := range cases {
		t.Run(tc.src, func(t *testing.T) {
			p, err := Compile(tc.src)
			if err != nil {
				if tc.want == "error" {
					return
				}
				t.Fatalf("compile: %v", err)
			}
			v, err := p.Eval(req)
			got := v.String()
			if err != nil {
				got = "error"
			}
			if got != tc.want {
				t.Errorf("%s = %q (err %v), want %q", tc.src, got, err, tc.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		src, token, msg string
	}{
		{"", "", "empty expression"},
		{"response.code >= ", "", "unexpected end"},
		{"response.code = 400", "=", "comparison is =="},
		{"request.headers['x'] | 'none'", "|", "default operator"},
		{"response.code == '500'", "==", "int == string"},
		{"request.foo", "request.foo", "unknown attribute"},
		{"request", "request", "incomplete attribute name"},
		{"upstream_peer", "upstream_peer", "incomplete attribute name"},
		{"filter_state['x']", "filter_state", "unknown attribute"},
		{"timestamp(1)", "timestamp", "unsupported function"},
		{"request.host.lowerAscii()", "lowerAscii", "unsupported method"},
		{"response.code.startsWith('5')", "startsWith", "int.startsWith"},
		{"response.code && true", "&&", "want bool"},
		{"!request.host", "!", "!string"},
		{"request.host['x']", "[", "index on a string"},
		{"'unterminated", "'unterminated", "unterminated string"},
		{"'bad \\q escape'", `\q`, "unsupported escape"},
		{"0x1F", "0x1F", "decimal integer"},
		{"1 2", "2", "unexpected token after"},
		{"has(1)", "has", "attribute or a map entry"},
		{"null", "null", "not supported"},
		{"request.url_path.matches('(')", "matches", "missing closing"},
		{"response.code ? 1 : 2", "response", "condition of ?:"},
		{"size(response.code)", "size", "size(int)"},
		{"request.headers + 'x'", "+", "map + string"},
		{"1 in request.headers", "in", "int in map"},
		{strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100), "(", "nested deeper"},
	}
	for _, tc := range cases {
		t.Run(tc.src, func(t *testing.T) {
			_, err := Compile(tc.src)
			if err == nil {
				t.Fatalf("compiled, want an error with %q", tc.msg)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if e.Token != tc.token || !strings.Contains(e.Msg, tc.msg) {
				t.Errorf("error %v: want token %q and message with %q", err, tc.token, tc.msg)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	t.Parallel()
	p, err := Compile("has(request.headers['x']) ? string(response.code) + request.host : request.url_path.matches(request.host) ? 'a' : 'b'")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Attributes(), ","); got != "request.headers,request.host,request.url_path,response.code" {
		t.Errorf("attributes %s", got)
	}
}

func TestMatchesAndLabel(t *testing.T) {
	t.Parallel()
	p, err := Compile("request.headers['x-log'] == 'yes'")
	if err != nil {
		t.Fatal(err)
	}
	if p.Matches(req) {
		t.Error("an absent header matched")
	}
	if !p.Matches(attrs{"request.headers": MapValue(headers{"x-log": "yes"})}) {
		t.Error("a present header did not match")
	}
	if p.Kind() != Bool {
		t.Errorf("kind %v, want bool", p.Kind())
	}
	l, err := Compile("request.headers['x-user']")
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Label(req, "unknown"); got != "jason" {
		t.Errorf("label %q", got)
	}
	if got := l.Label(attrs{}, "unknown"); got != "unknown" {
		t.Errorf("label of an absent attribute %q, want the default", got)
	}
	n, err := Compile("response.code")
	if err != nil {
		t.Fatal(err)
	}
	if n.Matches(req) {
		t.Error("a non-bool result matched")
	}
}

// Every known attribute compiles alone and reports its kind.
func TestNames(t *testing.T) {
	t.Parallel()
	for _, n := range Names() {
		p, err := Compile(n)
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		if k, _ := KindOf(n); p.Kind() != k {
			t.Errorf("%s: kind %v, want %v", n, p.Kind(), k)
		}
	}
}

func FuzzCompileEval(f *testing.F) {
	for _, s := range []string{"response.code >= 400", "request.headers['x'] == 'y' && !connection.mtls",
		"has(request.headers.x) ? request.headers.x : 'n'", "string(destination.port) + '/' + request.host",
		"request.url_path.matches('^/a')", "int('12') % 5 - -3", "'a' in request.headers || size('x') > 0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Compile(src)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Pos < 0 || e.Pos > len(src) {
				t.Fatalf("%q: bad error %v", src, err)
			}
			return
		}
		if p.Source() != src {
			t.Fatalf("source %q", p.Source())
		}
		// Evaluation never panics; a statically typed result keeps its kind.
		for _, a := range []Attributes{req, attrs{}} {
			v, err := p.Eval(a)
			if err == nil && p.Kind() != Dyn && v.Kind != p.Kind() {
				t.Fatalf("%q: static kind %v, evaluated %v", src, p.Kind(), v.Kind)
			}
			_ = p.Matches(a)
			_ = p.Label(a, "unknown")
		}
	})
}
