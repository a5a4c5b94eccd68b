// Package peerexchange implements Istio's in-band metadata exchange on
// opaque TCP: the wire format of Envoy's istio.metadata_exchange network
// filter (istio/proxy, filters/network/metadata_exchange) and the
// exchange itself on a connection whose mutual TLS negotiated the ALPN
// protocol "istio-peer-exchange".
//
// Each side writes one frame before any payload and strips the peer's
// frame before the payload reaches the application or the upstream:
//
//	uint32 magic 0x3D230467, big endian
//	uint32 length of the payload, big endian
//	payload: a serialized google.protobuf.Any whose type_url is
//	  type.googleapis.com/google.protobuf.Struct and whose value is a
//	  Struct {"x-envoy-peer-metadata": Struct of the workload's node
//	  metadata, "x-envoy-peer-metadata-id": the node id}
//
// Both sides write their frame as soon as the handshake is done (Envoy
// writes on its first read or write, so a weft frame always makes an
// Envoy peer answer with its own) and then read the peer's. First bytes
// that are not the magic mean a peer without the exchange: they are left
// in place and the connection goes on without peer metadata, as in
// Envoy. Unlike Envoy, a payload larger than MaxPayload, or a frame the
// peer does not finish, is an error (the connection is closed) instead of
// buffering without bound, and a payload that does not decode is consumed
// whole, so no part of it reaches the application.
package peerexchange

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Names of the exchange, as Istio's control plane and Envoy use them.
const (
	// Protocol is the ALPN protocol that turns the exchange on.
	Protocol = "istio-peer-exchange"
	// FilterName is the network filter (inbound filter chains) and
	// cluster filter (outbound clusters) Istio emits for it.
	FilterName = "istio.metadata_exchange"
	// ConfigTypeURL is the filter's config type (sent inside a
	// xds.type.v3.TypedStruct, as Istio does).
	ConfigTypeURL = "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"
	// MetadataKey and MetadataIDKey are the payload Struct's keys, named
	// after the HTTP headers of the same exchange.
	MetadataKey   = "x-envoy-peer-metadata"
	MetadataIDKey = "x-envoy-peer-metadata-id"
)

// Frame layout.
const (
	// Magic starts every frame (big endian on the wire).
	Magic uint32 = 0x3D230467
	// HeaderLen is the size of the magic and the length.
	HeaderLen = 8
	// MaxPayload bounds the payload this side accepts (and writes): a
	// workload's metadata is a few hundred bytes, a peer announcing more
	// is refused instead of making the proxy allocate what it says.
	MaxPayload = 64 << 10
)

const structTypeURL = "type.googleapis.com/google.protobuf.Struct"

// Errors of Read and Exchange. ErrNoHeader and ErrMalformed leave a
// usable connection without peer metadata; the others do not.
var (
	// ErrNoHeader: the first bytes are not the magic (a peer that does not
	// run the exchange) or the peer sent nothing; nothing was consumed.
	ErrNoHeader = errors.New("metadata exchange: no header from the peer (first bytes are not the magic)")
	// ErrTooLarge: the header announces more than MaxPayload bytes.
	ErrTooLarge = errors.New("metadata exchange: payload too large")
	// ErrTruncated: the stream ended (or timed out) inside a frame.
	ErrTruncated = errors.New("metadata exchange: truncated frame")
	// ErrMalformed: the payload is not an Any holding a Struct; the frame
	// was consumed.
	ErrMalformed = errors.New("metadata exchange: malformed payload")
)

// Peer is what a peer's frame says.
type Peer struct {
	// Metadata is the x-envoy-peer-metadata Struct (Istio's node metadata
	// keys: NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, LABELS, ...); nil when
	// the payload has none.
	Metadata *structpb.Struct
	// ID is x-envoy-peer-metadata-id (the peer's node id), "" when absent.
	ID string
	// Payload is the raw payload, a key for caching what is derived from
	// Metadata (peers of one workload send identical bytes).
	Payload string
}

var magicBytes = binary.BigEndian.AppendUint32(nil, Magic)

// Encode returns the frame announcing metadata md and node id (omitted
// when ""). The Struct is serialized deterministically, so one workload
// always sends the same bytes.
func Encode(md *structpb.Struct, id string) ([]byte, error) {
	if md == nil {
		md = &structpb.Struct{}
	}
	fields := map[string]*structpb.Value{MetadataKey: structpb.NewStructValue(md)}
	if id != "" {
		fields[MetadataIDKey] = structpb.NewStringValue(id)
	}
	det := proto.MarshalOptions{Deterministic: true}
	v, err := det.Marshal(&structpb.Struct{Fields: fields})
	if err != nil {
		return nil, fmt.Errorf("metadata exchange: encode metadata: %w", err)
	}
	payload, err := det.Marshal(&anypb.Any{TypeUrl: structTypeURL, Value: v})
	if err != nil {
		return nil, fmt.Errorf("metadata exchange: encode any: %w", err)
	}
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes of metadata, at most %d", ErrTooLarge, len(payload), MaxPayload)
	}
	out := make([]byte, 0, HeaderLen+len(payload))
	out = binary.BigEndian.AppendUint32(out, Magic)
	out = binary.BigEndian.AppendUint32(out, uint32(len(payload)))
	return append(out, payload...), nil
}

