package pathnorm

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in   string
		mode Mode
		want string
		err  bool
	}{
		{"/", Base, "/", false},
		{"", Base, "/", false},
		{"/a/b", Base, "/a/b", false},
		{"/%61dmin", Base, "/admin", false},
		{"/%7euser", Base, "/~user", false},
		{"/a%2fb", Base, "/a%2Fb", false},
		{"/a%2Fb", DecodeAndMergeSlashes, "/a/b", false},
		{"/a%5Cb", DecodeAndMergeSlashes, "/a/b", false},
		{"/a%5cb", Base, "/a%5Cb", false},
		{"/a%20b", Base, "/a%20b", false},
		{"/a/./b", Base, "/a/b", false},
		{"/a/../b", Base, "/b", false},
		{"/../../b", Base, "/b", false},
		{"/a/b/..", Base, "/a/", false},
		{"/a/b/.", Base, "/a/b/", false},
		{"/a/%2e%2e/b", Base, "/b", false},
		{"/a/.%2E/b", Base, "/b", false},
		{"/a/..%2Fb", Base, "/a/..%2Fb", false},
		{"/a/..%2Fb", DecodeAndMergeSlashes, "/b", false},
		{"/a\\..\\b", Base, "/b", false},
		{"//a//b", Base, "//a//b", false},
		{"//a//b", MergeSlashes, "/a/b", false},
		{"/a//../b", MergeSlashes, "/b", false},
		{"%2Fadmin", DecodeAndMergeSlashes, "/admin", false},
		{"%2Fadmin", Base, "", true},
		{"/a?x=/../y", Base, "/a?x=/../y", false},
		{"/a/../b?x", Base, "/b?x", false},
		{"/a#frag", Base, "/a", false},
		{"/..%2f..%2f", DecodeAndMergeSlashes, "/", false},
		{"/a%", Base, "", true},
		{"/a%2", Base, "", true},
		{"/a%zz", Base, "", true},
		{"/a%00", Base, "", true},
		{"a/b", Base, "", true},
		{"/a/../b", None, "/a/../b", false},
		{"/...", Base, "/...", false},
		{"/a/..b", Base, "/a/..b", false},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in, tt.mode)
		if tt.err {
			if err == nil || !errors.Is(err, ErrInvalidPath) {
				t.Errorf("Normalize(%q, %v) = %q, %v; want ErrInvalidPath", tt.in, tt.mode, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q, %v) = %q, %v; want %q", tt.in, tt.mode, got, err, tt.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"DEFAULT", "BASE", "NONE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES", ""} {
		m, err := ParseMode(s)
		if err != nil {
			t.Fatalf("ParseMode(%q): %v", s, err)
		}
		if s != "" && s != "DEFAULT" && m.String() != s {
			t.Errorf("ParseMode(%q).String() = %q", s, m)
		}
	}
	if _, err := ParseMode("BOGUS"); err == nil {
		t.Error("ParseMode(BOGUS) succeeded")
	}
}

func TestNormalizedNoAlloc(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		if _, err := Normalize("/api/v1/items", Base); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("allocs for an already-normal path = %v, want 0", n)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//a", "/%2e%2e/x", "/a%2Fb", "\\a", "/a/./b/", "/%", "/.%2e/", "%2F"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if strings.ContainsAny(in, "?#") {
			return // query and fragment are carried, not normalized
		}
		for _, m := range []Mode{Base, MergeSlashes, DecodeAndMergeSlashes} {
			out, err := Normalize(in, m)
			if err != nil {
				continue
			}
			if !strings.HasPrefix(out, "/") {
				t.Fatalf("%v: Normalize(%q) = %q, not absolute", m, in, out)
			}
			if strings.Contains(out, "/../") || strings.HasSuffix(out, "/..") || strings.Contains(out, "/./") || strings.HasSuffix(out, "/.") {
				t.Fatalf("%v: Normalize(%q) = %q has dot segments", m, in, out)
			}
			if strings.Contains(out, "\\") {
				t.Fatalf("%v: Normalize(%q) = %q has a backslash", m, in, out)
			}
			if m != Base && strings.Contains(out, "//") {
				t.Fatalf("%v: Normalize(%q) = %q has //", m, in, out)
			}
			again, err := Normalize(out, m)
			if err != nil || again != out {
				t.Fatalf("%v: not idempotent: %q -> %q -> %q, %v", m, in, out, again, err)
			}
		}
	})
}
