// Package httpwire holds the small HTTP/1.1 field helpers that the proxy's
// own request parser (pkg/proxy/listener) and its upstream response reader
// (pkg/proxy/cluster) share. The field helpers allocate nothing;
// HeaderScratch allocates only when it grows.
package httpwire

import (
	"bytes"
	"net/http"
	"strings"
)

// TrimOWS trims optional whitespace (spaces and tabs, RFC 9110 §5.6.3)
// from both ends of s.
func TrimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// ValidFieldValue reports whether s, a header field value, holds no
// control characters other than HTAB (obs-text is allowed, as net/http
// does).
func ValidFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// HasToken reports whether the comma-separated list v holds token
// (case-insensitive), as in Connection: keep-alive, Upgrade.
func HasToken(v, token string) bool {
	for v != "" {
		var f string
		f, v, _ = strings.Cut(v, ",")
		if strings.EqualFold(TrimOWS(f), token) {
			return true
		}
	}
	return false
}

// ParseContentLength parses a Content-Length value: decimal digits only,
// at most 18 of them (so it cannot overflow an int64).
func ParseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// MaxReusedFields bounds the header a connection keeps for reuse; a larger
// one is allocated for its message only.
const MaxReusedFields = 64

// HeaderScratch is the header map and value array one connection reuses
// from message to message (the request parser's and the upstream
// response reader's). Nothing may keep the map or a value slice once the
// message is done: the strings themselves are the message's own.
type HeaderScratch struct {
	hdr  http.Header
	vals []string
}

// Take returns an empty header map and n cleared value slots (one backing
// array for every single-valued field): the scratch's own, grown as
// needed, when n is at most MaxReusedFields; new ones for this message
// only when it is larger or the scratch is nil.
func (s *HeaderScratch) Take(n int) (http.Header, []string) {
	if s == nil || n > MaxReusedFields {
		return make(http.Header, n), make([]string, n)
	}
	if s.hdr == nil {
		s.hdr = make(http.Header, max(n, 8))
	} else {
		clear(s.hdr)
	}
	if cap(s.vals) < n {
		s.vals = make([]string, max(n, 8))
	}
	vals := s.vals[:n]
	clear(vals)
	return s.hdr, vals
}

// HeadLines splits the message heads read on one connection into lines,
// reusing strings from the previous head: consecutive heads on a
// kept-alive connection mostly repeat each other's lines (the same client
// sends the same request fields, an upstream the same response fields,
// though not always in the same order: a Go map's order is random), so a
// line equal to one of the previous head's is that head's string, and only
// the lines that differ are copied, all into one new string. A head that
// repeats the previous one's lines allocates nothing. Strings are
// immutable, so a message may keep the ones it got for as long as it
// likes; only the returned slice is reused.
//
// The parser may also record its parse of each line (SetParsed: canonical
// name and value, after validating the line) and take it back for a line
// that repeats one of the previous head's (Parsed), so a repeated line is
// validated and canonicalised once per connection rather than once per
// message: the parse is a function of the line's bytes alone.
type HeadLines struct {
	prev, cur []string // the last head's lines; scratch for the next
	spans     []int    // scratch: start and end of each line of the current head
	from      []int    // scratch: per line, the index of the equal line in prev, or -1
	// fields[i] is the parser's record of the current head's line i;
	// prevFields the previous head's, indexed like prev.
	fields, prevFields []Field
}

// Field is a parsed header line: its canonical name and its value without
// surrounding whitespace.
type Field struct{ Name, Value string }

// Parsed returns what SetParsed recorded for the previous head's line that
// line i of the current head (the last Split) repeats, if any. A nil
// HeadLines has none.
func (h *HeadLines) Parsed(i int) (Field, bool) {
	if h == nil || i >= len(h.from) {
		return Field{}, false
	}
	if j := h.from[i]; j >= 0 && j < len(h.prevFields) && h.prevFields[j].Name != "" {
		return h.prevFields[j], true
	}
	return Field{}, false
}

// SetParsed records f as the parse of line i of the current head, which the
// caller has validated; the next head may take it back with Parsed. Lines
// past MaxReusedFields are not recorded; a nil HeadLines records nothing.
func (h *HeadLines) SetParsed(i int, f Field) {
	if h != nil && i < len(h.fields) {
		h.fields[i] = f
	}
}

// Split returns the lines of head, a message head up to and including
// its terminating empty line (or all of it when there is none), each
// line without its "\n" or "\r\n". The slice is valid until the next
// Split.
func (h *HeadLines) Split(head []byte) []string {
	spans, from := h.spans[:0], h.from[:0]
	size := 0 // bytes of the lines the previous head does not have
	for start := 0; start < len(head); {
		end, next := len(head), len(head)
		if i := bytes.IndexByte(head[start:], '\n'); i >= 0 {
			end, next = start+i, start+i+1
		}
		if end > start && head[end-1] == '\r' {
			end--
		}
		if end == start { // the empty line ends the head
			break
		}
		j := h.match(head[start:end], len(from))
		if j < 0 {
			size += end - start
		}
		spans, from = append(spans, start, end), append(from, j)
		start = next
	}
	h.spans, h.from = spans, from
	var fresh string
	if size > 0 {
		var b strings.Builder
		b.Grow(size)
		for i, j := range from {
			if j < 0 {
				b.Write(head[spans[2*i]:spans[2*i+1]])
			}
		}
		fresh = b.String()
	}
	lines := h.cur[:0]
	for i, j := range from {
		if j >= 0 {
			lines = append(lines, h.prev[j])
			continue
		}
		n := spans[2*i+1] - spans[2*i]
		lines = append(lines, fresh[:n])
		fresh = fresh[n:]
	}
	clear(h.prev) // drop the older strings; the slice is the next scratch
	h.prev, h.cur = lines, h.prev
	// The records of the head just replaced are the previous ones now; the
	// older ones make room for this head's.
	h.prevFields, h.fields = h.fields, h.prevFields
	n := min(len(lines), MaxReusedFields+1)
	if cap(h.fields) < n {
		h.fields = make([]Field, n, max(n, 8))
	} else {
		h.fields = h.fields[:n]
		clear(h.fields)
	}
	return lines
}

// match returns the index of the previous head's line equal to b, trying
// index i (the same position) first, or -1. Other positions are searched
// only when the previous head had at most MaxReusedFields lines, so a
// head of many short lines costs no more than linear time.
func (h *HeadLines) match(b []byte, i int) int {
	if i < len(h.prev) && h.prev[i] == string(b) {
		return i
	}
	if len(h.prev) > MaxReusedFields {
		return -1
	}
	for j, l := range h.prev {
		if len(l) == len(b) && l == string(b) {
			return j
		}
	}
	return -1
}
