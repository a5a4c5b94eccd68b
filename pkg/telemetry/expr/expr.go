// Package expr is the small subset of CEL (the Common Expression
// Language) that Istio's Telemetry API uses: access log
// `filter.expression` and metric `tagOverrides[].value`. Compile parses
// and type-checks an expression against the attribute vocabulary (Names)
// and refuses anything outside the subset with the offending token; a
// Program is then evaluated per request or connection against an
// Attributes implementation the proxy supplies.
//
// Supported: int, string and bool literals; attributes such as
// request.host, request.headers['x'] (also request.headers.x),
// response.code, connection.mtls, source.workload, upstream_peer.app;
// operators ! - * / % + < <= > >= == != in && || ?: and parentheses;
// functions has(), string(), int(), size(), and the string methods
// startsWith, endsWith, contains, matches (RE2). Semantics follow CEL:
// no implicit conversions (response.code == '200' does not compile),
// && and || absorb an error when the other side decides the result, a
// missing map key or absent attribute is an evaluation error that has()
// tests for. Programs are immutable and safe for concurrent use.
package expr

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Kind is a value's type. Dyn is a static kind only: not known until
// evaluation (e.g. a conditional whose branches differ).
type Kind uint8

// Kinds.
const (
	Dyn Kind = iota
	Bool
	Int
	String
	Map
)

func (k Kind) String() string {
	switch k {
	case Bool:
		return "bool"
	case Int:
		return "int"
	case String:
		return "string"
	case Map:
		return "map"
	}
	return "dyn"
}

// StringMap is a map attribute's value (headers): Lookup returns the
// value for key (header names case-insensitively, as Envoy).
type StringMap interface {
	Lookup(key string) (string, bool)
}

// Value is an evaluation result or attribute value.
type Value struct {
	Kind Kind
	B    bool
	I    int64
	S    string
	M    StringMap
}

// BoolValue, IntValue and StringValue build values.
func BoolValue(b bool) Value     { return Value{Kind: Bool, B: b} }
func IntValue(i int64) Value     { return Value{Kind: Int, I: i} }
func StringValue(s string) Value { return Value{Kind: String, S: s} }

// MapValue wraps a StringMap.
func MapValue(m StringMap) Value { return Value{Kind: Map, M: m} }

// String is the value as a metric label: strings as they are, ints in
// decimal, bools true/false.
func (v Value) String() string {
	switch v.Kind {
	case String:
		return v.S
	case Int:
		return strconv.FormatInt(v.I, 10)
	case Bool:
		return strconv.FormatBool(v.B)
	case Map:
		return "map"
	}
	return ""
}

// Attributes answers attribute lookups during evaluation. Attribute is
// called with names from Names() only; ok is false when the attribute
// does not apply (e.g. response.code on a TCP connection). Called from
// the evaluating goroutine only.
type Attributes interface {
	Attribute(name string) (v Value, ok bool)
}

// ErrAbsent is wrapped by evaluation errors for an absent attribute or
// map key.
var ErrAbsent = errors.New("no such attribute or key")

// Program is a compiled expression.
type Program struct {
	src  string
	root node
}

// maxDepth bounds nesting (parentheses, operators), maxLen the source.
const (
	maxDepth = 64
	maxLen   = 4096
)

// Compile parses and type-checks src. Errors are *Error values naming the
// offending token and its byte offset.
func Compile(src string) (*Program, error) {
	if len(src) > maxLen {
		return nil, &Error{Pos: maxLen, Msg: fmt.Sprintf("expression longer than %d bytes", maxLen)}
	}
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, src: src}
	n, err := p.parse()
	if err != nil {
		return nil, err
	}
	return &Program{src: src, root: n}, nil
}

// Source returns the expression text.
func (p *Program) Source() string { return p.src }

// Kind returns the static result kind (Dyn when it depends on the input).
func (p *Program) Kind() Kind { return p.root.kind() }

// Eval evaluates the program.
func (p *Program) Eval(a Attributes) (Value, error) { return p.root.eval(a) }

// Matches evaluates a filter: true only when the result is the bool true
// (an error or a non-bool result is false, as Envoy's CEL filter).
func (p *Program) Matches(a Attributes) bool {
	v, err := p.root.eval(a)
	return err == nil && v.Kind == Bool && v.B
}

// Label evaluates a tag value; an error or a map yields def.
func (p *Program) Label(a Attributes, def string) string {
	v, err := p.root.eval(a)
	if err != nil || v.Kind == Map || v.Kind == Dyn {
		return def
	}
	return v.String()
}

// ---- AST

type node interface {
	kind() Kind
	eval(a Attributes) (Value, error)
}

type lit struct{ v Value }

func (n *lit) kind() Kind                     { return n.v.Kind }
func (n *lit) eval(Attributes) (Value, error) { return n.v, nil }

type attr struct {
	name string
	k    Kind
}

