package cluster

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestReadResponse compares readResponse with http.ReadResponse.
func TestReadResponse(t *testing.T) {
	cases := []struct {
		name, method, raw string
		wantErr           bool
	}{
		{name: "length", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\nx-b: 3\r\n\r\nhelloNEXT"},
		{name: "chunked trailers", method: "GET", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nGrpc-Status: 0\r\n\r\nNEXT"},
		{name: "head", method: "HEAD", raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nNEXT"},
		{name: "no content", method: "GET", raw: "HTTP/1.1 204 No Content\r\n\r\nNEXT"},
		{name: "not modified", method: "GET", raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\nNEXT"},
		{name: "until close", method: "GET", raw: "HTTP/1.1 200 OK\r\n\r\nall of it"},
		{name: "1.0 keep-alive", method: "GET", raw: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nxNEXT"},
		{name: "1.0 close", method: "GET", raw: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"},
		{name: "connection close", method: "GET", raw: "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"},
		{name: "continue", method: "POST", raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"},
		{name: "bare LF", method: "GET", raw: "HTTP/1.1 200 OK\nContent-Length: 2\n\nokNEXT"},
		{name: "no reason", method: "GET", raw: "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"},
		{name: "conflicting length", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", wantErr: true},
		{name: "length and chunked", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", wantErr: true},
		{name: "obs-fold", method: "GET", raw: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", wantErr: true},
		{name: "bad status", method: "GET", raw: "HTTP/1.1 2x0 OK\r\n\r\n", wantErr: true},
		{name: "truncated", method: "GET", raw: "HTTP/1.1 200 OK\r\nContent-", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "http://x/", nil)
			br := bufio.NewReaderSize(strings.NewReader(tc.raw), 16)
			var scratch []byte
			got, err := readResponse(br, req, &scratch)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gb, gerr := io.ReadAll(got.Body)
			gr, _ := io.ReadAll(br)
			sbr := bufio.NewReader(strings.NewReader(tc.raw))
			want, err := http.ReadResponse(sbr, req)
			if err != nil {
				t.Fatal(err)
			}
			wb, werr := io.ReadAll(want.Body)
			wr, _ := io.ReadAll(sbr)
			if got.StatusCode != want.StatusCode || got.Status != want.Status || got.ContentLength != want.ContentLength ||
				got.Close != want.Close || string(gb) != string(wb) || (gerr == nil) != (werr == nil) || string(gr) != string(wr) {
				t.Errorf("got %d %q len %d close %v body %q (%v) rest %q\nwant %d %q len %d close %v body %q (%v) rest %q",
					got.StatusCode, got.Status, got.ContentLength, got.Close, gb, gerr, gr,
					want.StatusCode, want.Status, want.ContentLength, want.Close, wb, werr, wr)
			}
			if !reflect.DeepEqual(got.Header, want.Header) || !reflect.DeepEqual(got.Trailer, want.Trailer) {
				t.Errorf("header %v trailer %v, want %v %v", got.Header, got.Trailer, want.Header, want.Trailer)
			}
		})
	}
}

// TestReadResponseRepeatedLines reads responses one after another with one
// respAlloc, as a kept-alive upstream connection does: lines that repeat
// the previous response's are taken from its parse (HeadLines.Parsed), so
// every response must still parse as http.ReadResponse parses it, and a
// bad line must be refused each time it comes, not only the first.
func TestReadResponseRepeatedLines(t *testing.T) {
	meta := "X-Envoy-Peer-Metadata: " + strings.Repeat("Q2hhbmdlZA", 30)
	seq := []struct {
		raw     string
		wantErr bool
	}{
		{raw: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n" + meta + "\r\nx-a:  1 \r\nDate: 1\r\n\r\nx"},
		{raw: "HTTP/1.1 200 OK\r\nx-a:  1 \r\nDate: 2\r\n" + meta + "\r\nContent-Length: 2\r\n\r\nxy"},
		{raw: "HTTP/1.1 404 Not Found\r\nx-a:  1 \r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n", wantErr: true},
		{raw: "HTTP/1.1 200 OK\r\nx-a:  1 \r\nX-Bad: a\x01b\r\nContent-Length: 0\r\n\r\n", wantErr: true},
		{raw: "HTTP/1.1 200 OK\r\nx-a:  1 \r\n" + meta + "\r\nX-A: 2\r\nContent-Length: 0\r\n\r\n"},
		{raw: "HTTP/1.1 200 OK\r\nx-a:  1 \r\n x-a: folded\r\nContent-Length: 0\r\n\r\n", wantErr: true},
	}
	ra := &respAlloc{}
	var scratch []byte
	for i, s := range seq {
		req, _ := http.NewRequest("GET", "http://x/", nil)
		got, err := readResponseInto(bufio.NewReader(strings.NewReader(s.raw)), req, &scratch, ra)
		if s.wantErr {
			if err == nil {
				t.Errorf("response %d: no error: %v", i, got.Header)
			}
			continue
		}
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(s.raw)), req)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Header, want.Header) || got.ContentLength != want.ContentLength {
			t.Errorf("response %d: header %v length %d, want %v %d", i, got.Header, got.ContentLength, want.Header, want.ContentLength)
		}
	}
}
