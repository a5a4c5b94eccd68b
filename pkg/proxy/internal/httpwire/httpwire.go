// Package httpwire holds the small HTTP/1.1 field helpers that the proxy's
// own request parser (pkg/proxy/listener) and its upstream response reader
// (pkg/proxy/cluster) share. They allocate nothing.
package httpwire

import "strings"

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
