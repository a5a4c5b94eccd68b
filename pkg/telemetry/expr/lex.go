package expr

import (
	"fmt"
	"strconv"
	"strings"
)

type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tInt
	tString
	tOp // punctuation and operators, text in tok.text
)

type token struct {
	kind tokKind
	text string // identifier, operator, or the literal's source text
	str  string // a string literal's value
	num  int64  // an int literal's value
	pos  int    // byte offset in the source
}

// twoChar are the two-character operators.
var twoChar = map[string]bool{"==": true, "!=": true, "<=": true, ">=": true, "&&": true, "||": true}

// lex splits src into tokens. Errors name the offending text and offset.
func lex(src string) ([]token, error) {
	var out []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && (isIdentStart(src[j]) || isDigit(src[j])) {
				j++
			}
			out = append(out, token{kind: tIdent, text: src[i:j], pos: i})
			i = j
		case isDigit(c):
			j := i
			for j < len(src) && (isDigit(src[j]) || isIdentStart(src[j])) {
				j++
			}
			text := src[i:j]
			n, err := strconv.ParseInt(text, 10, 64)
			if err != nil {
				return nil, &Error{Pos: i, Token: text, Msg: "not a decimal integer (only decimal int literals are supported)"}
			}
			out = append(out, token{kind: tInt, text: text, num: n, pos: i})
			i = j
		case c == '\'' || c == '"':
			s, n, err := lexString(src[i:])
			if err != nil {
				err.Pos += i
				return nil, err
			}
			out = append(out, token{kind: tString, text: src[i : i+n], str: s, pos: i})
			i += n
		default:
			if i+1 < len(src) && twoChar[src[i:i+2]] {
				out = append(out, token{kind: tOp, text: src[i : i+2], pos: i})
				i += 2
				continue
			}
			if strings.IndexByte("()[].,?:!-+*/%<>", c) >= 0 {
				out = append(out, token{kind: tOp, text: src[i : i+1], pos: i})
				i++
				continue
			}
			e := &Error{Pos: i, Token: tokenAt(src, i), Msg: "unexpected character"}
			switch c {
			case '|':
				e.Msg = "'|' is not an operator (Mixer's default operator is not CEL: write has(x) ? x : 'default')"
			case '=':
				e.Msg = "'=' is not an operator (comparison is ==)"
			case '&':
				e.Msg = "'&' is not an operator (logical and is &&)"
			}
			return nil, e
		}
	}
	out = append(out, token{kind: tEOF, pos: len(src)})
	return out, nil
}

// tokenAt is the text at offset i up to the next space (for messages).
func tokenAt(src string, i int) string {
	j := i + 1
	for j < len(src) && j-i < 20 && src[j] != ' ' {
		j++
	}
	return src[i:j]
}

func isIdentStart(c byte) bool { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

// lexString reads a quoted string literal at the start of s and returns
// its value and length in bytes. Escapes: \\ \' \" \n \r \t.
func lexString(s string) (string, int, *Error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q:
			return b.String(), i + 1, nil
		case c == '\\':
			if i+1 >= len(s) {
				return "", 0, &Error{Pos: i, Token: `\`, Msg: "unterminated escape"}
			}
			i++
			switch s[i] {
			case '\\', '\'', '"':
				b.WriteByte(s[i])
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				return "", 0, &Error{Pos: i - 1, Token: s[i-1 : i+1], Msg: "unsupported escape"}
			}
		case c == '\n':
			return "", 0, &Error{Pos: 0, Token: tokenAt(s, 0), Msg: "unterminated string literal"}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, &Error{Pos: 0, Token: tokenAt(s, 0), Msg: "unterminated string literal"}
}

// Error is a compile error: Msg about Token at byte offset Pos.
type Error struct {
	Pos   int
	Token string
	Msg   string
}

func (e *Error) Error() string {
	if e.Token == "" {
		return fmt.Sprintf("offset %d: %s", e.Pos, e.Msg)
	}
	return fmt.Sprintf("offset %d: %q: %s", e.Pos, e.Token, e.Msg)
}
