package jwt

import (
	"net/http"
	"net/url"
	"strings"

	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

type locKind int

const (
	locHeader locKind = iota
	locParam
	locCookie
)

// location is where a provider looks for its token.
type location struct {
	kind   locKind
	name   string
	prefix string // headers only
}

type found struct {
	token string
	loc   location
}

// Locations returns where provider pc looks for tokens: its from_headers,
// from_params and from_cookies or, when none is set, Envoy's defaults
// (Authorization: Bearer, then the access_token query parameter).
func Locations(pc *jwtauthnv3.JwtProvider) []location {
	var out []location
	for _, h := range pc.GetFromHeaders() {
		out = append(out, location{kind: locHeader, name: http.CanonicalHeaderKey(h.GetName()), prefix: h.GetValuePrefix()})
	}
	for _, p := range pc.GetFromParams() {
		out = append(out, location{kind: locParam, name: p})
	}
	for _, c := range pc.GetFromCookies() {
		out = append(out, location{kind: locCookie, name: c})
	}
	if len(out) == 0 {
		out = []location{{kind: locHeader, name: "Authorization", prefix: "Bearer "}, {kind: locParam, name: "access_token"}}
	}
	return out
}

// extract returns the tokens found at locs, in location order. It never
// panics on malformed input; unparsable query strings and cookies yield
// what could be parsed.
func extract(locs []location, h http.Header, rawQuery string, cookies func() []*http.Cookie) []found {
	var out []found
	var q url.Values
	var cs []*http.Cookie
	for _, l := range locs {
		switch l.kind {
		case locHeader:
			for _, v := range h.Values(l.name) {
				if t := tokenAfterPrefix(v, l.prefix); t != "" {
					out = append(out, found{token: t, loc: l})
				}
			}
		case locParam:
			if q == nil {
				q, _ = url.ParseQuery(rawQuery)
				if q == nil {
					q = url.Values{}
				}
			}
			for _, v := range q[l.name] {
				if v != "" {
					out = append(out, found{token: v, loc: l})
				}
			}
		case locCookie:
			if cs == nil && cookies != nil {
				cs = cookies()
			}
			for _, c := range cs {
				if c.Name == l.name && c.Value != "" {
					out = append(out, found{token: c.Value, loc: l})
				}
			}
		}
	}
	return out
}

// tokenAfterPrefix returns the token in header value v after prefix (the
// "Bearer " scheme is matched case-insensitively, as Envoy does), up to
// the first character that cannot be part of a JWT.
func tokenAfterPrefix(v, prefix string) string {
	v = strings.TrimSpace(v)
	if prefix != "" {
		i := indexFold(v, prefix)
		if i < 0 {
			return ""
		}
		v = strings.TrimLeft(v[i+len(prefix):], " ")
	}
	end := strings.IndexFunc(v, func(r rune) bool { return !isJWTChar(r) })
	if end >= 0 {
		v = v[:end]
	}
	return v
}

func isJWTChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '=' || r == '+' || r == '/'
}

// indexFold is a case-insensitive strings.Index for an ASCII needle.
func indexFold(s, sub string) int {
	if len(sub) > len(s) {
		return -1
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}
