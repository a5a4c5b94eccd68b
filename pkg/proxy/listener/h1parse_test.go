package listener

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/proxy/internal/httpwire"
)

// FuzzParseRequest feeds arbitrary bytes to the request-head parser and
// the chunked decoder. Whatever the parser accepts must be accepted by
// net/http's http.ReadRequest too (the parser is stricter, never looser)
// and read the same way: method, target, Host, fields, framing.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a/b?c=d&e HTTP/1.1\r\nHost: svc:9080\r\nUser-Agent: t\r\naccept: */*\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: A\r\n\r\n3;e=1\r\nabc\r\n0\r\nA: b\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET http://svc:80/x%2Fy?q HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://reviews.default:9080/a/b;c@d?e=f HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://Svc.EXAMPLE/ HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://svc:/x? HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET http://u@svc/x HTTP/1.1\r\nHost: h\r\n\r\n",
		"CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n",
		"OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nFoo: a\r\n b\r\n\r\n",
		"\r\nGET /%zz HTTP/1.1\nHost: x\nExpect: 100-continue\n\n",
		"PUT /\xff HTTP/1.1\r\nHost: \xc3\xa9\r\nX: \x80\t\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 64)
		var head []byte
		if err := readHeadBytes(br, &head, 8<<10); err != nil {
			return
		}
		h := new(h1Head)
		if err := parseHead(nil, splitHead(string(head)), h, nil); err != nil {
			return
		}
		if !isToken(h.method) || h.target == "" || h.major != 1 {
			t.Fatalf("accepted bad request line: %+v", h)
		}
		if h.chunked != (h.contentLength == -1) || h.contentLength < -1 {
			t.Fatalf("framing: chunked %v length %d", h.chunked, h.contentLength)
		}
		u, err := requestURL(h.method, h.target, nil)
		if err != nil {
			return
		}
		if h.method != http.MethodConnect { // the fast paths build what url.ParseRequestURI does
			if pu, err := url.ParseRequestURI(h.target); err != nil || !reflect.DeepEqual(*pu, *u) {
				t.Fatalf("target %q: %#v, url.ParseRequestURI %#v (%v)", h.target, u, pu, err)
			}
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v):\n%q", err, head)
		}
		host := u.Host
		if host == "" {
			host = h.host
		}
		if std.Method != h.method || std.RequestURI != h.target || std.URL.String() != u.String() || std.Host != host ||
			std.ContentLength != h.contentLength || std.Close != !h.keepAlive || std.ProtoMinor != h.minor {
			t.Fatalf("read differently from net/http:\nours %q %q %q host %q len %d keep-alive %v\nstd  %q %q %q host %q len %d close %v",
				h.method, h.target, u, host, h.contentLength, h.keepAlive,
				std.Method, std.RequestURI, std.URL, std.Host, std.ContentLength, std.Close)
		}
		if _, ok := std.Header["Pragma"]; ok { // net/http adds Cache-Control for HTTP/1.0 caches
			std.Header.Del("Cache-Control")
			h.header.Del("Cache-Control")
		}
		if !reflect.DeepEqual(map[string][]string(std.Header), map[string][]string(h.header)) {
			t.Fatalf("fields differ:\nours %q\nstd  %q", h.header, std.Header)
		}
		if !h.chunked {
			return
		}
		// The chunked body: what we decode, net/http decodes alike.
		rest, _ := io.ReadAll(br)
		var tr http.Header
		ours, oerr := io.ReadAll(&chunkedReader{br: bufio.NewReaderSize(bytes.NewReader(rest), 64), trailer: &tr})
		if oerr != nil {
			return
		}
		std, err = http.ReadRequest(bufio.NewReader(io.MultiReader(bytes.NewReader(head), bytes.NewReader(rest))))
		if err != nil {
			t.Fatal(err)
		}
		theirs, serr := io.ReadAll(std.Body)
		if serr != nil {
			t.Fatalf("decoded chunked body %q that net/http refuses: %v", ours, serr)
		}
		if !bytes.Equal(ours, theirs) {
			t.Fatalf("chunked body %q, net/http %q", ours, theirs)
		}
	})
}

