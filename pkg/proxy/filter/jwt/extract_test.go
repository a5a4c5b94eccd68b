package jwt

import (
	"net/http"
	"strings"
	"testing"
)

func TestTokenAfterPrefix(t *testing.T) {
	tests := []struct{ v, prefix, want string }{
		{"Bearer abc.def.ghi", "Bearer ", "abc.def.ghi"},
		{"bearer abc.def.ghi", "Bearer ", "abc.def.ghi"},
		{"Bearer   abc.def.ghi  ", "Bearer ", "abc.def.ghi"},
		{"Bearer abc.def.ghi, Basic x", "Bearer ", "abc.def.ghi"},
		{"Basic abc", "Bearer ", ""},
		{"", "Bearer ", ""},
		{"Bearer", "Bearer ", ""},
		{"abc.def.ghi", "", "abc.def.ghi"},
		{"Token a.b.c", "Token ", "a.b.c"},
	}
	for _, tt := range tests {
		if got := tokenAfterPrefix(tt.v, tt.prefix); got != tt.want {
			t.Errorf("tokenAfterPrefix(%q, %q) = %q, want %q", tt.v, tt.prefix, got, tt.want)
		}
	}
}

func TestExtractOrder(t *testing.T) {
	locs := []location{{kind: locHeader, name: "Authorization", prefix: "Bearer "}, {kind: locParam, name: "access_token"}, {kind: locCookie, name: "c"}}
	h := http.Header{"Authorization": {"Bearer h.h.h"}}
	got := extract(locs, h, "access_token=q.q.q&x=1", func() []*http.Cookie { return []*http.Cookie{{Name: "c", Value: "c.c.c"}} })
	var toks []string
	for _, f := range got {
		toks = append(toks, f.token)
	}
	if strings.Join(toks, " ") != "h.h.h q.q.q c.c.c" {
		t.Fatalf("tokens %q", toks)
	}
	if got := extract(locs, http.Header{}, "%zz", nil); len(got) != 0 {
		t.Fatalf("bad query: %v", got)
	}
}

// FuzzExtractToken: token extraction from arbitrary headers, query strings
// and cookies never panics and only returns non-empty tokens.
func FuzzExtractToken(f *testing.F) {
	f.Add("Bearer a.b.c", "access_token=x.y.z", "session=a.b.c; other=1", "Bearer ")
	f.Add("bearer ", "%zz&&=", "=;;", "")
	f.Add("Token \x00\xff", "access_token=%00", "session=\"q\"", "Token ")
	f.Fuzz(func(t *testing.T, hv, query, cookie, prefix string) {
		locs := []location{{kind: locHeader, name: "Authorization", prefix: prefix}, {kind: locHeader, name: "X-Jwt", prefix: "Bearer "}, {kind: locParam, name: "access_token"}, {kind: locCookie, name: "session"}}
		h := http.Header{"Authorization": {hv}, "X-Jwt": {hv, prefix}, "Cookie": {cookie}}
		r := &http.Request{Header: h}
		for _, fd := range extract(locs, h, query, r.Cookies) {
			if fd.token == "" {
				t.Fatalf("empty token from %v", fd.loc)
			}
		}
	})
}