func (n *attr) kind() Kind { return n.k }
func (n *attr) eval(a Attributes) (Value, error) {
	v, ok := a.Attribute(n.name)
	if !ok {
		return Value{}, fmt.Errorf("%s: %w", n.name, ErrAbsent)
	}
	if v.Kind != n.k {
		return Value{}, fmt.Errorf("%s: attribute has kind %s, want %s", n.name, v.Kind, n.k)
	}
	return v, nil
}

type index struct {
	m, key node
}

func (n *index) kind() Kind { return String }
func (n *index) eval(a Attributes) (Value, error) {
	m, err := n.m.eval(a)
	if err != nil {
		return Value{}, err
	}
	k, err := n.key.eval(a)
	if err != nil {
		return Value{}, err
	}
	if m.Kind != Map || k.Kind != String {
		return Value{}, fmt.Errorf("no matching overload for %s[%s]", m.Kind, k.Kind)
	}
	if m.M == nil {
		return Value{}, fmt.Errorf("key %q: %w", k.S, ErrAbsent)
	}
	s, ok := m.M.Lookup(k.S)
	if !ok {
		return Value{}, fmt.Errorf("key %q: %w", k.S, ErrAbsent)
	}
	return StringValue(s), nil
}

type has struct{ x node } // attr or index

func (n *has) kind() Kind { return Bool }
func (n *has) eval(a Attributes) (Value, error) {
	switch x := n.x.(type) {
	case *attr:
		_, ok := a.Attribute(x.name)
		return BoolValue(ok), nil
	case *index:
		m, err := x.m.eval(a)
		if errors.Is(err, ErrAbsent) {
			return BoolValue(false), nil
		}
		if err != nil {
			return Value{}, err
		}
		k, err := x.key.eval(a)
		if err != nil {
			return Value{}, err
		}
		if m.Kind != Map || k.Kind != String {
			return Value{}, fmt.Errorf("no matching overload for has(%s[%s])", m.Kind, k.Kind)
		}
		if m.M == nil {
			return BoolValue(false), nil
		}
		_, ok := m.M.Lookup(k.S)
		return BoolValue(ok), nil
	}
	return Value{}, errors.New("has() takes an attribute or a map entry")
}

type unary struct {
	op string
	x  node
}

func (n *unary) kind() Kind {
	if n.op == "!" {
		return Bool
	}
	return Int
}

func (n *unary) eval(a Attributes) (Value, error) {
	v, err := n.x.eval(a)
	if err != nil {
		return Value{}, err
	}
	switch {
	case n.op == "!" && v.Kind == Bool:
		return BoolValue(!v.B), nil
	case n.op == "-" && v.Kind == Int:
		return IntValue(-v.I), nil
	}
	return Value{}, fmt.Errorf("no matching overload for %s%s", n.op, v.Kind)
}

type cond struct{ c, t, f node }

func (n *cond) kind() Kind {
	if n.t.kind() == n.f.kind() {
		return n.t.kind()
	}
	return Dyn
}

func (n *cond) eval(a Attributes) (Value, error) {
	c, err := n.c.eval(a)
	if err != nil {
		return Value{}, err
	}
	if c.Kind != Bool {
		return Value{}, fmt.Errorf("condition is %s, want bool", c.Kind)
	}
	if c.B {
		return n.t.eval(a)
	}
	return n.f.eval(a)
}

type logic struct {
	and  bool
	l, r node
}

func (n *logic) kind() Kind { return Bool }

// eval follows CEL: an error on one side is absorbed when the other side
// alone decides (false for &&, true for ||).
func (n *logic) eval(a Attributes) (Value, error) {
	decisive := !n.and
	l, lerr := n.l.eval(a)
	if lerr == nil && l.Kind == Bool && l.B == decisive {
		return l, nil
	}
	r, rerr := n.r.eval(a)
	if rerr == nil && r.Kind == Bool && r.B == decisive {
		return r, nil
	}
	if lerr != nil {
		return Value{}, lerr
	}
	if rerr != nil {
		return Value{}, rerr
	}
	if l.Kind != Bool || r.Kind != Bool {
		op := "||"
		if n.and {
			op = "&&"
		}
		return Value{}, fmt.Errorf("no matching overload for %s %s %s", l.Kind, op, r.Kind)
	}
	return BoolValue(!decisive), nil
}

type binary struct {
	op   string
	l, r node
}

func (n *binary) kind() Kind {
	switch n.op {
	case "==", "!=", "<", "<=", ">", ">=", "in":
		return Bool
	case "+":
		if k := n.l.kind(); k != Dyn {
			return k
		}
		return n.r.kind()
	}
	return Int
}

func (n *binary) eval(a Attributes) (Value, error) {
	l, err := n.l.eval(a)
	if err != nil {
		return Value{}, err
	}
	r, err := n.r.eval(a)
	if err != nil {
		return Value{}, err
	}
	return apply(n.op, l, r)
}

