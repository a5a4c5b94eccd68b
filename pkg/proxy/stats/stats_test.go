package stats

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
)

func TestPrometheusRendering(t *testing.T) {
	r := NewRegistry()
	l := Labels{Reporter: "source", SourceWorkload: "a", ResponseCode: "200", ResponseFlags: "-", DestinationService: `we"ird`}
	r.ObserveHTTP(l, 3, 10, 2000)
	r.ObserveHTTP(l, 700, 0, 5)
	c := r.OpenTCP(0, l)
	c.Sent.Add(11)
	c.Received.Add(22)
	c.Close()
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

func TestLabelOrderAndTCPLabels(t *testing.T) {
	r := NewRegistry()
	l := Labels{Reporter: "destination", SourcePrincipal: "spiffe://td/ns/a/sa/b", ResponseCode: "0", GRPCResponseStatus: "",
		RequestProtocol: "tcp", ConnectionSecurityPolicy: "mutual_tls"}
	t.Cleanup(r.OpenTCP(0, l).Close)
	h := l
	h.RequestProtocol, h.ResponseCode, h.GRPCResponseStatus = "grpc", "200", "14"
	h.Remove(LabelBit("source_cluster") | LabelBit("destination_cluster"))
	r.ObserveHTTP(h, 1, 1, 1)
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	tcp := `istio_tcp_connections_opened_total{reporter="destination",source_workload="",source_canonical_service="",source_canonical_revision="",source_workload_namespace="",source_principal="spiffe://td/ns/a/sa/b",source_app="",source_version="",source_cluster="",destination_workload="",destination_workload_namespace="",destination_principal="",destination_app="",destination_version="",destination_service="",destination_canonical_service="",destination_canonical_revision="",destination_service_name="",destination_service_namespace="",destination_cluster="",request_protocol="tcp",response_flags="",connection_security_policy="mutual_tls"} 1`
	if !strings.Contains(out, tcp) {
		t.Errorf("want %s in\n%s", tcp, out)
	}
	http := `istio_requests_total{reporter="destination",source_workload="",source_canonical_service="",source_canonical_revision="",source_workload_namespace="",source_principal="spiffe://td/ns/a/sa/b",source_app="",source_version="",destination_workload="",destination_workload_namespace="",destination_principal="",destination_app="",destination_version="",destination_service="",destination_canonical_service="",destination_canonical_revision="",destination_service_name="",destination_service_namespace="",request_protocol="grpc",response_code="200",grpc_response_status="14",response_flags="",connection_security_policy="mutual_tls"} 1`
	if !strings.Contains(out, http) { // source_cluster and destination_cluster removed
		t.Errorf("want %s in\n%s", http, out)
	}
	if LabelBit("nope") != 0 || LabelBit("grpc_response_status") != httpOnly&^(1<<21) {
		t.Errorf("LabelBit")
	}
}

// BenchmarkObserveHTTPFullLabels records one request with every standard
// label set to realistic values (the map key the proxy hashes per request).
func BenchmarkObserveHTTPFullLabels(b *testing.B) {
	r := NewRegistry()
	l := Labels{Reporter: "destination", SourceWorkload: "productpage-v1", SourceCanonicalService: "productpage",
		SourceCanonicalRevision: "v1", SourceWorkloadNamespace: "default", SourcePrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
		SourceApp: "productpage", SourceVersion: "v1", SourceCluster: "Kubernetes", DestinationWorkload: "reviews-v2",
		DestinationWorkloadNamespace: "default", DestinationPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
		DestinationApp: "reviews", DestinationVersion: "v2", DestinationService: "reviews.default.svc.cluster.local",
		DestinationCanonicalService: "reviews", DestinationCanonicalRevision: "v2", DestinationServiceName: "reviews",
		DestinationServiceNamespace: "default", DestinationCluster: "Kubernetes", RequestProtocol: "http", ResponseCode: "200",
		ResponseFlags: "-", ConnectionSecurityPolicy: "mutual_tls"}
	b.ReportAllocs()
	for b.Loop() {
		r.ObserveHTTP(l, 1.5, 100, 200)
	}
}

// Telemetry overrides: added labels render after the standard ones, a
// series only renders the metrics not dropped for it (HTTP and TCP).
func TestOverrideRendering(t *testing.T) {
	r := NewRegistry()
	l := Labels{Reporter: "destination", ResponseCode: "200"}
	l.Remove(^uint32(0))
	if !l.Set("response_code", "404") || l.Set("nope", "x") {
		t.Fatal("Set")
	}
	withTag := l
	withTag.Extra = ExtraLabels([]string{"a_tag", "b_tag"}, []string{"x", `q"`})
	withTag.Dropped = DropAllHTTP &^ DropRequests
	plain := l
	plain.Dropped = DropRequests
	r.ObserveHTTP(withTag, 1, 1, 1)
	r.ObserveHTTP(plain, 1, 1, 1)
	tcp := l
	tcp.Dropped = DropTCPSent
	c := r.OpenTCP(0, tcp)
	c.Sent.Add(5)
	c.Received.Add(6)
	c.Close()
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`istio_requests_total{response_code="404",a_tag="x",b_tag="q\""} 1` + "\n",
		`istio_request_duration_milliseconds_count{response_code="404"} 1` + "\n",
		`istio_tcp_received_bytes_total{} 6` + "\n",
		`istio_tcp_connections_opened_total{} 1` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	for _, bad := range []string{`istio_requests_total{response_code="404"}`, `istio_request_duration_milliseconds_count{response_code="404",a_tag`, `istio_tcp_sent_bytes_total{`} {
		if strings.Contains(out, bad) {
			t.Errorf("unexpected %q in\n%s", bad, out)
		}
	}
}

// A rendering waits for telemetry still pending (a response sent whose
// request is recorded a moment later), but not for ever.
func TestRenderingWaitsForPending(t *testing.T) {
	r := NewRegistry()
	l := Labels{Reporter: "source", DestinationService: "a", ResponseCode: "200"}
	r.BeginPending()
	go func() {
		time.Sleep(2 * time.Millisecond)
		r.ObserveHTTP(l, 1, 0, 0)
		r.EndPending()
	}()
	var b strings.Builder
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "istio_requests_total{") {
		t.Fatalf("the pending request is missing:\n%s", b.String())
	}
	r.BeginPending() // never ends: the rendering gives up after ~10 ms
	start := time.Now()
	if err := r.WriteText(io.Discard); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("rendering waited %s", d)
	}
}
