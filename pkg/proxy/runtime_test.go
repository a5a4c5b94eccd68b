package proxy

import "testing"

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
