package stats

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// promLine returns the value of the first sample line of metric in r's
// output whose labels contain sub, "" when there is none.
func promLine(t *testing.T, r *Registry, metric, sub string) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, metric+"{") && strings.Contains(line, sub) {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestTCPConnReportsWhileOpen(t *testing.T) {
	r := NewRegistry()
	a := Labels{Reporter: "source", SourceWorkload: "a"}
	b := a
	b.SourceWorkload = "b" // a second override group
	c := r.OpenTCP(30*time.Millisecond, a, b)
	if got := promLine(t, r, "istio_tcp_connections_opened_total", `source_workload="b"`); got != "1" {
		t.Fatalf("opened = %q, want 1 at once", got)
	}
	c.Sent.Add(100)
	c.Received.Add(7)
	for _, w := range []string{`source_workload="a"`, `source_workload="b"`} {
		waitFor(t, "the first report of "+w, func() bool {
			return promLine(t, r, "istio_tcp_sent_bytes_total", w) == "100" && promLine(t, r, "istio_tcp_received_bytes_total", w) == "7"
		})
	}
	if got := promLine(t, r, "istio_tcp_connections_closed_total", ""); got != "" && got != "0" {
		t.Fatalf("closed = %s while the connection is open", got)
	}
	c.Sent.Add(23)
	waitFor(t, "the second report", func() bool { return promLine(t, r, "istio_tcp_sent_bytes_total", `source_workload="a"`) == "123" })
	c.Received.Add(5) // only Close reports these
	c.Close()
	c.Close() // counted once
	for _, w := range []string{`source_workload="a"`, `source_workload="b"`} {
		if s, rc, cl := promLine(t, r, "istio_tcp_sent_bytes_total", w), promLine(t, r, "istio_tcp_received_bytes_total", w),
			promLine(t, r, "istio_tcp_connections_closed_total", w); s != "123" || rc != "12" || cl != "1" {
			t.Errorf("%s after Close: sent %s received %s closed %s, want 123 12 1", w, s, rc, cl)
		}
	}
	waitFor(t, "the reporter to stop with no open connection", func() bool {
		r.live.mu.Lock()
		defer r.live.mu.Unlock()
		return !r.live.running
	})
}

func TestTCPConnDefaultIntervalAndShorterLater(t *testing.T) {
	r := NewRegistry()
	slow := r.OpenTCP(0, Labels{SourceWorkload: "slow"}) // 5 s
	defer slow.Close()
	slow.Sent.Add(1)
	r.live.mu.Lock()
	tick := r.live.tick
	r.live.mu.Unlock()
	if tick != time.Second {
		t.Fatalf("reporter tick %v with only a 5 s connection, want 1s", tick)
	}
	// A connection with a shorter interval wakes the reporter at once; the
	// 5 s one is not reported before its time.
	fast := r.OpenTCP(20*time.Millisecond, Labels{SourceWorkload: "fast"})
	defer fast.Close()
	fast.Sent.Add(9)
	waitFor(t, "the fast connection's report", func() bool {
		return promLine(t, r, "istio_tcp_sent_bytes_total", `source_workload="fast"`) == "9"
	})
	if got := promLine(t, r, "istio_tcp_sent_bytes_total", `source_workload="slow"`); got != "" && got != "0" {
		t.Errorf("5 s connection reported after %v: %s", 20*time.Millisecond, got)
	}
}

func TestTCPConnWithoutSeries(t *testing.T) {
	r := NewRegistry()
	c := r.OpenTCP(time.Millisecond) // every TCP metric disabled
	c.Sent.Add(3)
	c.Close()
	var nilConn *TCPConn
	nilConn.Close()
	r.live.mu.Lock()
	defer r.live.mu.Unlock()
	if r.live.running || len(r.live.conns) != 0 {
		t.Error("a connection without series started the reporter")
	}
}
