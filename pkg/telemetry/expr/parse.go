package expr

import (
	"fmt"
	"regexp"
	"strings"
)

type parser struct {
	toks  []token
	i     int
	src   string
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) isOp(text string) bool {
	t := p.peek()
	return t.kind == tOp && t.text == text
}

func (p *parser) errAt(t token, format string, args ...any) *Error {
	text := t.text
	if t.kind == tEOF {
		text = ""
		format = "unexpected end of expression: " + format
	}
	return &Error{Pos: t.pos, Token: text, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) expect(text string) error {
	if !p.isOp(text) {
		return p.errAt(p.peek(), "want %q", text)
	}
	p.next()
	return nil
}

func (p *parser) parse() (node, error) {
	if p.peek().kind == tEOF {
		return nil, &Error{Pos: 0, Msg: "empty expression"}
	}
	n, err := p.expr()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, p.errAt(t, "unexpected token after the expression")
	}
	return n, nil
}

func (p *parser) expr() (node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.errAt(p.peek(), "expression nested deeper than %d", maxDepth)
	}
	start := p.peek()
	c, err := p.or()
	if err != nil {
		return nil, err
	}
	if !p.isOp("?") {
		return c, nil
	}
	if k := c.kind(); k != Bool && k != Dyn {
		return nil, p.errAt(start, "condition of ?: is %s, want bool", k)
	}
	p.next()
	t, err := p.expr()
	if err != nil {
		return nil, err
	}
	if err := p.expect(":"); err != nil {
		return nil, err
	}
	f, err := p.expr()
	if err != nil {
		return nil, err
	}
	return &cond{c, t, f}, nil
}

func (p *parser) or() (node, error)  { return p.logical("||", p.and) }
func (p *parser) and() (node, error) { return p.logical("&&", p.rel) }

func (p *parser) logical(op string, sub func() (node, error)) (node, error) {
	start := p.peek()
	l, err := sub()
	if err != nil {
		return nil, err
	}
	for p.isOp(op) {
		opTok := p.next()
		r, err := sub()
		if err != nil {
			return nil, err
		}
		for _, x := range []node{l, r} {
			if k := x.kind(); k != Bool && k != Dyn {
				return nil, p.errAt(opTok, "operand of %s is %s, want bool (near %q)", op, k, start.text)
			}
		}
		l = &logic{and: op == "&&", l: l, r: r}
	}
	return l, nil
}

var relOps = map[string]bool{"==": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true}

func (p *parser) rel() (node, error) {
	l, err := p.add()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if !(t.kind == tOp && relOps[t.text]) && !(t.kind == tIdent && t.text == "in") {
			return l, nil
		}
		p.next()
		r, err := p.add()
		if err != nil {
			return nil, err
		}
		if err := checkBinary(t.text, l.kind(), r.kind()); err != nil {
			return nil, p.errAt(t, "%v", err)
		}
		l = &binary{op: t.text, l: l, r: r}
	}
}

func (p *parser) add() (node, error) { return p.arith([]string{"+", "-"}, p.mul) }
func (p *parser) mul() (node, error) { return p.arith([]string{"*", "/", "%"}, p.unary) }

