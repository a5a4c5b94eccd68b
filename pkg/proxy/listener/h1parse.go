package listener

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/weftmesh/weft/pkg/proxy/internal/httpwire"
)

// This file is the request side of the proxy's own HTTP/1.1 server
// (h1server.go): a request-line + header parser following RFC 9112 that
// copies the head once into a single string and slices keys and values
// out of it, and the chunked body decoder.

// h1Error is a request the server refuses before the handler runs; the
// connection is answered with status and closed.
type h1Error struct {
	status int
	msg    string
}

func (e *h1Error) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func badRequest(msg string) error { return &h1Error{status: http.StatusBadRequest, msg: msg} }

// h1Head is a parsed request head.
type h1Head struct {
	method, target string
	major, minor   int
	header         http.Header
	host           string // the Host header (validated)
	contentLength  int64  // -1 with chunked
	chunked        bool
	keepAlive      bool
	expectContinue bool
	trailer        http.Header // declared trailer keys (chunked only)
}

// tokenTable marks RFC 9110 tchar bytes (method and field names).
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// pathSafe marks bytes a request path may hold unchanged by url parsing
// (unreserved, sub-delims, ':', '@', '/'): a target of only these needs no
// url.ParseRequestURI.
var pathSafe = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,;=:@/" {
		t[c] = true
	}
	return t
}()

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenTable[s[i]] {
			return false
		}
	}
	return true
}

// parseField splits and checks one request header line. The name comes
// back canonical (no allocation when already canonical or common), the
// value without optional whitespace around it.
func parseField(line string) (httpwire.Field, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return httpwire.Field{}, badRequest("obsolete line folding in header")
	}
	k, v, ok := strings.Cut(line, ":")
	if !ok {
		return httpwire.Field{}, badRequest("malformed header line")
	}
	if !isToken(k) {
		return httpwire.Field{}, badRequest("invalid header field name")
	}
	v = httpwire.TrimOWS(v)
	if !httpwire.ValidFieldValue(v) {
		return httpwire.Field{}, badRequest("invalid header field value")
	}
	return httpwire.Field{Name: textproto.CanonicalMIMEHeaderKey(k), Value: v}, nil
}

// validHost accepts what net/http's server does for Host: printable
// ASCII of URL authorities (letters, digits, -._~:[]%!$&'()*+,;=@),
// plus obs-text for IDNs.
func validHost(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || pathSafe[c] && c != '/' {
			continue
		}
		switch c {
		case '[', ']', '%':
			continue
		}
		return false
	}
	return true
}

