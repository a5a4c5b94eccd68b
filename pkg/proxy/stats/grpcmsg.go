package stats

import "sync/atomic"

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
