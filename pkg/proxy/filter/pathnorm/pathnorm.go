// Package pathnorm normalizes request paths the way Istio configures Envoy's
// HTTP connection manager (meshConfig.pathNormalization), so that
// authorization and routing see the same path the upstream receives.
//
// BASE is RFC 3986 normalization: percent-encoded unreserved characters are
// decoded (%61 -> a), remaining escapes get upper-case hex, backslashes
// become slashes and "." / ".." segments are resolved. MERGE_SLASHES also
// collapses repeated slashes; DECODE_AND_MERGE_SLASHES first decodes %2F
// and %5C. Invalid escapes (and %00) are errors: the proxy answers 400.
package pathnorm

import (
	"errors"
	"fmt"
	"strings"
)

// Mode is one of Istio's path normalization settings.
type Mode int

// Modes, as in meshConfig.pathNormalization.normalization.
const (
	Base Mode = iota // Istio's DEFAULT
	None
	MergeSlashes
	DecodeAndMergeSlashes
)

// ParseMode maps Istio's names (DEFAULT, NONE, BASE, MERGE_SLASHES,
// DECODE_AND_MERGE_SLASHES) to a Mode.
func ParseMode(s string) (Mode, error) {
	switch strings.ToUpper(s) {
	case "", "DEFAULT", "BASE":
		return Base, nil
	case "NONE":
		return None, nil
	case "MERGE_SLASHES":
		return MergeSlashes, nil
	case "DECODE_AND_MERGE_SLASHES":
		return DecodeAndMergeSlashes, nil
	}
	return Base, fmt.Errorf("unknown path normalization %q", s)
}

func (m Mode) String() string {
	switch m {
	case None:
		return "NONE"
	case MergeSlashes:
		return "MERGE_SLASHES"
	case DecodeAndMergeSlashes:
		return "DECODE_AND_MERGE_SLASHES"
	}
	return "BASE"
}

// ErrInvalidPath is wrapped by every normalization error.
var ErrInvalidPath = errors.New("invalid request path")

// Normalize returns the normalized form of p, the path part of a request
// target (a "?query" is kept unchanged, a "#fragment" is dropped). It does
// not allocate when p is already normalized.
func Normalize(p string, mode Mode) (string, error) {
	query := ""
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p = p[:i]
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p, query = p[:i], p[i:]
	}
	if mode == None {
		return p + query, nil
	}
	if p == "" {
		return "/" + query, nil
	}
	if p[0] != '/' && p[0] != '\\' && !strings.HasPrefix(p, "%") {
		return "", fmt.Errorf("%w: %q does not start with /", ErrInvalidPath, p)
	}
	if !needsWork(p, mode) {
		return p + query, nil
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", fmt.Errorf("%w: bad percent-encoding at offset %d", ErrInvalidPath, i)
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d == 0:
				return "", fmt.Errorf("%w: encoded NUL", ErrInvalidPath)
			case isUnreserved(d):
				b.WriteByte(d)
			case (d == '/' || d == '\\') && mode == DecodeAndMergeSlashes:
				b.WriteByte('/')
			default:
				b.WriteByte('%')
				b.WriteByte(upper(p[i+1]))
				b.WriteByte(upper(p[i+2]))
			}
			i += 2
		case c == '\\':
			b.WriteByte('/')
		case c == 0:
			return "", fmt.Errorf("%w: NUL byte", ErrInvalidPath)
		default:
			b.WriteByte(c)
		}
	}
	s := b.String()
	if s == "" || s[0] != '/' {
		return "", fmt.Errorf("%w: %q does not start with /", ErrInvalidPath, p)
	}
	if mode == MergeSlashes || mode == DecodeAndMergeSlashes {
		s = mergeSlashes(s)
	}
	return removeDots(s) + query, nil
}

// needsWork reports whether p may change under normalization.
func needsWork(p string, mode Mode) bool {
	prev := byte(0)
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch c {
		case '%', '\\', 0:
			return true
		case '/':
			if prev == '/' && mode != Base {
				return true
			}
		case '.':
			if prev == '/' {
				// "/." or "/.." segment?
				j := i + 1
				if j < len(p) && p[j] == '.' {
					j++
				}
				if j == len(p) || p[j] == '/' {
					return true
				}
			}
		}
		prev = c
	}
	return false
}

func mergeSlashes(s string) string {
	if !strings.Contains(s, "//") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '/' && len(b) > 0 && b[len(b)-1] == '/' {
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// removeDots is RFC 3986 section 5.2.4 for an absolute path.
func removeDots(s string) string {
	segs := strings.Split(s[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, seg := range segs {
		last := i == len(segs)-1
		switch seg {
		case ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, seg)
			trailing = false
		}
	}
	r := "/" + strings.Join(out, "/")
	if trailing && !strings.HasSuffix(r, "/") {
		r += "/"
	}
	return r
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}