// splitHead is the lines of a head, as the server gets them from its
// connection's httpwire.HeadLines.
func splitHead(s string) []string {
	var hl httpwire.HeadLines
	return hl.Split([]byte(s))
}

// TestParseHeadSlicesOneString checks that parsed values share the head
// string (no per-field copies) and that keys are canonical.
func TestParseHeadSlicesOneString(t *testing.T) {
	s := "GET /x HTTP/1.1\nHost: h\nX-A: 1\nx-b: 2\nX-A: 3\n"
	h := new(h1Head)
	if err := parseHead(nil, splitHead(s), h, nil); err != nil {
		t.Fatal(err)
	}
	if got := h.header["X-A"]; !reflect.DeepEqual(got, []string{"1", "3"}) {
		t.Errorf("X-A %q", got)
	}
	if got := h.header.Get("X-B"); got != "2" {
		t.Errorf("X-B %q", got)
	}
	if h.host != "h" || !strings.Contains(s, h.header["X-A"][0]) {
		t.Errorf("host %q", h.host)
	}
	// Canonical, distinct keys (what HTTP/1 clients send): the map and
	// one array of values, no per-field strings.
	s = "GET /x HTTP/1.1\nHost: h\nUser-Agent: fortio\nAccept: */*\nX-Request-Id: 1234\nContent-Length: 0\n"
	lines := splitHead(s)
	allocs := testing.AllocsPerRun(100, func() {
		_ = parseHead(nil, lines, h, nil)
	})
	if allocs > 3 {
		t.Errorf("parseHead: %.0f allocations, want at most 3 (header map, values array)", allocs)
	}
	// A connection's scratch: the map and array are reused, cleared of
	// the previous request's fields.
	var sc httpwire.HeaderScratch
	if err := parseHead(nil, splitHead("GET / HTTP/1.1\nHost: h\nX-Old: 1\nX-Old: 2\nX-Other: 3\n"), h, &sc); err != nil {
		t.Fatal(err)
	}
	allocs = testing.AllocsPerRun(100, func() {
		_ = parseHead(nil, lines, h, &sc)
	})
	if allocs > 0 {
		t.Errorf("parseHead with a connection's scratch: %.0f allocations, want 0", allocs)
	}
	if len(h.header) != 4 || h.header["X-Old"] != nil || h.header.Get("User-Agent") != "fortio" {
		t.Errorf("reused header: %v", h.header)
	}
}

// TestParseHeadRepeatedLines parses requests one after another with one
// HeadLines, as a kept-alive connection does: repeated lines come from the
// previous request's parse, so each request must parse as it does alone,
// and a bad line must be refused every time, not only the first.
func TestParseHeadRepeatedLines(t *testing.T) {
	var hl httpwire.HeadLines
	var sc httpwire.HeaderScratch
	seq := []struct {
		raw     string
		wantErr bool
	}{
		{raw: "GET /a HTTP/1.1\nHost: h\nuser-agent:  fortio \nX-Request-Id: 1\n"},
		{raw: "GET /b HTTP/1.1\nX-Request-Id: 2\nuser-agent:  fortio \nHost: h\n"},
		{raw: "GET /c HTTP/1.1\nHost: h\nX-Bad: a\x01b\n", wantErr: true},
		{raw: "GET /c HTTP/1.1\nHost: h\nX-Bad: a\x01b\n", wantErr: true},
		{raw: "GET /d HTTP/1.1\nHost: h\nuser-agent:  fortio \nUser-Agent: other\n"},
		{raw: "GET /e HTTP/1.1\nHost: h\nHost: h\n", wantErr: true},
	}
	for i, s := range seq {
		var got, alone h1Head
		err := parseHead(&hl, hl.Split([]byte(s.raw)), &got, &sc)
		if s.wantErr {
			if err == nil {
				t.Errorf("request %d: no error", i)
			}
			continue
		}
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := parseHead(nil, splitHead(s.raw), &alone, nil); err != nil {
			t.Fatal(err)
		}
		if got.target != alone.target || got.host != alone.host || !reflect.DeepEqual(got.header, alone.header) {
			t.Errorf("request %d: %s %q %v, alone %s %q %v", i, got.target, got.host, got.header, alone.target, alone.host, alone.header)
		}
	}
}
