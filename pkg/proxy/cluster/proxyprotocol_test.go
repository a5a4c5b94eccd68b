package cluster

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestProxyHeader(t *testing.T) {
	v2 := func(rest ...byte) []byte { return append([]byte("\r\n\r\n\x00\r\nQUIT\n"), rest...) }
	ap := netip.MustParseAddrPort
	cases := []struct {
		name     string
		version  int
		src, dst netip.AddrPort
		want     []byte
	}{
		{"v1 IPv4", 1, ap("10.1.2.3:40000"), ap("127.0.0.1:15001"), []byte("PROXY TCP4 10.1.2.3 127.0.0.1 40000 15001\r\n")},
		{"v1 IPv6", 1, ap("[2001:db8::1]:1234"), ap("[::1]:80"), []byte("PROXY TCP6 2001:db8::1 ::1 1234 80\r\n")},
		{"v1 mapped IPv4", 1, ap("[::ffff:10.0.0.1]:5"), ap("10.0.0.2:6"), []byte("PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n")},
		{"v1 mixed families", 1, ap("10.0.0.1:5"), ap("[::1]:6"), []byte("PROXY UNKNOWN\r\n")},
		{"v1 no addresses", 1, netip.AddrPort{}, netip.AddrPort{}, []byte("PROXY UNKNOWN\r\n")},
		{"v2 IPv4", 2, ap("10.1.2.3:40000"), ap("127.0.0.1:15001"),
			v2(0x21, 0x11, 0, 12, 10, 1, 2, 3, 127, 0, 0, 1, 0x9c, 0x40, 0x3a, 0x99)},
		{"v2 IPv6", 2, ap("[2001:db8::1]:1"), ap("[::1]:2"),
			v2(0x21, 0x21, 0, 36, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
				0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 2)},
		{"v2 mixed families: LOCAL", 2, ap("10.0.0.1:5"), ap("[::1]:6"), v2(0x20, 0, 0, 0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProxyHeader(tc.version, tc.src, tc.dst); !bytes.Equal(got, tc.want) {
				t.Fatalf("ProxyHeader = %q, want %q", got, tc.want)
			}
		})
	}
}
