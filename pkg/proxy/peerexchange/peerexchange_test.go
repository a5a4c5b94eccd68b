package peerexchange

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/google/go-cmp/cmp"
)

func testMetadata(t testing.TB) *structpb.Struct {
	t.Helper()
	md, err := structpb.NewStruct(map[string]any{
		"NAMESPACE": "default", "WORKLOAD_NAME": "db-v1", "CLUSTER_ID": "Kubernetes",
		"LABELS": map[string]any{"app": "db", "version": "v1", "service.istio.io/canonical-name": "db"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return md
}

// frame assembles a frame by hand from the wire format (magic, big-endian
// length, Any payload), independently of Encode.
func frame(t testing.TB, typeURL string, value []byte) []byte {
	t.Helper()
	payload, err := proto.Marshal(&anypb.Any{TypeUrl: typeURL, Value: value})
	if err != nil {
		t.Fatal(err)
	}
	h := []byte{0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[4:], uint32(len(payload)))
	return append(h, payload...)
}

func TestEncodeWireFormat(t *testing.T) {
	md := testMetadata(t)
	b, err := Encode(md, "sidecar~db-v1.default")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:4], []byte{0x3d, 0x23, 0x04, 0x67}) {
		t.Fatalf("magic % x, want 3d 23 04 67", b[:4])
	}
	if n := binary.BigEndian.Uint32(b[4:8]); int(n) != len(b)-8 {
		t.Fatalf("length field %d, payload is %d bytes", n, len(b)-8)
	}
	a := &anypb.Any{}
	if err := proto.Unmarshal(b[8:], a); err != nil {
		t.Fatal(err)
	}
	if a.TypeUrl != "type.googleapis.com/google.protobuf.Struct" {
		t.Fatalf("type_url %q", a.TypeUrl)
	}
	st := &structpb.Struct{}
	if err := proto.Unmarshal(a.Value, st); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(md, st.Fields["x-envoy-peer-metadata"].GetStructValue(), protocmp.Transform()); d != "" {
		t.Errorf("x-envoy-peer-metadata (-want +got):\n%s", d)
	}
	if id := st.Fields["x-envoy-peer-metadata-id"].GetStringValue(); id != "sidecar~db-v1.default" {
		t.Errorf("x-envoy-peer-metadata-id %q", id)
	}
	// Deterministic: the same metadata always gives the same bytes.
	again, _ := Encode(testMetadata(t), "sidecar~db-v1.default")
	if !bytes.Equal(b, again) {
		t.Error("two encodings of the same metadata differ")
	}
	noID, _ := Encode(md, "")
	p, _, err := Decode(noID)
	if err != nil || p.ID != "" {
		t.Errorf("no id: %+v, %v", p, err)
	}
}

func TestDecode(t *testing.T) {
	md := testMetadata(t)
	good, err := Encode(md, "sidecar~db-v1.default")
	if err != nil {
		t.Fatal(err)
	}
	inner, _ := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"x-envoy-peer-metadata": structpb.NewStructValue(md)}})
	notStruct, _ := proto.Marshal(&structpb.Struct{Fields: map[string]*structpb.Value{"x-envoy-peer-metadata": structpb.NewStringValue("x")}})
	empty, _ := proto.Marshal(&structpb.Struct{})
	huge := []byte{0x3d, 0x23, 0x04, 0x67, 0xff, 0xff, 0xff, 0xff}
	justOver := binary.BigEndian.AppendUint32([]byte{0x3d, 0x23, 0x04, 0x67}, MaxPayload+1)
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr error
		errSub  string
		wantMD  bool
		wantID  string
		n       int // consumed bytes when no error or ErrMalformed
	}{
		{name: "encoded", in: good, wantMD: true, wantID: "sidecar~db-v1.default", n: len(good)},
		{name: "encoded then payload", in: append(bytes.Clone(good), "hello"...), wantMD: true, wantID: "sidecar~db-v1.default", n: len(good)},
		{name: "hand-built frame", in: frame(t, "type.googleapis.com/google.protobuf.Struct", inner), wantMD: true, n: len(frame(t, "type.googleapis.com/google.protobuf.Struct", inner))},
		{name: "struct without metadata key", in: frame(t, "type.googleapis.com/google.protobuf.Struct", empty), n: len(frame(t, "type.googleapis.com/google.protobuf.Struct", empty))},
		{name: "empty", in: nil, wantErr: ErrNoHeader},
		{name: "plain payload", in: []byte("GET / HTTP/1.1\r\n"), wantErr: ErrNoHeader},
		{name: "tls record", in: []byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5}, wantErr: ErrNoHeader},
		{name: "short, not the magic", in: []byte{0x3d, 0x24}, wantErr: ErrNoHeader},
		{name: "short header", in: []byte{0x3d, 0x23, 0x04, 0x67, 0}, wantErr: ErrTruncated, errSub: "5 of 8 header bytes"},
		{name: "oversized", in: huge, wantErr: ErrTooLarge, errSub: "4294967295 bytes"},
		{name: "one byte over the bound", in: justOver, wantErr: ErrTooLarge, errSub: "at most 65536"},
		{name: "truncated payload", in: good[:len(good)-1], wantErr: ErrTruncated, errSub: "payload bytes"},
		{name: "garbage payload", in: append(binary.BigEndian.AppendUint32([]byte{0x3d, 0x23, 0x04, 0x67}, 3), 0xff, 0xff, 0xff), wantErr: ErrMalformed, errSub: "any", n: 11},
		{name: "wrong type url", in: frame(t, "type.googleapis.com/google.protobuf.Value", inner), wantErr: ErrMalformed, errSub: "type_url", n: len(frame(t, "type.googleapis.com/google.protobuf.Value", inner))},
		{name: "metadata not a struct", in: frame(t, "type.googleapis.com/google.protobuf.Struct", notStruct), wantErr: ErrMalformed, errSub: "not a struct", n: len(frame(t, "type.googleapis.com/google.protobuf.Struct", notStruct))},
		{name: "struct value garbage", in: frame(t, "type.googleapis.com/google.protobuf.Struct", []byte{0x0a, 0xff}), wantErr: ErrMalformed, errSub: "struct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, n, err := Decode(tc.in)
			check := func(how string, p *Peer, err error) {
				t.Helper()
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errSub) {
						t.Fatalf("%s: err %v, want %v containing %q", how, err, tc.wantErr, tc.errSub)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s: %v", how, err)
				}
				if (p.Metadata != nil) != tc.wantMD || p.ID != tc.wantID {
					t.Fatalf("%s: metadata %v id %q", how, p.Metadata, p.ID)
				}
				if tc.wantMD && p.Metadata.Fields["WORKLOAD_NAME"].GetStringValue() != "db-v1" {
					t.Fatalf("%s: metadata %v", how, p.Metadata)
				}
			}
			check("Decode", p, err)
			if (tc.wantErr == nil || tc.wantErr == ErrMalformed) && tc.n > 0 && n != tc.n {
				t.Errorf("Decode consumed %d bytes, want %d", n, tc.n)
			}
			// Read from a stream agrees, and leaves what follows the frame
			// (or, without a header, everything) for the application.
			br := bufio.NewReader(bytes.NewReader(tc.in))
			p, err = Read(br)
			check("Read", p, err)
			rest, _ := io.ReadAll(br)
			switch {
			case errors.Is(tc.wantErr, ErrNoHeader):
				if !bytes.Equal(rest, tc.in) {
					t.Errorf("no header: rest %q, want the input unchanged", rest)
				}
			case tc.wantErr == nil || tc.n > 0:
				if !bytes.Equal(rest, tc.in[tc.n:]) {
					t.Errorf("rest %q, want %q", rest, tc.in[tc.n:])
				}
			}
		})
	}
}

