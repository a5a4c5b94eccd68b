package cluster

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestWriteRequest reads what writeRequest wrote with net/http's parser.
func TestWriteRequest(t *testing.T) {
	cases := []struct {
		name      string
		method    string
		url       string
		body      string
		length    int64
		close     bool
		header    http.Header
		wantURI   string
		wantLen   int64
		wantTE    bool
		wantError bool
	}{
		{name: "get", method: "GET", url: "http://svc/a/b?x=1&y", length: 0, wantURI: "/a/b?x=1&y"},
		{name: "escaped path", method: "GET", url: "http://svc/a%2Fb/%20c", wantURI: "/a%2Fb/%20c"},
		{name: "empty path", method: "GET", url: "http://svc", wantURI: "/"},
		{name: "post length", method: "POST", url: "http://svc/p", body: "hello", length: 5, wantURI: "/p", wantLen: 5},
		{name: "post empty", method: "POST", url: "http://svc/p", length: 0, wantURI: "/p"},
		{name: "chunked", method: "PUT", url: "http://svc/p", body: strings.Repeat("z", 40000), length: -1, wantURI: "/p", wantLen: -1, wantTE: true},
		{name: "close", method: "GET", url: "http://svc/", close: true, wantURI: "/"},
		{name: "value with newline", method: "GET", url: "http://svc/", header: http.Header{"X": {"a\r\nInjected: 1"}}, wantURI: "/"},
		{name: "bad name", method: "GET", url: "http://svc/", header: http.Header{"X y": {"1"}}, wantError: true},
		{name: "short body", method: "POST", url: "http://svc/p", body: "abc", length: 5, wantError: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, _ := url.Parse(tc.url)
			req := &http.Request{Method: tc.method, URL: u, Host: "svc:9080", Header: http.Header{"User-Agent": {"t"}, "Foo": {"1", "2"}},
				ContentLength: tc.length, Close: tc.close, Body: http.NoBody}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			if tc.body != "" {
				req.Body = io.NopCloser(strings.NewReader(tc.body))
			}
			var out bytes.Buffer
			bw := bufio.NewWriter(&out)
			err := writeRequest(bw, req)
			bw.Flush()
			if tc.wantError {
				if err == nil {
					t.Fatalf("no error; wrote %q", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := http.ReadRequest(bufio.NewReader(&out))
			if err != nil {
				t.Fatalf("net/http cannot read %q: %v", out.String(), err)
			}
			b, err := io.ReadAll(got.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got.Method != tc.method || got.RequestURI != tc.wantURI || got.Host != "svc:9080" || got.ContentLength != tc.wantLen ||
				string(b) != tc.body || got.Close != tc.close || (len(got.TransferEncoding) > 0) != tc.wantTE {
				t.Errorf("read back %s %s host %s len %d te %v close %v body %d bytes", got.Method, got.RequestURI, got.Host,
					got.ContentLength, got.TransferEncoding, got.Close, len(b))
			}
			if strings.Join(got.Header["Foo"], ",") != "1,2" || got.Header.Get("Injected") != "" {
				t.Errorf("header %v", got.Header)
			}
			if tc.method == "POST" && tc.length == 0 && got.Header.Get("Content-Length") != "0" {
				t.Errorf("empty POST without Content-Length: 0")
			}
		})
	}
}
