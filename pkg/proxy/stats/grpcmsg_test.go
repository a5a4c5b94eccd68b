package stats

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// frame encodes one gRPC message with a payload of n bytes.
func frame(n int, compressed bool) []byte {
	b := make([]byte, 5+n)
	if compressed {
		b[0] = 1
	}
	binary.BigEndian.PutUint32(b[1:5], uint32(n))
	for i := range n {
		b[5+i] = byte(i) // payload bytes that look like prefixes must not count
	}
	return b
}

func stream(sizes ...int) []byte {
	var b bytes.Buffer
	for i, n := range sizes {
		b.Write(frame(n, i%2 == 1))
	}
	return b.Bytes()
}

func TestGRPCMessagesSplitAtEveryByte(t *testing.T) {
	t.Parallel()
	s := stream(3, 0, 300, 0, 1, 70000)
	for cut := 0; cut <= len(s); cut++ {
		var g GRPCMessages
		g.Write(s[:cut])
		g.Write(s[cut:])
		if g.Count() != 6 {
			t.Fatalf("split at %d: %d messages, want 6", cut, g.Count())
		}
	}
	for cut1 := 0; cut1 <= 40; cut1++ { // two cuts around the small messages
		for cut2 := cut1; cut2 <= 40; cut2++ {
			var g GRPCMessages
			g.Write(s[:cut1])
			g.Write(s[cut1:cut2])
			g.Write(s[cut2:])
			if g.Count() != 6 {
				t.Fatalf("split at %d,%d: %d messages, want 6", cut1, cut2, g.Count())
			}
		}
	}
}

func TestGRPCMessagesByteByByte(t *testing.T) {
	t.Parallel()
	s := stream(0, 7, 0, 256, 0)
	var g GRPCMessages
	for i := range s {
		g.Write(s[i : i+1])
	}
	if g.Count() != 5 {
		t.Fatalf("%d messages, want 5", g.Count())
	}
}

func TestGRPCMessagesCases(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		reads [][]byte
		want  uint64
	}{
		{"none", nil, 0},
		{"empty read", [][]byte{{}}, 0},
		{"one message", [][]byte{frame(10, false)}, 1},
		{"several in one read", [][]byte{stream(1, 2, 3, 4)}, 4},
		{"zero-length messages", [][]byte{stream(0, 0, 0)}, 3},
		{"zero-length after data", [][]byte{stream(5), stream(0)}, 2},
		{"truncated prefix", [][]byte{stream(4), {0, 0, 0}}, 2},
		{"truncated payload", [][]byte{stream(4), frame(100, false)[:20]}, 2},
		{"large length", [][]byte{frame(1<<20, true)}, 1},
		{"payload looks like prefixes", [][]byte{append(frame(5, false)[:5], 0, 0, 0, 0, 0)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g GRPCMessages
			for _, r := range tc.reads {
				if n, err := g.Write(r); n != len(r) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if g.Count() != tc.want {
				t.Fatalf("%d messages, want %d", g.Count(), tc.want)
			}
		})
	}
}

func BenchmarkGRPCMessages(b *testing.B) {
	s := stream(100, 100, 100, 100, 2000, 30000)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	var g GRPCMessages
	for b.Loop() {
		g.Write(s)
	}
}

// The message counters render with the peer labels only (as Istio's) and
// honour a Telemetry override dropping one of them.
func TestGRPCMessageSeries(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	l := Labels{Reporter: "source", SourceWorkload: "client", DestinationService: "svc", DestinationCluster: "c1",
		RequestProtocol: "grpc", ResponseCode: "200", GRPCResponseStatus: "0", ResponseFlags: "-", ConnectionSecurityPolicy: "unknown"}
	l.Remove(MessageOmitted)
	r.ObserveGRPCMessages(l, 1, 1)
	r.ObserveGRPCMessages(l, 5, 1)
	dropped := l
	dropped.Reporter = "destination"
	dropped.Dropped = DropResponseMessages
	r.ObserveGRPCMessages(dropped, 3, 4)
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# TYPE istio_request_messages_total counter\n",
		"# TYPE istio_response_messages_total counter\n",
		`istio_request_messages_total{reporter="source",source_workload="client",`,
		`destination_service="svc",destination_canonical_service="",destination_canonical_revision="",destination_service_name="",destination_service_namespace="",destination_cluster="c1"} 6` + "\n",
		`istio_response_messages_total{reporter="source",`,
		`destination_cluster="c1"} 2` + "\n",
		`istio_request_messages_total{reporter="destination",`,
		`destination_cluster="c1"} 3` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	for _, bad := range []string{`istio_response_messages_total{reporter="destination"`, `request_protocol=`, `response_code=`} {
		if strings.Contains(out, bad) {
			t.Errorf("unexpected %q in\n%s", bad, out)
		}
	}
}

// An open gRPC stream's messages reach the counters every interval, on
// every group's series, and Close adds the rest once; a TCP connection
// and a stream share the reporter.
func TestGRPCStreamReportsWhileOpen(t *testing.T) {
	t.Parallel()
	r := NewRegistry()
	a := Labels{Reporter: "source", SourceWorkload: "a"}
	a.Remove(MessageOmitted)
	b := a
	b.SourceWorkload = "b"
	var req, resp GRPCMessages
	s := r.OpenGRPCStream(30*time.Millisecond, &req, &resp, a, b)
	tc := r.OpenTCP(time.Hour, a)
	req.Write(stream(1, 2, 3))
	resp.Write(stream(4))
	for _, w := range []string{`source_workload="a"`, `source_workload="b"`} {
		waitFor(t, "the first report of "+w, func() bool {
			return promLine(t, r, "istio_request_messages_total", w) == "3" && promLine(t, r, "istio_response_messages_total", w) == "1"
		})
	}
	resp.Write(stream(0, 0))
	waitFor(t, "the second report", func() bool { return promLine(t, r, "istio_response_messages_total", `source_workload="a"`) == "3" })
	req.Write(frame(10, false)[:3]) // a message starts: reported by Close at the latest
	s.Close()
	s.Close()
	for _, w := range []string{`source_workload="a"`, `source_workload="b"`} {
		if q, p := promLine(t, r, "istio_request_messages_total", w), promLine(t, r, "istio_response_messages_total", w); q != "4" || p != "3" {
			t.Errorf("%s after Close: %s/%s, want 4/3", w, q, p)
		}
	}
	tc.Close()
	waitFor(t, "the reporter to stop", func() bool {
		r.live.mu.Lock()
		defer r.live.mu.Unlock()
		return !r.live.running
	})
	// A stream without label sets (metrics disabled) and one with nil
	// counters are harmless.
	r.OpenGRPCStream(0, &req, &resp).Close()
	r.OpenGRPCStream(0, nil, nil, a).Close()
	var nilStream *GRPCStream
	nilStream.Close()
}