func TestEncodeTooLarge(t *testing.T) {
	md, _ := structpb.NewStruct(map[string]any{"LABELS": map[string]any{"big": strings.Repeat("x", MaxPayload)}})
	if _, err := Encode(md, ""); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
}

// TestOversizedHeaderDoesNotAllocate: a peer announcing 2 GiB costs no
// allocation of that size (the bound is checked first).
func TestOversizedHeaderDoesNotAllocate(t *testing.T) {
	in := []byte{0x3d, 0x23, 0x04, 0x67, 0x7f, 0xff, 0xff, 0xff}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := Read(bufio.NewReaderSize(bytes.NewReader(in), 16)); !errors.Is(err, ErrTooLarge) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("10 oversized headers allocated %d bytes", d)
	}
}

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.Accept(); ch <- res{c, err} }()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

func TestExchangeBothSides(t *testing.T) {
	t.Parallel()
	a, b := tcpPair(t)
	mdA, mdB := testMetadata(t), testMetadata(t)
	mdB.Fields["WORKLOAD_NAME"] = structpb.NewStringValue("client-v2")
	fa, _ := Encode(mdA, "a")
	fb, _ := Encode(mdB, "b")
	deadline := time.Now().Add(20 * time.Second)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := Exchange(b, fb, deadline)
		if err == nil {
			_, err = c.Write([]byte("from b"))
		}
		ch <- res{c, err}
	}()
	// a's payload follows its frame at once, so b's Exchange may read it
	// together with the frame: it must come out of b's Read, not be lost.
	ca, err := Exchange(a, append(bytes.Clone(fa), "from a"...), deadline)
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if ca.Peer.ID != "b" || ca.Peer.Metadata.Fields["WORKLOAD_NAME"].GetStringValue() != "client-v2" {
		t.Errorf("a's peer: %+v", ca.Peer)
	}
	if r.c.Peer.ID != "a" || r.c.Peer.Metadata.Fields["WORKLOAD_NAME"].GetStringValue() != "db-v1" {
		t.Errorf("b's peer: %+v", r.c.Peer)
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(r.c, got); err != nil || string(got) != "from a" {
		t.Errorf("b read %q, %v", got, err)
	}
	if _, err := io.ReadFull(ca, got); err != nil || string(got) != "from b" {
		t.Errorf("a read %q, %v", got, err)
	}
}

