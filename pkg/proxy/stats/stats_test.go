package stats

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPrometheusRendering(t *testing.T) {
	r := NewRegistry()
	l := Labels{Reporter: "source", SourceWorkload: "a", ResponseCode: "200", ResponseFlags: "-", DestinationService: `we"ird`}
	r.ObserveHTTP(l, 3, 10, 2000)
	r.ObserveHTTP(l, 700, 0, 5)
	r.TCPOpened(l)
	r.TCPClosed(l, 11, 22)
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`istio_requests_total{reporter="source",source_workload="a",`,
		`destination_service="we\"ird"`,
		`} 2` + "\n",
		`istio_request_duration_milliseconds_bucket{`,
		`le="5"} 1`, `le="1000"} 2`, `le="+Inf"} 2`,
		`istio_request_duration_milliseconds_sum{`, `} 703` + "\n",
		`istio_response_bytes_bucket{`, `istio_tcp_sent_bytes_total{`, `} 11` + "\n", `} 22` + "\n",
		`istio_tcp_connections_opened_total{`, `istio_tcp_connections_closed_total{`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if n := r.RequestsTotal(func(l Labels) bool { return l.Reporter == "source" }); n != 2 {
		t.Fatalf("RequestsTotal = %d", n)
	}
	if n := r.RequestsTotal(func(l Labels) bool { return l.Reporter == "destination" }); n != 0 {
		t.Fatalf("RequestsTotal(destination) = %d", n)
	}
}

func TestAccessLog(t *testing.T) {
	var b bytes.Buffer
	a := NewAccessLog(&b)
	a.Log(&AccessEntry{StartTime: time.Unix(0, 0), Method: "GET", ResponseCode: 503, ResponseFlags: "UO"})
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["response_flags"] != "UO" || m["response_code"] != float64(503) {
		t.Fatalf("entry %v", m)
	}
	var nilLog *AccessLog
	nilLog.Log(&AccessEntry{}) // must not panic
}

func BenchmarkObserveHTTP(b *testing.B) {
	r := NewRegistry()
	l := Labels{Reporter: "source", SourceWorkload: "a", ResponseCode: "200"}
	b.ReportAllocs()
	for b.Loop() {
		r.ObserveHTTP(l, 1.5, 100, 200)
	}
}