func apply(op string, l, r Value) (Value, error) {
	bad := fmt.Errorf("no matching overload for %s %s %s", l.Kind, op, r.Kind)
	if op == "in" {
		if l.Kind != String || r.Kind != Map {
			return Value{}, bad
		}
		if r.M == nil {
			return BoolValue(false), nil
		}
		_, ok := r.M.Lookup(l.S)
		return BoolValue(ok), nil
	}
	if l.Kind != r.Kind || l.Kind == Map || l.Kind == Dyn {
		return Value{}, bad
	}
	switch op {
	case "==", "!=":
		eq := false
		switch l.Kind {
		case Bool:
			eq = l.B == r.B
		case Int:
			eq = l.I == r.I
		case String:
			eq = l.S == r.S
		}
		return BoolValue(eq == (op == "==")), nil
	case "<", "<=", ">", ">=":
		var c int
		switch l.Kind {
		case Int:
			c = cmpInt(l.I, r.I)
		case String:
			c = strings.Compare(l.S, r.S)
		default:
			return Value{}, bad
		}
		switch op {
		case "<":
			return BoolValue(c < 0), nil
		case "<=":
			return BoolValue(c <= 0), nil
		case ">":
			return BoolValue(c > 0), nil
		}
		return BoolValue(c >= 0), nil
	case "+":
		switch l.Kind {
		case Int:
			return IntValue(l.I + r.I), nil
		case String:
			return StringValue(l.S + r.S), nil
		}
		return Value{}, bad
	}
	if l.Kind != Int {
		return Value{}, bad
	}
	switch op {
	case "-":
		return IntValue(l.I - r.I), nil
	case "*":
		return IntValue(l.I * r.I), nil
	case "/", "%":
		if r.I == 0 {
			return Value{}, errors.New("division by zero")
		}
		if r.I == -1 { // MinInt64 / -1 overflows
			if op == "%" {
				return IntValue(0), nil
			}
			return IntValue(-l.I), nil
		}
		if op == "/" {
			return IntValue(l.I / r.I), nil
		}
		return IntValue(l.I % r.I), nil
	}
	return Value{}, bad
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type call struct {
	fn   string
	recv node // nil for a global function
	args []node
	re   *regexp.Regexp // matches() with a literal pattern
}

// functions are the global functions and methods with their result kind.
var functions = map[string]Kind{"string": String, "int": Int, "size": Int,
	"startsWith": Bool, "endsWith": Bool, "contains": Bool, "matches": Bool}

func (n *call) kind() Kind { return functions[n.fn] }

func (n *call) eval(a Attributes) (Value, error) {
	var recv Value
	if n.recv != nil {
		v, err := n.recv.eval(a)
		if err != nil {
			return Value{}, err
		}
		recv = v
	}
	args := make([]Value, len(n.args))
	for i, x := range n.args {
		v, err := x.eval(a)
		if err != nil {
			return Value{}, err
		}
		args[i] = v
	}
	switch n.fn {
	case "string":
		switch v := args[0]; v.Kind {
		case String, Int, Bool:
			return StringValue(v.String()), nil
		}
	case "int":
		switch v := args[0]; v.Kind {
		case Int:
			return v, nil
		case String:
			i, err := strconv.ParseInt(v.S, 10, 64)
			if err != nil {
				return Value{}, fmt.Errorf("int(%q): %w", v.S, err)
			}
			return IntValue(i), nil
		}
	case "size":
		if v := args[0]; v.Kind == String {
			return IntValue(int64(utf8.RuneCountInString(v.S))), nil
		}
	case "startsWith", "endsWith", "contains", "matches":
		if recv.Kind != String || args[0].Kind != String {
			break
		}
		switch n.fn {
		case "startsWith":
			return BoolValue(strings.HasPrefix(recv.S, args[0].S)), nil
		case "endsWith":
			return BoolValue(strings.HasSuffix(recv.S, args[0].S)), nil
		case "contains":
			return BoolValue(strings.Contains(recv.S, args[0].S)), nil
		}
		re := n.re
		if re == nil {
			var err error
			if re, err = regexp.Compile(args[0].S); err != nil {
				return Value{}, fmt.Errorf("matches: %w", err)
			}
		}
		return BoolValue(re.MatchString(recv.S)), nil
	}
	kinds := make([]string, len(args))
	for i, v := range args {
		kinds[i] = v.Kind.String()
	}
	return Value{}, fmt.Errorf("no matching overload for %s(%s)", n.fn, strings.Join(kinds, ", "))
}

// Attributes returns the attribute names the program reads, sorted,
// without duplicates.
func (p *Program) Attributes() []string {
	seen := map[string]bool{}
	var walk func(n node)
	walk = func(n node) {
		switch x := n.(type) {
		case *attr:
			seen[x.name] = true
		case *index:
			walk(x.m)
			walk(x.key)
		case *has:
			walk(x.x)
		case *unary:
			walk(x.x)
		case *cond:
			walk(x.c)
			walk(x.t)
			walk(x.f)
		case *logic:
			walk(x.l)
			walk(x.r)
		case *binary:
			walk(x.l)
			walk(x.r)
		case *call:
			if x.recv != nil {
				walk(x.recv)
			}
			for _, a := range x.args {
				walk(a)
			}
		}
	}
	walk(p.root)
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
