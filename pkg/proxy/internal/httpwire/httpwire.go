// Package httpwire holds the small HTTP/1.1 field helpers that the proxy's
// own request parser (pkg/proxy/listener) and its upstream response reader
// (pkg/proxy/cluster) share. The field helpers allocate nothing;
// HeaderScratch allocates only when it grows.
package httpwire

import (
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