// startsLikeMagic reports whether b, shorter than a header, may be the
// start of one (its first up to 4 bytes are the magic's).
func startsLikeMagic(b []byte) bool {
	n := min(len(b), len(magicBytes))
	return n > 0 && bytes.Equal(b[:n], magicBytes[:n])
}

// parseHeader checks a frame header and returns the payload length.
func parseHeader(h []byte) (int, error) {
	if binary.BigEndian.Uint32(h) != Magic {
		return 0, ErrNoHeader
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > MaxPayload {
		return 0, fmt.Errorf("%w: header announces %d bytes, at most %d", ErrTooLarge, n, MaxPayload)
	}
	return int(n), nil
}

// Decode parses the frame at the start of b and returns the peer and the
// bytes the frame took; what follows is payload for the application.
func Decode(b []byte) (*Peer, int, error) {
	if len(b) < HeaderLen {
		if !startsLikeMagic(b) {
			return nil, 0, ErrNoHeader
		}
		return nil, 0, fmt.Errorf("%w: %d of %d header bytes", ErrTruncated, len(b), HeaderLen)
	}
	n, err := parseHeader(b)
	if err != nil {
		return nil, 0, err
	}
	if len(b) < HeaderLen+n {
		return nil, 0, fmt.Errorf("%w: %d of %d payload bytes", ErrTruncated, len(b)-HeaderLen, n)
	}
	p, err := DecodePayload(b[HeaderLen : HeaderLen+n])
	return p, HeaderLen + n, err
}

// DecodePayload parses a frame's payload.
func DecodePayload(b []byte) (*Peer, error) {
	a := &anypb.Any{}
	if err := proto.Unmarshal(b, a); err != nil {
		return nil, fmt.Errorf("%w: any: %w", ErrMalformed, err)
	}
	if a.GetTypeUrl() != structTypeURL {
		return nil, fmt.Errorf("%w: type_url %q, want %q", ErrMalformed, a.GetTypeUrl(), structTypeURL)
	}
	st := &structpb.Struct{}
	if err := proto.Unmarshal(a.GetValue(), st); err != nil {
		return nil, fmt.Errorf("%w: struct: %w", ErrMalformed, err)
	}
	p := &Peer{Payload: string(b)}
	if v, ok := st.GetFields()[MetadataKey]; ok {
		md := v.GetStructValue()
		if md == nil {
			return nil, fmt.Errorf("%w: %s is not a struct", ErrMalformed, MetadataKey)
		}
		p.Metadata = md
	}
	p.ID = st.GetFields()[MetadataIDKey].GetStringValue()
	return p, nil
}

// Read reads the peer's frame from br. On ErrNoHeader nothing was
// consumed; on ErrMalformed the whole frame was.
//
// It decides as soon as the bytes that arrived cannot start the magic, so a
// peer without the exchange that sends fewer than 8 bytes and waits for an
// answer is not held until a deadline.
func Read(br *bufio.Reader) (*Peer, error) {
	for br.Buffered() < HeaderLen {
		if n := br.Buffered(); n > 0 {
			if b, _ := br.Peek(n); !startsLikeMagic(b) {
				return nil, ErrNoHeader
			}
		}
		if b, err := br.Peek(br.Buffered() + 1); err != nil { // reads more
			if !startsLikeMagic(b) {
				return nil, ErrNoHeader
			}
			return nil, fmt.Errorf("%w: %d of %d header bytes: %w", ErrTruncated, len(b), HeaderLen, err)
		}
	}
	h, _ := br.Peek(HeaderLen)
	n, err := parseHeader(h)
	if err != nil {
		return nil, err
	}
	_, _ = br.Discard(HeaderLen)
	buf := make([]byte, n)
	if m, err := io.ReadFull(br, buf); err != nil {
		return nil, fmt.Errorf("%w: %d of %d payload bytes: %w", ErrTruncated, m, n, err)
	}
	return DecodePayload(buf)
}

// Conn is a connection after the exchange: reads return what the peer
// sent after its frame.
type Conn struct {
	net.Conn
	// Peer is the peer's frame, nil when it sent none (or a malformed one).
	Peer *Peer
	rest []byte // read past the frame, returned first
}

// Read returns the bytes read past the peer's frame first.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when it can (TLS: close_notify).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// Exchange writes frame (this side's, from Encode; nothing when empty) to
// c and reads the peer's, waiting until deadline at most. A peer that
// sends nothing by then, or whose first bytes are not the magic, is taken
// for one without the exchange. The returned Conn is usable (its Peer nil
// without metadata) unless it is nil; err says why there is no metadata
// (ErrNoHeader, ErrMalformed) or, with a nil Conn, why the connection
// must be closed.
func Exchange(c net.Conn, frame []byte, deadline time.Time) (*Conn, error) {
	_ = c.SetDeadline(deadline)
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if len(frame) > 0 {
		if _, err := c.Write(frame); err != nil {
			return nil, fmt.Errorf("metadata exchange: write: %w", err)
		}
	}
	br := bufio.NewReaderSize(c, 1024)
	p, err := Read(br)
	out := &Conn{Conn: c, Peer: p}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		out.rest = bytes.Clone(b)
	}
	switch {
	case err == nil:
		return out, nil
	case errors.Is(err, ErrNoHeader), errors.Is(err, ErrMalformed):
		out.Peer = nil
		return out, err
	}
	return nil, err
}
