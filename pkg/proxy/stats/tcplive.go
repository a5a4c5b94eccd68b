package stats

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTCPReportingInterval is how often an open TCP connection's bytes
// reach istio_tcp_sent_bytes_total and istio_tcp_received_bytes_total when
// no Telemetry sets metrics reportingInterval (Istio's default, 5 s).
const DefaultTCPReportingInterval = 5 * time.Second

// minTCPReportingInterval bounds how often the reporter wakes up.
const minTCPReportingInterval = 10 * time.Millisecond

// TCPConn is an open TCP connection's metrics, as Istio's stats filter
// keeps them: the connection counts as opened at once, its bytes reach
// the series every reporting interval while it lasts (a long-lived
// connection does not wait for its close to show its traffic), and
// Close adds the bytes not yet reported and counts it closed.
//
// The proxy's copy loops add to Sent and Received as bytes go through.
type TCPConn struct {
	// Sent counts bytes sent to the downstream peer, Received bytes
	// received from it.
	Sent, Received atomic.Int64

	r      *Registry
	series []*tcpSeries
	every  time.Duration
	// Guarded by r.live.mu.
	next              time.Time
	repSent, repRecvd int64
	closed            bool
}

// liveTCP is the registry's set of open TCPConns (and gRPC streams,
// GRPCStream) and its reporter.
type liveTCP struct {
	mu      sync.Mutex
	conns   map[liveReport]struct{}
	tick    time.Duration // the reporter's period: the shortest interval seen
	running bool          // the reporter goroutine runs
	kick    chan struct{} // wakes the reporter when tick shrinks
}

// OpenTCP counts an opened connection on every label set in ls (one per
// Telemetry override group; none when TCP metrics are disabled) and
// returns the handle its bytes are counted on. every is the reporting
// interval; 0 means DefaultTCPReportingInterval.
func (r *Registry) OpenTCP(every time.Duration, ls ...Labels) *TCPConn {
	if every <= 0 {
		every = DefaultTCPReportingInterval
	}
	every = max(every, minTCPReportingInterval)
	c := &TCPConn{r: r, every: every, series: make([]*tcpSeries, len(ls))}
	for i, l := range ls {
		s := r.tcpSeries(l)
		s.opened.Add(1)
		c.series[i] = s
	}
	if len(ls) == 0 {
		return c // nothing to report to
	}
	r.addLive(c, every, &c.next)
	return c
}

// liveReport is an open connection or stream the reporter goroutine
// reports every interval; report is called with live.mu held.
type liveReport interface {
	report(now time.Time)
}

// addLive adds c to the reporter's set; *next (guarded by live.mu) is set
// to one interval from now.
func (r *Registry) addLive(c liveReport, every time.Duration, next *time.Time) {
	lv := &r.live
	lv.mu.Lock()
	*next = time.Now().Add(every)
	if lv.conns == nil {
		lv.conns = map[liveReport]struct{}{}
		lv.kick = make(chan struct{}, 1)
	}
	lv.conns[c] = struct{}{}
	shrunk := lv.tick == 0 || every < lv.tick
	if shrunk {
		lv.tick = min(every, time.Second)
	}
	if !lv.running {
		lv.running = true
		go r.reportTCP()
	} else if shrunk {
		select {
		case lv.kick <- struct{}{}:
		default:
		}
	}
	lv.mu.Unlock()
}

// report adds the bytes counted since the last report when c's interval
// has passed. live.mu is held.
func (c *TCPConn) report(now time.Time) {
	if !now.Before(c.next) {
		c.flushLocked()
		c.next = now.Add(c.every)
	}
}

// Close reports the bytes not reported yet and counts the connection
// closed. Later calls, and calls on nil, do nothing.
func (c *TCPConn) Close() {
	if c == nil || len(c.series) == 0 {
		return
	}
	lv := &c.r.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	delete(lv.conns, c)
	c.flushLocked()
	for _, s := range c.series {
		s.closed.Add(1)
	}
}

// flushLocked adds the bytes counted since the last report. live.mu is
// held.
func (c *TCPConn) flushLocked() {
	sent, recvd := c.Sent.Load(), c.Received.Load()
	ds, dr := sent-c.repSent, recvd-c.repRecvd
	c.repSent, c.repRecvd = sent, recvd
	if ds == 0 && dr == 0 {
		return
	}
	for _, s := range c.series {
		s.sent.Add(uint64(ds))
		s.received.Add(uint64(dr))
	}
}

// reportTCP is the reporter goroutine: every tick it reports the
// connections whose interval has passed. It ends when no connection is
// open (an idle proxy has no reporter waking it up).
func (r *Registry) reportTCP() {
	lv := &r.live
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		lv.mu.Lock()
		if len(lv.conns) == 0 {
			lv.running, lv.tick = false, 0
			lv.mu.Unlock()
			return
		}
		t.Reset(lv.tick)
		lv.mu.Unlock()
		select {
		case <-t.C:
		case <-lv.kick:
			continue
		}
		now := time.Now()
		lv.mu.Lock()
		for c := range lv.conns {
			c.report(now)
		}
		lv.mu.Unlock()
	}
}