func (p *parser) arith(ops []string, sub func() (node, error)) (node, error) {
	l, err := sub()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		if t.kind != tOp || !contains(ops, t.text) {
			return l, nil
		}
		p.next()
		r, err := sub()
		if err != nil {
			return nil, err
		}
		if err := checkBinary(t.text, l.kind(), r.kind()); err != nil {
			return nil, p.errAt(t, "%v", err)
		}
		l = &binary{op: t.text, l: l, r: r}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkBinary refuses operand kinds no overload accepts (Dyn passes).
func checkBinary(op string, l, r Kind) error {
	bad := fmt.Errorf("no matching overload for %s %s %s", l, op, r)
	if op == "in" {
		if (l == String || l == Dyn) && (r == Map || r == Dyn) {
			return nil
		}
		return bad
	}
	if l == Map || r == Map {
		return bad
	}
	if l == Dyn || r == Dyn {
		return nil
	}
	if l != r {
		return bad
	}
	switch op {
	case "==", "!=":
		return nil
	case "<", "<=", ">", ">=", "+":
		if l == Int || l == String {
			return nil
		}
		return bad
	}
	if l != Int {
		return bad
	}
	return nil
}

func (p *parser) unary() (node, error) {
	if p.isOp("!") || p.isOp("-") {
		t := p.next()
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > maxDepth {
			return nil, p.errAt(t, "expression nested deeper than %d", maxDepth)
		}
		// A negative int literal.
		if t.text == "-" && p.peek().kind == tInt {
			n := p.next()
			return p.postfix(&lit{IntValue(-n.num)}, "", n)
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		want := Bool
		if t.text == "-" {
			want = Int
		}
		if k := x.kind(); k != want && k != Dyn {
			return nil, p.errAt(t, "no matching overload for %s%s", t.text, k)
		}
		return &unary{op: t.text, x: x}, nil
	}
	return p.primary()
}

func (p *parser) primary() (node, error) {
	t := p.next()
	switch t.kind {
	case tInt:
		return p.postfix(&lit{IntValue(t.num)}, "", t)
	case tString:
		return p.postfix(&lit{StringValue(t.str)}, "", t)
	case tIdent:
		switch t.text {
		case "true", "false":
			return p.postfix(&lit{BoolValue(t.text == "true")}, "", t)
		case "null":
			return nil, p.errAt(t, "null is not supported")
		case "in":
			return nil, p.errAt(t, "unexpected operator")
		}
		if p.isOp("(") {
			return p.globalCall(t)
		}
		return p.postfix(nil, t.text, t)
	case tOp:
		if t.text == "(" {
			n, err := p.expr()
			if err != nil {
				return nil, err
			}
			if err := p.expect(")"); err != nil {
				return nil, err
			}
			return p.postfix(n, "", t)
		}
	}
	return nil, p.errAt(t, "unexpected token")
}

// postfix parses selections, indexes and method calls after n (or after
// the attribute path being built, when path is not empty).
func (p *parser) postfix(n node, path string, start token) (node, error) {
	pathTok := start
	for {
		switch {
		case p.isOp("."):
			p.next()
			id := p.next()
			if id.kind != tIdent {
				return nil, p.errAt(id, "want a field or method name after '.'")
			}
			if p.isOp("(") {
				recv, err := p.resolve(n, path, pathTok)
				if err != nil {
					return nil, err
				}
				path = ""
				n, err = p.method(recv, id)
				if err != nil {
					return nil, err
				}
				continue
			}
			if path == "" {
				if n != nil && n.kind() == Map { // map.key
					n = &index{m: n, key: &lit{StringValue(id.text)}}
					continue
				}
				if x, ok := n.(*index); ok && id.text == "value" && isPeerLabels(x.m) {
					continue // Istio's upstream_peer.labels['app'].value: the label itself
				}
				return nil, p.errAt(id, "field selection on a %s value", kindOf(n))
			}
			if _, ok := known[path]; ok && known[path] == Map { // request.headers.x
				n, path = &index{m: &attr{name: path, k: Map}, key: &lit{StringValue(id.text)}}, ""
				continue
			}
			path += "." + id.text
		case p.isOp("["):
			bt := p.next()
			recv, err := p.resolve(n, path, pathTok)
			if err != nil {
				return nil, err
			}
			path = ""
			key, err := p.expr()
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			if k := recv.kind(); k != Map && k != Dyn {
				return nil, p.errAt(bt, "index on a %s value (only map attributes such as request.headers take [key])", k)
			}
			if k := key.kind(); k != String && k != Dyn {
				return nil, p.errAt(bt, "map key is %s, want string", k)
			}
			n = &index{m: recv, key: key}
		default:
			return p.resolve(n, path, pathTok)
		}
	}
}

func kindOf(n node) Kind {
	if n == nil {
		return Dyn
	}
	return n.kind()
}

// resolve turns an attribute path into its node (n when path is empty).
func (p *parser) resolve(n node, path string, t token) (node, error) {
	if path == "" {
		return n, nil
	}
	if k, ok := known[path]; ok {
		return &attr{name: path, k: k}, nil
	}
	if isPrefix(path) {
		return nil, &Error{Pos: t.pos, Token: path, Msg: "incomplete attribute name (e.g. " + example(path) + ")"}
	}
	return nil, &Error{Pos: t.pos, Token: path, Msg: "unknown attribute"}
}

func example(prefix string) string {
	for _, n := range Names() {
		if strings.HasPrefix(n, prefix+".") {
			return n
		}
	}
	return prefix
}

func (p *parser) args() ([]node, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var out []node
	if p.isOp(")") {
		p.next()
		return out, nil
	}
	for {
		a, err := p.expr()
		if err != nil {
			return nil, err
		}
		out = append(out, a)
		if p.isOp(",") {
			p.next()
			continue
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		return out, nil
	}
}

func (p *parser) globalCall(fn token) (node, error) {
	args, err := p.args()
	if err != nil {
		return nil, err
	}
	if len(args) != 1 {
		return nil, p.errAt(fn, "%s() takes one argument", fn.text)
	}
	a := args[0]
	var n node
	switch fn.text {
	case "has":
		switch a.(type) {
		case *attr, *index:
		default:
			return nil, p.errAt(fn, "has() takes an attribute or a map entry, e.g. has(request.headers['x'])")
		}
		n = &has{x: a}
	case "string":
		if a.kind() == Map {
			return nil, p.errAt(fn, "no matching overload for string(map)")
		}
		n = &call{fn: "string", args: args}
	case "int":
		if k := a.kind(); k != Int && k != String && k != Dyn {
			return nil, p.errAt(fn, "no matching overload for int(%s)", k)
		}
		n = &call{fn: "int", args: args}
	case "size":
		if k := a.kind(); k != String && k != Dyn {
			return nil, p.errAt(fn, "no matching overload for size(%s) (strings only)", k)
		}
		n = &call{fn: "size", args: args}
	default:
		return nil, p.errAt(fn, "unsupported function (supported: has, string, int, size, and the methods startsWith, endsWith, contains, matches)")
	}
	return p.postfix(n, "", fn)
}

func (p *parser) method(recv node, m token) (node, error) {
	if _, ok := functions[m.text]; !ok || m.text == "string" || m.text == "int" || m.text == "size" {
		return nil, p.errAt(m, "unsupported method (supported: startsWith, endsWith, contains, matches)")
	}
	args, err := p.args()
	if err != nil {
		return nil, err
	}
	if len(args) != 1 {
		return nil, p.errAt(m, "%s() takes one argument", m.text)
	}
	if k := recv.kind(); k != String && k != Dyn {
		return nil, p.errAt(m, "no matching overload for %s.%s()", k, m.text)
	}
	if k := args[0].kind(); k != String && k != Dyn {
		return nil, p.errAt(m, "no matching overload for %s(%s)", m.text, k)
	}
	c := &call{fn: m.text, recv: recv, args: args}
	if l, ok := args[0].(*lit); ok && m.text == "matches" {
		re, err := regexp.Compile(l.v.S)
		if err != nil {
			return nil, p.errAt(m, "matches: %v", err)
		}
		c.re = re
	}
	return c, nil
}

// isPeerLabels reports whether n is a peer's labels map.
func isPeerLabels(n node) bool {
	a, ok := n.(*attr)
	return ok && (a.name == "upstream_peer.labels" || a.name == "downstream_peer.labels")
}
