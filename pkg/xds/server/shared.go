package server

import (
	"fmt"
	"sync"
	"sync/atomic"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Shared responses. Proxies with equal config share one sharedResources
// per type and push (see pushMemo.share). A SotW response for such a set is
// encoded once per requested name set (sharedResources.prepare): the
// DiscoveryResponse fields version_info, resources and type_url, as bytes.
// Every stream sends it as an outMsg, which the gRPC codec (sharedCodec)
// writes as those shared bytes plus the stream's own nonce field, so 5000
// proxies with the same routes cost one marshal and one copy of the bytes,
// however slowly they read.

// sharedResources is one generated resource set of one type.
type sharedResources struct {
	version   string
	resources []types.Resource // sorted by name
	// encoded holds each resource's deterministic encoding, in the order
	// of resources (nil: marshal when preparing a response).
	encoded [][]byte

	// cache indexes the resources for go-control-plane's delta server;
	// built on first use (only proxies with a delta stream need it).
	cacheOnce sync.Once
	cache     cachev3.Resources

	// responses holds the encoded responses by requested name set.
	responses sync.Map // nameKey -> *preparedResponse

	// sums are the digests of encoded, in the same order (nil with it).
	sums [][32]byte
	// rcForms is the push's route configurations in VHDS form (RDS sets
	// only; nil: none shared), see pushMemo.rcForm.
	rcForms *sync.Map
	// The set as the weft delta handler sends it (deltaview.go), built on
	// first use: dview for every type, vroutes/vhosts for RDS in VHDS form.
	viewOnce, vhdsOnce     sync.Once
	dview, vroutes, vhosts *deltaView
}

func (sr *sharedResources) cacheResources() cachev3.Resources {
	sr.cacheOnce.Do(func() { sr.cache = cachev3.NewResources(sr.version, sr.resources) })
	return sr.cache
}

// preparedResponse is one (set, names) response body, encoded once.
type preparedResponse struct {
	once sync.Once
	body []byte
	err  error
}

// prepStats counts prepared bodies and responses the codec wrote from one
// (for tests and the benchmark).
type prepStats struct {
	marshals, hits atomic.Int64
}

// prepare returns the encoded response body (version_info, resources,
// type_url) for the resources of the set named by k, building it once per
// distinct name set.
func (sr *sharedResources) prepare(st *prepStats, typeURL string, k nameKey) ([]byte, error) {
	v, ok := sr.responses.Load(k)
	if !ok {
		v, _ = sr.responses.LoadOrStore(k, &preparedResponse{})
	}
	p := v.(*preparedResponse)
	p.once.Do(func() {
		st.marshals.Add(1)
		var want map[string]bool
		if !k.all {
			want = map[string]bool{}
			for _, n := range k.list() {
				want[n] = true
			}
		}
		out := make([]*anypb.Any, 0, len(sr.resources))
		for i, r := range sr.resources {
			name := cachev3.GetResourceName(r)
			if want != nil && !want[name] {
				continue
			}
			var b []byte
			if sr.encoded != nil {
				b = sr.encoded[i]
			} else {
				var err error
				if b, err = (proto.MarshalOptions{Deterministic: true}).Marshal(r); err != nil {
					p.err = fmt.Errorf("marshal %s: %w", name, err)
					return
				}
			}
			out = append(out, &anypb.Any{TypeUrl: typeURL, Value: b})
		}
		body, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DiscoveryResponse{VersionInfo: sr.version, Resources: out, TypeUrl: typeURL})
		if err != nil {
			p.err = fmt.Errorf("marshal %s response: %w", typeURL, err)
			return
		}
		p.body = body
	})
	return p.body, p.err
}

// outMsg is a response as a stream sends it: a shared body (SotW or
// delta: both carry the nonce as field 5) and the stream's nonce.
type outMsg struct {
	body  []byte
	nonce string
	// extra are more encoded fields of this stream's own (nil: none).
	extra []byte
}

// sharedCodec is the ADS server's gRPC codec: an outMsg is written as its
// shared body plus the encoded nonce; everything else goes to the proto
// codec.
type sharedCodec struct {
	base  encoding.CodecV2
	stats *prepStats
}

func (c sharedCodec) Name() string { return c.base.Name() }

func (c sharedCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

// nonceField is DiscoveryResponse.nonce's field number.
const nonceField = 5

func (c sharedCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*outMsg)
	if !ok {
		return c.base.Marshal(v)
	}
	c.stats.hits.Add(1)
	// Protobuf fields concatenate: the body carries version_info, resources
	// and type_url; the tail the nonce.
	tail := protowire.AppendTag(make([]byte, 0, len(m.nonce)+2), nonceField, protowire.BytesType)
	tail = protowire.AppendString(tail, m.nonce)
	tail = append(tail, m.extra...)
	return mem.BufferSlice{mem.SliceBuffer(m.body), mem.SliceBuffer(tail)}, nil
}
