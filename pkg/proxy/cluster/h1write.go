package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// writeRequest writes req in HTTP/1.1 client form, as req.Write does but
// without its per-request transfer writer, sorted header copy and
// request-URI string: the head (writeHead), then the body (writeBody),
// which it closes.
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	chunked, send, err := writeHead(bw, req)
	if !send {
		closeBody(req)
		return err
	}
	defer req.Body.Close()
	return writeBody(bw, req.Body, req.ContentLength, chunked)
}

// closeBody closes a request body writeHead said not to send.
func closeBody(req *http.Request) {
	if req.Body != nil && req.Body != http.NoBody {
		_ = req.Body.Close()
	}
}

// writeHead writes req's request line and fields: Host, the fields (CR/LF
// in values become spaces, invalid names are refused), framing from
// ContentLength (Content-Length, or chunked when -1 with a body),
// Connection: close when req.Close. Unlike net/http no default User-Agent
// is added (a proxy passes the client's on, or none). Trailers are not
// written. send reports that a body follows (chunked or not), to be
// written with writeBody.
func writeHead(bw *bufio.Writer, req *http.Request) (chunked, send bool, err error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	_, _ = bw.WriteString(method)
	_ = bw.WriteByte(' ')
	if method == http.MethodConnect && req.URL.Path == "" {
		_, _ = bw.WriteString(host)
	} else {
		p := req.URL.EscapedPath() // no allocation when the path needs no escaping
		if p == "" {
			p = "/"
		}
		_, _ = bw.WriteString(p)
		if req.URL.ForceQuery || req.URL.RawQuery != "" {
			_ = bw.WriteByte('?')
			_, _ = bw.WriteString(req.URL.RawQuery)
		}
	}
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = bw.WriteString(sanitizeValue(host))
	_, _ = bw.WriteString("\r\n")
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !validFieldName(k) {
			return false, false, fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vs {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(sanitizeValue(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	switch {
	case req.ContentLength > 0 || (req.ContentLength == 0 && sendsZeroLength(method)):
		_, _ = bw.WriteString("Content-Length: ")
		var nb [20]byte
		_, _ = bw.Write(strconv.AppendInt(nb[:0], req.ContentLength, 10))
		_, _ = bw.WriteString("\r\n")
	case req.ContentLength < 0 && hasBody:
		chunked = true
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if req.Close && !hasConnClose(req.Header) {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return false, false, err
	}
	return chunked, hasBody && req.ContentLength != 0, nil
}

// writeBody writes body after a head that announced n bytes (n > 0) or
// chunked framing, flushing each chunk so the upstream sees it as the
// client sends it. It does not close body.
func writeBody(bw *bufio.Writer, body io.Reader, n int64, chunked bool) error {
	if !chunked {
		w, err := io.Copy(bw, io.LimitReader(body, n))
		if err != nil {
			return fmt.Errorf("write request body: %w", err)
		}
		if w != n {
			return fmt.Errorf("request body: %d of %d bytes: %w", w, n, io.ErrUnexpectedEOF)
		}
		return nil
	}
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			var hx [20]byte
			b := strconv.AppendUint(hx[:0], uint64(n), 16)
			b = append(b, '\r', '\n')
			_, _ = bw.Write(b)
			_, _ = bw.Write(buf[:n])
			if _, werr := bw.WriteString("\r\n"); werr != nil {
				return werr
			}
			if werr := bw.Flush(); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			_, err = bw.WriteString("0\r\n\r\n")
			return err
		}
		if err != nil {
			return fmt.Errorf("read request body: %w", err)
		}
	}
}

var chunkBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// sendsZeroLength: methods whose empty body is announced (as net/http).
func sendsZeroLength(method string) bool {
	return method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
}

func hasConnClose(h http.Header) bool {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "close") {
				return true
			}
		}
	}
	return false
}

func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !fieldNameByte[k[i]] {
			return false
		}
	}
	return true
}

// fieldNameByte marks the bytes validFieldName accepts: visible ASCII
// except the separators "(),/:;<=>?@[\]{} and the double quote.
var fieldNameByte = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = strings.IndexByte("\"(),/:;<=>?@[\\]{}", byte(c)) < 0
	}
	return t
}()

func sanitizeValue(v string) string {
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
		return strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	return v
}
