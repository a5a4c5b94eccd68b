package logformat

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func sampleRecord() *Record {
	return &Record{
		Start: time.Date(2026, 11, 27, 10, 0, 1, 234e6, time.UTC), Duration: 15 * time.Millisecond,
		Method: "GET", Path: "/reviews/1?x=1", Protocol: "HTTP/1.1", Authority: "reviews:9080", Scheme: "http",
		Request:  http.Header{"User-Agent": {"curl/8"}, "X-Request-Id": {"abc"}, "X-Envoy-Original-Path": {"/orig"}},
		Response: http.Header{"X-Envoy-Upstream-Service-Time": {"12"}, http.TrailerPrefix + "Grpc-Status": {"0"}},
		Code:     503, Flags: "UF", Details: "upstream_reset_before_response_started",
		BytesReceived: 10, BytesSent: 91, UpstreamHost: "10.0.0.3:9080", UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local",
		DownstreamRemote: "10.0.0.1:51000", RouteName: "default",
		UpstreamPeer: &Peer{Workload: "reviews-v1", Namespace: "default", App: "reviews", Version: "unknown"},
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, format, want, err string
		tcp                     bool
	}{
		{name: "literal", format: "hello", want: "hello"},
		{name: "percent escape", format: "100%% %RESPONSE_CODE%", want: "100% 503"},
		{name: "istio default", format: `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%`,
			want: `[2026-11-27T10:00:01.234Z] "GET /orig HTTP/1.1" 503 UF upstream_reset_before_response_started - "-" 10 91 15 12 "-" "curl/8" "abc" "reviews:9080" "10.0.0.3:9080" outbound|9080||reviews.default.svc.cluster.local - - 10.0.0.1:51000 - default`},
		{name: "alternative header", format: "%REQ(X-MISSING?:PATH)%", want: "/reviews/1?x=1"},
		{name: "truncation", format: "%REQ(USER-AGENT):4%", want: "curl"},
		{name: "without query", format: "%REQ_WITHOUT_QUERY(:PATH)%", want: "/reviews/1"},
		{name: "trailer", format: "%TRAILER(GRPC-STATUS)%", want: "0"},
		{name: "filter state", format: "%FILTER_STATE(upstream_peer:PLAIN)% %FILTER_STATE(downstream_peer)%", want: `{"app":"reviews","namespace":"default","workload":"reviews-v1"} -`},
		{name: "without port", format: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", want: "10.0.0.1"},
		{name: "tcp protocol", format: "%PROTOCOL% %RESPONSE_CODE%", tcp: true, want: "- 503"},
		{name: "unknown operator", format: "%NOPE%", err: "unknown command operator %NOPE%"},
		{name: "unterminated", format: "%RESPONSE_CODE", err: "unterminated"},
		{name: "bad length", format: "%REQ(:PATH):x%", err: "LENGTH"},
		{name: "bad CEL", format: "%CEL(response.code |)%", err: "CEL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Compile(tc.format)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := sampleRecord()
			r.TCP = tc.tcp
			if got := f.Render(r); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