// readHeadBytes reads the request head (request line through the empty
// line) into *buf, normalizing line ends to "\n". Up to 4 empty lines
// before the request line are skipped (RFC 9112 §2.2). A bare CR is an
// error. max bounds the head's size (431 beyond it).
func readHeadBytes(br *bufio.Reader, buf *[]byte, max int) error {
	b := (*buf)[:0]
	defer func() { *buf = b }()
	lineStart := 0
	skipped := 0
	for {
		frag, err := br.ReadSlice('\n')
		if len(b)+len(frag) > max {
			return &h1Error{status: http.StatusRequestHeaderFieldsTooLarge, msg: "request header fields too large"}
		}
		b = append(b, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if len(b) == 0 && errors.Is(err, io.EOF) {
				return io.EOF
			}
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		// b[lineStart:] is one line ending in '\n'.
		end := len(b) - 1
		if end > lineStart && b[end-1] == '\r' {
			end--
		}
		for _, c := range b[lineStart:end] {
			if c == '\r' {
				return badRequest("bare CR in request head")
			}
		}
		if end == lineStart { // empty line
			if lineStart == 0 { // before the request line
				if skipped++; skipped > 4 {
					return badRequest("too many empty lines before the request line")
				}
				b = b[:0]
				continue
			}
			b = append(b[:end], '\n')
			return nil
		}
		b = append(b[:end], '\n')
		lineStart = len(b)
	}
}

// parseHead parses into h the lines of a head read by readHeadBytes (see
// httpwire.HeadLines: at most one allocation, none for lines that repeat
// the connection's previous request): substrings of the lines become the
// method, target, header keys (when already canonical) and values. The
// header map and its value array come from sc (reused) when it is not nil.
// With hl (the HeadLines that split lines), a field line that repeats one
// of the previous request's is not checked again (HeadLines.Parsed).
func parseHead(hl *httpwire.HeadLines, lines []string, h *h1Head, sc *httpwire.HeaderScratch) error {
	*h = h1Head{}
	if len(lines) == 0 {
		return badRequest("malformed request line")
	}
	line := lines[0]
	var ok bool
	h.method, line, ok = strings.Cut(line, " ")
	if !ok {
		return badRequest("malformed request line")
	}
	var proto string
	h.target, proto, ok = strings.Cut(line, " ")
	if !ok || h.target == "" {
		return badRequest("malformed request line")
	}
	if !isToken(h.method) {
		return badRequest("invalid method")
	}
	for i := 0; i < len(h.target); i++ {
		if c := h.target[i]; c <= ' ' || c == 0x7f {
			return badRequest("invalid request target")
		}
	}
	switch proto {
	case "HTTP/1.1":
		h.major, h.minor = 1, 1
	case "HTTP/1.0":
		h.major, h.minor = 1, 0
	default:
		if len(proto) != 8 || !strings.HasPrefix(proto, "HTTP/") || proto[6] != '.' ||
			proto[5] < '0' || proto[5] > '9' || proto[7] < '0' || proto[7] > '9' {
			return badRequest("malformed HTTP version")
		}
		if proto[5] != '1' {
			return &h1Error{status: http.StatusHTTPVersionNotSupported, msg: "unsupported protocol version"}
		}
		h.major, h.minor = 1, int(proto[7]-'0')
	}
	var vals []string // one backing array for every single-valued field
	h.header, vals = sc.Take(len(lines) - 1)
	var hosts, cls, tes, expects int
	var connClose, connKeepAlive bool
	var cl, te string
	for i, line := range lines[1:] {
		f, ok := hl.Parsed(i + 1) // a line the previous request had: checked then
		if !ok {
			var err error
			if f, err = parseField(line); err != nil {
				return err
			}
		}
		hl.SetParsed(i+1, f)
		k, v := f.Name, f.Value
		switch k {
		case "Host":
			hosts++
			h.host = v
			continue // as net/http: the Host field becomes Request.Host only
		case "Content-Length":
			if cls++; cls > 1 && v != cl {
				return badRequest("conflicting Content-Length")
			}
			if cls > 1 {
				continue
			}
			cl = v
		case "Transfer-Encoding":
			tes++
			te = v
			continue
		case "Connection":
			connClose = connClose || httpwire.HasToken(v, "close")
			connKeepAlive = connKeepAlive || httpwire.HasToken(v, "keep-alive")
		case "Expect":
			expects++
			if !strings.EqualFold(v, "100-continue") || expects > 1 {
				return &h1Error{status: http.StatusExpectationFailed, msg: "unsupported Expect"}
			}
		}
		if old := h.header[k]; old != nil {
			h.header[k] = append(old, v)
			continue
		}
		vals[i] = v
		h.header[k] = vals[i : i+1 : i+1]
	}
	if hosts > 1 {
		return badRequest("too many Host headers")
	}
	if hosts == 0 && h.minor >= 1 && h.method != http.MethodConnect {
		return badRequest("missing required Host header")
	}
	if !validHost(h.host) {
		return badRequest("malformed Host header")
	}
	h.keepAlive = !connClose && (h.minor >= 1 || connKeepAlive)
	if tes > 0 {
		// RFC 9112 §6.1: only "chunked", only on HTTP/1.1, never with a
		// Content-Length (a smuggling vector net/http tolerates by
		// dropping Content-Length; a proxy refuses).
		if h.minor == 0 {
			return badRequest("Transfer-Encoding on an HTTP/1.0 request")
		}
		if tes > 1 || !strings.EqualFold(te, "chunked") {
			return &h1Error{status: http.StatusNotImplemented, msg: "unsupported transfer encoding"}
		}
		if cls > 0 {
			return badRequest("both Transfer-Encoding and Content-Length")
		}
		h.chunked = true
		h.contentLength = -1
		if tv := h.header["Trailer"]; tv != nil {
			delete(h.header, "Trailer")
			h.trailer = http.Header{}
			for _, v := range tv {
				for _, f := range strings.Split(v, ",") {
					f = textproto.CanonicalMIMEHeaderKey(httpwire.TrimOWS(f))
					switch f {
					case "":
						continue
					case "Transfer-Encoding", "Trailer", "Content-Length", "Host":
						return badRequest("bad trailer key")
					}
					h.trailer[f] = nil
				}
			}
		}
	} else if cls > 0 {
		n, ok := httpwire.ParseContentLength(cl)
		if !ok {
			return badRequest("bad Content-Length")
		}
		h.contentLength = n
	}
	if h.contentLength == 0 || h.minor == 0 {
		h.expectContinue = false
	} else {
		h.expectContinue = expects > 0
	}
	return nil
}

// requestURL parses the request target like net/http's server: origin
// form (fast path without url parsing for plain paths, into *dst when dst
// is not nil), absolute form, authority form for CONNECT, and "*".
func requestURL(method, target string, dst *url.URL) (*url.URL, error) {
	if method == http.MethodConnect && target[0] != '/' {
		u, err := url.ParseRequestURI("http://" + target)
		if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" {
			return nil, badRequest("malformed CONNECT target")
		}
		u.Scheme = ""
		return u, nil
	}
	if rest, ok := strings.CutPrefix(target, "http://"); ok { // absolute form (HTTP_PROXY clients)
		if u := fastAbsoluteURL(rest, dst); u != nil {
			return u, nil
		}
	}
	if target[0] == '/' {
		path, q, hasQ := strings.Cut(target, "?")
		fast := !(hasQ && q == "")
		for i := 0; fast && i < len(path); i++ {
			fast = pathSafe[path[i]]
		}
		if fast {
			if dst == nil {
				dst = new(url.URL)
			}
			*dst = url.URL{Path: path, RawQuery: q}
			return dst, nil
		}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, badRequest("malformed request target")
	}
	return u, nil
}

