// Command floorrelay is the data-plane benchmark's yardstick for the Go
// runtime's floor: a minimal HTTP/1.1 keep-alive relay that does what the
// weft proxy does with sockets (pkg/proxy/sockio: raw non-blocking reads
// and writes, waits in Go's poller, a request or response sent by the
// next read) and nothing else: no header parsing beyond the message
// framing, no routing, no telemetry. Every downstream connection gets its
// own upstream connection; a request is relayed whole, then its answer.
//
// It handles what the benchmark sends: requests without a body, answers
// with a Content-Length. It is not a proxy for anything else.
//
// Usage: floorrelay LISTEN_ADDR UPSTREAM_ADDR
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"

	"github.com/weftmesh/weft/pkg/proxy/sockio"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: floorrelay LISTEN_ADDR UPSTREAM_ADDR")
		os.Exit(2)
	}
	l, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go relay(sockio.Wrap(c), os.Args[2])
	}
}

// relay serves one downstream connection until either side closes.
func relay(down net.Conn, upAddr string) {
	defer down.Close()
	uc, err := net.Dial("tcp", upAddr)
	if err != nil {
		log.Print(err)
		return
	}
	up := sockio.Wrap(uc)
	defer up.Close()
	dd, ud := sockio.DeferrerOf(down), sockio.DeferrerOf(up)
	if dd == nil || ud == nil {
		log.Print("floorrelay: sockio does not wrap these connections on this system")
		return
	}
	req, resp := make([]byte, 16<<10), make([]byte, 16<<10)
	uw, dw := bufio.NewWriterSize(up, 4096), bufio.NewWriterSize(down, 4096)
	for {
		n, err := readMessage(down, req, false)
		if err != nil {
			return
		}
		_, _ = uw.Write(req[:n])
		if ud.DeferFlush(uw) != nil {
			return
		}
		if n, err = readMessage(up, resp, true); err != nil {
			return
		}
		_, _ = dw.Write(resp[:n])
		if dd.DeferFlush(dw) != nil {
			return
		}
	}
}

var errTooLarge = errors.New("message larger than the relay's buffer")

// readMessage reads one message into buf: a head, and with body its
// Content-Length bytes. It returns the message's length.
func readMessage(c net.Conn, buf []byte, body bool) (int, error) {
	n := 0
	for {
		if n == len(buf) {
			return 0, errTooLarge
		}
		m, err := c.Read(buf[n:])
		if err != nil {
			return 0, err
		}
		n += m
		end := bytes.Index(buf[:n], []byte("\r\n\r\n"))
		if end < 0 {
			continue
		}
		total := end + 4
		if body {
			cl, err := contentLength(buf[:end+2])
			if err != nil {
				return 0, err
			}
			total += cl
		}
		if total > len(buf) {
			return 0, errTooLarge
		}
		if n > total {
			return 0, errors.New("bytes after the message (pipelining is not supported)")
		}
		for n < total {
			m, err := c.Read(buf[n:])
			if err != nil {
				return 0, err
			}
			n += m
		}
		return n, nil
	}
}

// contentLength finds the Content-Length field in head (its lines end
// in CRLF).
func contentLength(head []byte) (int, error) {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("Content-Length")) {
			return strconv.Atoi(string(bytes.TrimSpace(value)))
		}
	}
	return 0, errors.New("answer without Content-Length")
}