// TestExchangeWithoutPeerExchange: a peer that does not run the exchange
// (its first bytes are payload) gets our frame, and its bytes reach the
// reader unchanged; a silent one is waited for until the deadline only.
func TestExchangeWithoutPeerExchange(t *testing.T) {
	t.Parallel()
	fr, _ := Encode(testMetadata(t), "me")
	t.Run("talking peer", func(t *testing.T) {
		a, b := tcpPair(t)
		if _, err := b.Write([]byte("PING 1234567890")); err != nil {
			t.Fatal(err)
		}
		c, err := Exchange(a, fr, time.Now().Add(20*time.Second))
		if !errors.Is(err, ErrNoHeader) || c == nil || c.Peer != nil {
			t.Fatalf("conn %v err %v, want a usable conn and ErrNoHeader", c, err)
		}
		got := make([]byte, 15)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "PING 1234567890" {
			t.Fatalf("read %q, %v", got, err)
		}
		// The peer received our frame as it was.
		head := make([]byte, len(fr))
		if _, err := io.ReadFull(b, head); err != nil || !bytes.Equal(head, fr) {
			t.Fatalf("peer got % x, %v", head, err)
		}
	})
	t.Run("silent peer", func(t *testing.T) {
		a, b := tcpPair(t)
		start := time.Now()
		c, err := Exchange(a, fr, time.Now().Add(300*time.Millisecond))
		if !errors.Is(err, ErrNoHeader) || c == nil {
			t.Fatalf("conn %v err %v", c, err)
		}
		if time.Since(start) > 15*time.Second {
			t.Errorf("waited %v past the deadline", time.Since(start))
		}
		// The deadline is cleared: later reads wait for the peer.
		go func() { _, _ = b.Write([]byte("late")) }()
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "late" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	t.Run("oversized header closes", func(t *testing.T) {
		a, b := tcpPair(t)
		if _, err := b.Write([]byte{0x3d, 0x23, 0x04, 0x67, 0x10, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		if c, err := Exchange(a, fr, time.Now().Add(20*time.Second)); c != nil || !errors.Is(err, ErrTooLarge) {
			t.Fatalf("conn %v err %v, want nil and ErrTooLarge", c, err)
		}
	})
	t.Run("peer closes inside the frame", func(t *testing.T) {
		a, b := tcpPair(t)
		if _, err := b.Write(fr[:20]); err != nil {
			t.Fatal(err)
		}
		b.(*net.TCPConn).CloseWrite()
		if c, err := Exchange(a, fr, time.Now().Add(20*time.Second)); c != nil || !errors.Is(err, ErrTruncated) {
			t.Fatalf("conn %v err %v, want nil and ErrTruncated", c, err)
		}
	})
}

// FuzzDecode: any bytes decode without panicking, Read from a stream
// agrees with Decode, and a decoded frame re-encodes to the same peer.
func FuzzDecode(f *testing.F) {
	good, _ := Encode(testMetadata(f), "sidecar~db-v1.default")
	f.Add(good)
	f.Add(append(bytes.Clone(good), "payload"...))
	f.Add([]byte{0x3d, 0x23, 0x04, 0x67, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 2, 0x0a, 0x00})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := Decode(b)
		rp, rerr := Read(bufio.NewReaderSize(bytes.NewReader(b), 16))
		if (err == nil) != (rerr == nil) {
			t.Fatalf("Decode err %v, Read err %v", err, rerr)
		}
		if err != nil {
			for _, e := range []error{ErrNoHeader, ErrTooLarge, ErrTruncated, ErrMalformed} {
				if errors.Is(err, e) {
					return
				}
			}
			t.Fatalf("unclassified error %v", err)
		}
		if n < HeaderLen || n > len(b) || n-HeaderLen > MaxPayload {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if d := cmp.Diff(p, rp, protocmp.Transform()); d != "" {
			t.Fatalf("Decode and Read differ:\n%s", d)
		}
		again, err := Encode(p.Metadata, p.ID)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		q, _, err := Decode(again)
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if p.Metadata == nil {
			p.Metadata = &structpb.Struct{}
		}
		if !proto.Equal(p.Metadata, q.Metadata) || p.ID != q.ID {
			t.Fatalf("round trip: %v %q → %v %q", p.Metadata, p.ID, q.Metadata, q.ID)
		}
	})
}

// BenchmarkExchange is what the exchange adds to one opaque connection on
// each side (write our frame, read and decode the peer's) over loopback
// TCP, next to the baseline of the same connection's first payload round
// trip without it; the ratio is printed.
func BenchmarkExchange(b *testing.B) {
	fr, err := Encode(testMetadata(b), "sidecar~db-v1.default")
	if err != nil {
		b.Fatal(err)
	}
	t := &testing.T{}
	var ns [2]float64
	run := func(b *testing.B, exchange bool) float64 {
		a, c := tcpPair(t)
		defer a.Close()
		defer c.Close()
		msg := []byte("ping")
		buf := make([]byte, 4)
		b.ReportAllocs()
		for b.Loop() {
			if exchange {
				done := make(chan error, 1)
				go func() { _, err := Exchange(c, fr, time.Now().Add(10*time.Second)); done <- err }()
				if _, err := Exchange(a, fr, time.Now().Add(10*time.Second)); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			if _, err := a.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
		return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	}
	b.Run("baseline", func(b *testing.B) { ns[0] = run(b, false) })
	b.Run("exchange", func(b *testing.B) { ns[1] = run(b, true) })
	if ns[0] > 0 && ns[1] > 0 {
		b.Logf("frame %d bytes; exchange + payload %.1f µs vs payload alone %.1f µs (%.2fx)", len(fr), ns[1]/1e3, ns[0]/1e3, ns[1]/ns[0])
	}
}