// fastAbsoluteURL is url.ParseRequestURI("http://"+rest) for the plain
// case, into *dst (nil: new): a host of letters, digits, '.', '-' and an
// optional numeric port, then a path of pathSafe bytes and an optional
// non-empty query. Anything else returns nil (parse it fully).
func fastAbsoluteURL(rest string, dst *url.URL) *url.URL {
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return nil
	}
	host := rest[:slash]
	name, port, hasPort := strings.Cut(host, ":")
	if name == "" || hasPort && port == "" {
		return nil
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return nil
		}
	}
	for i := 0; i < len(port); i++ {
		if c := port[i]; c < '0' || c > '9' {
			return nil
		}
	}
	path, q, hasQ := strings.Cut(rest[slash:], "?")
	if hasQ && q == "" {
		return nil
	}
	for i := 0; i < len(path); i++ {
		if !pathSafe[path[i]] {
			return nil
		}
	}
	if dst == nil {
		dst = new(url.URL)
	}
	*dst = url.URL{Scheme: "http", Host: host, Path: path, RawQuery: q}
	return dst
}

// chunkedReader decodes a chunked request body from br (RFC 9112 §7.1):
// chunk extensions are ignored, sizes must be hex (at most 16 digits),
// each chunk ends in CRLF, and trailer fields after the last chunk are
// merged into trailer.
type chunkedReader struct {
	br      *bufio.Reader
	left    uint64 // bytes left in the current chunk
	inChunk bool
	done    bool
	err     error
	trailer *http.Header
	// excess bounds the overhead of chunk framing relative to data, as
	// net/http does against tiny-chunk floods.
	excess int64
}

var errMalformedChunk = errors.New("malformed chunked encoding")

func (cr *chunkedReader) Read(p []byte) (int, error) {
	if cr.err != nil {
		return 0, cr.err
	}
	for !cr.inChunk {
		if cr.done {
			return 0, io.EOF
		}
		if err := cr.nextChunk(); err != nil {
			cr.err = err
			return 0, err
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if uint64(len(p)) > cr.left {
		p = p[:cr.left]
	}
	n, err := cr.br.Read(p)
	cr.left -= uint64(n)
	cr.excess -= int64(n)
	if cr.excess < 0 {
		cr.excess = 0
	}
	if cr.left == 0 {
		cr.inChunk = false
		var crlf [2]byte
		if _, err2 := io.ReadFull(cr.br, crlf[:]); err2 != nil || crlf != [2]byte{'\r', '\n'} {
			if err2 == nil || errors.Is(err2, io.EOF) {
				err2 = errMalformedChunk
			}
			cr.err = err2
			return n, err2
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		cr.err = err
	}
	return n, err
}

func readChunkLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		} else if errors.Is(err, bufio.ErrBufferFull) {
			err = errors.New("chunk line too long")
		}
		return "", err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return "", errMalformedChunk
	}
	return string(line[:len(line)-2]), nil
}

func (cr *chunkedReader) nextChunk() error {
	line, err := cr.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return errors.New("chunk line too long")
		}
		return err
	}
	cr.excess += int64(len(line)) + 2
	if cr.excess > 16*1024 {
		return errors.New("chunked encoding contains too much non-data")
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return errMalformedChunk
	}
	line = line[:len(line)-2]
	if i := strings.IndexByte(string(line), ';'); i >= 0 { // no allocation: compiler-recognized conversion
		line = line[:i]
	}
	for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
		line = line[:len(line)-1]
	}
	if len(line) == 0 || len(line) > 16 {
		return errMalformedChunk
	}
	var n uint64
	for _, c := range line {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return errMalformedChunk
		}
		n = n<<4 | uint64(c)
	}
	if n > 1<<62 {
		return errMalformedChunk
	}
	if n > 0 {
		cr.left, cr.inChunk = n, true
		return nil
	}
	// Last chunk: trailer section, then the empty line.
	size := 0
	for {
		l, err := readChunkLine(cr.br)
		if err != nil {
			return err
		}
		if l == "" {
			break
		}
		if size += len(l); size > 64*1024 {
			return errors.New("trailer too large")
		}
		if l[0] == ' ' || l[0] == '\t' {
			return errMalformedChunk
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || !isToken(k) {
			return errMalformedChunk
		}
		v = httpwire.TrimOWS(v)
		if !httpwire.ValidFieldValue(v) {
			return errMalformedChunk
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		switch k {
		case "Transfer-Encoding", "Trailer", "Content-Length", "Host":
			continue // never merged from trailers
		}
		if cr.trailer != nil {
			if *cr.trailer == nil {
				*cr.trailer = http.Header{}
			}
			(*cr.trailer)[k] = append((*cr.trailer)[k], v)
		}
	}
	cr.done = true
	return nil
}
