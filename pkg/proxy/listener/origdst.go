package listener

import (
	"context"
	"net"
	"net/netip"
)

type origDstKey struct{}

// WithOriginalDst records a captured connection's original destination
// (SO_ORIGINAL_DST) in ctx; the handlers route by it in capture mode.
func WithOriginalDst(ctx context.Context, dst netip.AddrPort) context.Context {
	return context.WithValue(ctx, origDstKey{}, dst)
}

// OriginalDst returns the original destination recorded by WithOriginalDst.
func OriginalDst(ctx context.Context) (netip.AddrPort, bool) {
	d, ok := ctx.Value(origDstKey{}).(netip.AddrPort)
	return d, ok && d.IsValid()
}

// UnderlyingTCP unwraps connections (sniffed, peeked) down to the
// *net.TCPConn, or returns nil.
func UnderlyingTCP(c net.Conn) *net.TCPConn {
	for i := 0; i < 8 && c != nil; i++ {
		switch x := c.(type) {
		case *net.TCPConn:
			return x
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			return nil
		}
	}
	return nil
}
