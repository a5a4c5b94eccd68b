package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"

	"github.com/weftmesh/weft/pkg/proxy/internal/httpwire"
)

// readResponse reads an HTTP/1.x response head from br and frames its
// body, like http.ReadResponse but copying the head into one string whose
// substrings become the header values (one allocation for all of them;
// none for the lines that repeat the previous head read into the same
// respAlloc, see httpwire.HeadLines).
// Bodies: none for HEAD, 1xx, 204 and 304; chunked (trailers merged into
// Trailer at the end); Content-Length; else until the connection closes.
// Obsolete line folding, conflicting Content-Length and
// Content-Length with chunked are errors.
func readResponse(br *bufio.Reader, req *http.Request, scratch *[]byte) (*http.Response, error) {
	return readResponseInto(br, req, scratch, &respAlloc{})
}

// respAlloc is a response together with its body framing and the pool's
// body wrapper: one allocation per exchange instead of three.
type respAlloc struct {
	resp http.Response
	lb   lengthBody
	hb   h1Body
	hs   httpwire.HeaderScratch // reused header map and value array
	hl   httpwire.HeadLines     // the previous head's lines, reused where equal
}

// readResponseInto is readResponse building the response in ra.
func readResponseInto(br *bufio.Reader, req *http.Request, scratch *[]byte, ra *respAlloc) (*http.Response, error) {
	b := (*scratch)[:0]
	defer func() { *scratch = b[:0] }()
	for {
		frag, err := br.ReadSlice('\n')
		if len(b)+len(frag) > 1<<20 {
			return nil, errors.New("response head too large")
		}
		b = append(b, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		n := len(b)
		if n >= 2 && b[n-2] == '\n' || n >= 3 && b[n-3] == '\n' && b[n-2] == '\r' {
			break // an empty line
		}
	}
	lines := ra.hl.Split(b)
	if len(lines) == 0 {
		return nil, errors.New("malformed HTTP response: empty status line")
	}
	line := lines[0]
	proto, status, ok := strings.Cut(line, " ")
	if !ok || len(status) < 3 || (len(status) > 3 && status[3] != ' ') {
		return nil, fmt.Errorf("malformed HTTP response %q", line)
	}
	code := 0
	for i := 0; i < 3; i++ {
		c := status[i]
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("malformed HTTP status code %q", status)
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return nil, fmt.Errorf("malformed HTTP status code %q", status)
	}
	resp := &ra.resp
	*resp = http.Response{Status: status, StatusCode: code, Proto: proto, ProtoMajor: 1, Request: req}
	switch proto {
	case "HTTP/1.1":
		resp.ProtoMinor = 1
	case "HTTP/1.0":
	default:
		return nil, fmt.Errorf("malformed HTTP version %q", proto)
	}
	hdr, vals := ra.hs.Take(len(lines) - 1)
	var cls, tes int
	var cl, te string
	for i, line := range lines[1:] {
		f, ok := ra.hl.Parsed(i + 1) // a line the previous response had: checked then
		if !ok {
			var err error
			if f, err = parseResponseField(line); err != nil {
				return nil, err
			}
		}
		ra.hl.SetParsed(i+1, f)
		k, v := f.Name, f.Value
		switch k {
		case "Content-Length":
			if cls++; cls > 1 {
				if v != cl {
					return nil, errors.New("conflicting Content-Length in response")
				}
				continue
			}
			cl = v
		case "Transfer-Encoding":
			tes++
			te = v
			continue
		}
		if old := hdr[k]; old != nil {
			hdr[k] = append(old, v)
			continue
		}
		vals[i] = v
		hdr[k] = vals[i : i+1 : i+1]
	}
	resp.Header = hdr
	if hasConnClose(hdr) {
		resp.Close = true
		delete(hdr, "Connection") // as net/http
	} else {
		resp.Close = resp.ProtoMinor == 0 && !hasToken(hdr, "keep-alive")
	}
	noBody := req.Method == http.MethodHead || code/100 == 1 || code == 204 || code == 304
	chunked := false
	if tes > 0 && resp.ProtoMinor >= 1 {
		if tes > 1 || !strings.EqualFold(te, "chunked") {
			return nil, fmt.Errorf("unsupported transfer encoding %q", te)
		}
		if cls > 0 {
			return nil, errors.New("response has both Content-Length and chunked")
		}
		chunked = true
	}
	resp.ContentLength = -1
	if cls > 0 {
		n, ok := httpwire.ParseContentLength(cl)
		if !ok {
			return nil, fmt.Errorf("bad Content-Length %q", cl)
		}
		resp.ContentLength = n
	}
	switch {
	case noBody:
		if code == 204 || code/100 == 1 || code == 304 {
			resp.ContentLength = 0
		}
		resp.Body = http.NoBody
		if req.Method == http.MethodHead || code == 304 {
			// HEAD/304 keep the announced length, as net/http does.
			if cls == 0 {
				resp.ContentLength = -1
			}
		}
	case chunked:
		resp.ContentLength = -1
		resp.TransferEncoding = []string{"chunked"}
		if tv := hdr["Trailer"]; tv != nil {
			delete(hdr, "Trailer")
			resp.Trailer = http.Header{}
			for _, v := range tv {
				for _, f := range strings.Split(v, ",") {
					if f = strings.TrimSpace(f); f != "" {
						resp.Trailer[textproto.CanonicalMIMEHeaderKey(f)] = nil
					}
				}
			}
		}
		resp.Body = &chunkedBody{r: httputil.NewChunkedReader(br), br: br, resp: resp}
	case resp.ContentLength == 0:
		resp.Body = http.NoBody
	case resp.ContentLength > 0:
		ra.lb = lengthBody{br: br, left: resp.ContentLength}
		resp.Body = &ra.lb
	default: // delimited by the connection's close
		resp.Close = true
		resp.Body = io.NopCloser(br)
	}
	return resp, nil
}

// parseResponseField splits and checks one response header line: no
// obsolete line folding, a token before the colon, no control characters
// other than HTAB in the value. The name comes back canonical, the value
// without surrounding spaces and tabs.
func parseResponseField(line string) (httpwire.Field, error) {
	if line[0] == ' ' || line[0] == '\t' {
		return httpwire.Field{}, errors.New("obsolete line folding in response header")
	}
	k, v, ok := strings.Cut(line, ":")
	if !ok || !validFieldName(k) {
		return httpwire.Field{}, fmt.Errorf("malformed response header line %q", line)
	}
	v = httpwire.TrimOWS(v)
	if !httpwire.ValidFieldValue(v) {
		return httpwire.Field{}, fmt.Errorf("invalid response header value for %q", k)
	}
	return httpwire.Field{Name: textproto.CanonicalMIMEHeaderKey(k), Value: v}, nil
}

// hasToken reports whether a Connection field of h lists token.
func hasToken(h http.Header, token string) bool {
	for _, v := range h["Connection"] {
		if httpwire.HasToken(v, token) {
			return true
		}
	}
	return false
}

type lengthBody struct {
	br   *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	if b.left == 0 {
		return n, io.EOF
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }

// chunkedBody decodes a chunked response and then reads its trailer
// section (httputil's reader stops after the last chunk's size line).
type chunkedBody struct {
	r    io.Reader
	br   *bufio.Reader
	resp *http.Response
	done bool
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		if terr := b.readTrailer(); terr != nil {
			return n, terr
		}
		b.done = true
		return n, io.EOF
	}
	return n, err
}

func (b *chunkedBody) readTrailer() error {
	size := 0
	for {
		line, err := b.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read trailer: %w", err)
		}
		if size += len(line); size > 64<<10 {
			return errors.New("response trailer too large")
		}
		l := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
		if l == "" {
			return nil
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || !validFieldName(k) || l[0] == ' ' || l[0] == '\t' {
			return fmt.Errorf("malformed trailer line %q", l)
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		switch k {
		case "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if b.resp.Trailer == nil {
			b.resp.Trailer = http.Header{}
		}
		b.resp.Trailer[k] = append(b.resp.Trailer[k], strings.Trim(v, " \t"))
	}
}

func (b *chunkedBody) Close() error { return nil }
