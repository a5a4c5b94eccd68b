package sockio

import (
	"bufio"
	"net"
)

// Deferrer is a connection whose flushes can wait for its next read
// (*Conn on Linux; see DeferFlush).
type Deferrer interface {
	DeferFlush(w *bufio.Writer) error
	SendPending() error
	AfterSend(fn func())
}

// DeferrerOf returns the Deferrer c is or wraps (through NetConn, as
// *tls.Conn has), or nil.
func DeferrerOf(c net.Conn) Deferrer {
	for c != nil {
		if d, ok := c.(Deferrer); ok {
			return d
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = w.NetConn()
	}
	return nil
}
