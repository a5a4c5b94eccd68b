package stats

import (
	"sync/atomic"
	"time"
)

// GRPCMessages counts the gRPC messages in one direction of a stream as
// its bytes go through, without buffering them: each message is a
// 5-byte prefix (a compressed flag and a 4-byte big-endian length)
// followed by that many bytes, and a message may span any number of
// reads (or HTTP/2 DATA frames). Like Envoy's gRPC frame inspector
// (grpc_stats filter), a message counts when the first byte of its
// prefix is seen, so a truncated trailing message counts too.
//
// Write must be called serially (by the one goroutine that moves the
// bytes); Count may be called from any goroutine.
type GRPCMessages struct {
	n atomic.Uint64
	// hdr is how many prefix bytes of the current message were seen
	// (0: the next byte starts a message; 1–4: length bytes follow).
	hdr uint8
	// length accumulates the prefix's length bytes.
	length uint32
	// rest is the payload bytes of the current message still to come.
	rest uint32
}

// Write counts the messages that start in p. It never fails.
func (g *GRPCMessages) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if g.rest > 0 {
			if uint64(len(p)) <= uint64(g.rest) {
				g.rest -= uint32(len(p))
				return total, nil
			}
			p = p[g.rest:]
			g.rest = 0
			continue
		}
		if g.hdr == 0 { // the compressed flag: a message starts
			g.n.Add(1)
			g.hdr, g.length = 1, 0
			p = p[1:]
			continue
		}
		g.length = g.length<<8 | uint32(p[0])
		p = p[1:]
		if g.hdr++; g.hdr == 5 {
			g.hdr, g.rest = 0, g.length
		}
	}
	return total, nil
}

// Count is the number of messages started so far.
func (g *GRPCMessages) Count() uint64 { return g.n.Load() }

// GRPCStream is an open gRPC stream's message counts as Istio's stats
// filter reports them: the counts reach istio_request_messages_total and
// istio_response_messages_total every reporting interval while the
// stream lasts (a long stream shows its messages before it ends), and
// Close adds the rest.
type GRPCStream struct {
	req, resp *GRPCMessages // nil: nothing counted in that direction
	r         *Registry
	series    []*msgSeries
	every     time.Duration
	// Guarded by r.live.mu.
	next            time.Time
	repReq, repResp uint64
	closed          bool
}

// OpenGRPCStream starts reporting the counts of req and resp (either may
// be nil) to every label set in ls (one per Telemetry override group;
// none when the message metrics are disabled) every interval (0:
// DefaultTCPReportingInterval, Istio's reporting interval is the same
// for TCP connections and gRPC streams). Call Close at the stream's end.
func (r *Registry) OpenGRPCStream(every time.Duration, req, resp *GRPCMessages, ls ...Labels) *GRPCStream {
	if every <= 0 {
		every = DefaultTCPReportingInterval
	}
	s := &GRPCStream{req: req, resp: resp, r: r, every: max(every, minTCPReportingInterval), series: make([]*msgSeries, len(ls))}
	for i, l := range ls {
		s.series[i] = r.msgSeries(l)
	}
	if len(ls) > 0 {
		r.addLive(s, s.every, &s.next)
	}
	return s
}

func (s *GRPCStream) report(now time.Time) {
	if !now.Before(s.next) {
		s.flushLocked()
		s.next = now.Add(s.every)
	}
}

// flushLocked adds the messages counted since the last report. live.mu
// is held.
func (s *GRPCStream) flushLocked() {
	var req, resp uint64
	if s.req != nil {
		req = s.req.Count()
	}
	if s.resp != nil {
		resp = s.resp.Count()
	}
	dq, dr := req-s.repReq, resp-s.repResp
	s.repReq, s.repResp = req, resp
	if dq == 0 && dr == 0 {
		return
	}
	for _, m := range s.series {
		m.requests.Add(dq)
		m.responses.Add(dr)
	}
}

// Close reports the messages not reported yet; the counters are not
// read after it returns. Later calls, and calls on nil, do nothing.
func (s *GRPCStream) Close() {
	if s == nil || len(s.series) == 0 {
		return
	}
	lv := &s.r.live
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(lv.conns, s)
	s.flushLocked()
}
