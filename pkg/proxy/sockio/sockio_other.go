//go:build !linux

package sockio

import "net"

// Wrap returns c unchanged on systems other than Linux.
func Wrap(c net.Conn) net.Conn { return c }

// Listener is the listener unchanged on systems other than Linux.
type Listener struct{ net.Listener }
