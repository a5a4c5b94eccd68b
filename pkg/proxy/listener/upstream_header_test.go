package listener

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// upstreamHeader replaced Clone + a hop-by-hop delete pass + Set; the cases pin
// the forwarded fields.
func TestUpstreamHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		in      http.Header
		upgrade bool
		ip      string
		want    http.Header
	}{
		{name: "plain", in: http.Header{"Accept": {"a", "b"}, "X-Request-Id": {"id"}}, ip: "10.0.0.1",
			want: http.Header{"Accept": {"a", "b"}, "X-Request-Id": {"id"}, "X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Proto": {"http"}}},
		{name: "hop-by-hop and named by Connection",
			in: http.Header{"Connection": {"keep-alive, X-Secret", "foo"}, "X-Secret": {"s"}, "Foo": {"f"}, "Keep-Alive": {"1"},
				"Proxy-Connection": {"x"}, "Proxy-Authorization": {"p"}, "Proxy-Authenticate": {"p"}, "Trailer": {"T"},
				"Transfer-Encoding": {"chunked"}, "Upgrade": {"websocket"}, "Te": {"gzip"}, "Keep": {"k"}},
			ip:   "10.0.0.1",
			want: http.Header{"Keep": {"k"}, "X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Proto": {"http"}}},
		{name: "te trailers", in: http.Header{"Te": {"Trailers, deflate"}},
			want: http.Header{"Te": {"trailers"}, "X-Forwarded-Proto": {"http"}}},
		{name: "upgrade keeps Connection and Upgrade", upgrade: true,
			in:   http.Header{"Connection": {"Upgrade, X-Drop"}, "Upgrade": {"websocket"}, "X-Drop": {"d"}},
			want: http.Header{"Connection": {"Upgrade, X-Drop"}, "Upgrade": {"websocket"}, "X-Forwarded-Proto": {"http"}}},
		{name: "xff extended, first value only", in: http.Header{"X-Forwarded-For": {"1.1.1.1", "2.2.2.2"}, "X-Forwarded-Proto": {"https"}},
			ip: "10.0.0.1", want: http.Header{"X-Forwarded-For": {"1.1.1.1, 10.0.0.1"}, "X-Forwarded-Proto": {"https"}}},
		{name: "xff kept without a client address", in: http.Header{"X-Forwarded-For": {"1.1.1.1", "2.2.2.2"}, "X-Forwarded-Proto": {""}},
			want: http.Header{"X-Forwarded-For": {"1.1.1.1", "2.2.2.2"}, "X-Forwarded-Proto": {"http"}}},
		{name: "xff named by Connection is dropped", in: http.Header{"Connection": {"x-forwarded-for"}, "X-Forwarded-For": {"1.1.1.1"}},
			ip: "10.0.0.1", want: http.Header{"X-Forwarded-For": {"10.0.0.1"}, "X-Forwarded-Proto": {"http"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.Clone()
			got, _ := upstreamHeader(in, tc.upgrade, tc.ip, nil, nil)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("upstream header (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.in, in); d != "" {
				t.Errorf("client header modified (-before +after):\n%s", d)
			}
			// Values are copies: appending to one field must not touch another.
			for k := range got {
				got[k] = append(got[k], "extra")
			}
			for k, vs := range got {
				if vs[len(vs)-1] != "extra" || (len(vs) > 1 && vs[len(vs)-2] == "extra") {
					t.Errorf("field %s shares its values: %q", k, vs)
				}
			}
		})
	}
}
