package proxy

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"", 0, false}, {"0", 0, false}, {"1048576", 1 << 20, false}, {"64MiB", 64 << 20, false},
		{"20MB", 20e6, false}, {"1 GiB", 1 << 30, false}, {"512KiB", 512 << 10, false}, {"10B", 10, false},
		{"-1MiB", 0, true}, {"lots", 0, true}, {"1.5GiB", 0, true},
	} {
		got, err := ParseByteSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestReleaseStartupPages(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	rssFile := func() int64 {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "RssFile:"); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		t.Fatal("no RssFile in /proc/self/status")
		return 0
	}
	before := rssFile()
	n, err := ReleaseStartupPages()
	after := rssFile()
	if err != nil || n <= 0 {
		t.Fatalf("ReleaseStartupPages() = %d, %v", n, err)
	}
	t.Logf("RssFile %d kB -> %d kB", before, after)
	if after >= before {
		t.Errorf("RssFile did not shrink: %d kB -> %d kB", before, after)
	}
	// The code keeps running: the pages fault back in from the executable.
	if got := strings.Repeat("ab", 3); got != "ababab" {
		t.Fatal(got)
	}
}
