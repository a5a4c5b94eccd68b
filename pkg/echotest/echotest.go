// Package echotest starts TCP echo servers on 127.0.0.1 for tests: the
// opaque TCP application behind a sidecar, or a tunnel's target. Serve is
// also the accept loop of tests' other small servers (TLS upstreams).
package echotest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
)

// Serve accepts connections on l until it is closed, which happens when
// the test ends, and runs handle on each in a goroutine of its own, then
// closes the connection.
func Serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// Start listens on a free port of 127.0.0.1 and serves it as Serve does.
func Start(t testing.TB, handle func(net.Conn)) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, l, handle)
	return l
}

// Bytes sends back every byte it reads, until the peer closes.
func Bytes(c net.Conn) { _, _ = io.Copy(c, c) }

// Lines answers each line it reads with prefix and the line.
func Lines(prefix string) func(net.Conn) {
	return func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := fmt.Fprintf(c, "%s%s\n", prefix, sc.Text()); err != nil {
				return
			}
		}
	}
}
