package server

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Shared responses. go-control-plane's snapshot cache marshals every
// resource again for every response, and gRPC encodes every response into
// a buffer of its own, so one change to a big route configuration costs one
// marshal and one buffer per connected proxy. Proxies with equal config
// share one sharedResources per type (see pushMemo.share); the server
// turns each cache response for such a set into a PassthroughResponse whose
// resources were marshaled once (sharedResources.prepare), and the gRPC
// codec (sharedCodec) writes the once-encoded response body for it, adding
// only the per-stream fields (nonce). 5000 proxies with the same routes then
// cost one marshal and one copy of the bytes, however slowly they read.

// preparedResponse is one (version, type, resource set) response, marshaled.
type preparedResponse struct {
	once      sync.Once
	resources []*anypb.Any
	err       error
}

// preparedBody is what the codec needs to write a preparedResponse: the
// encoded version_info, resources and type_url fields, and what identifies
// the response. It does not reference the resources, so their slice can be
// collected (and its registry entry dropped) once no response uses it.
type preparedBody struct {
	body    []byte
	n       int
	version string
	typeURL string
}

// preparedRegistry maps a prepared resource slice (by a weak pointer to its
// first element) to its encoded body.
type preparedRegistry struct {
	m sync.Map // weak.Pointer[*anypb.Any] -> *preparedBody
	// marshals counts prepared responses built, hits responses the codec
	// wrote from a prepared body (for tests and the benchmark).
	marshals, hits atomic.Int64
}

func (r *preparedRegistry) add(rs []*anypb.Any, b *preparedBody) {
	if len(rs) == 0 {
		return
	}
	k := weak.Make(&rs[0])
	r.m.Store(k, b)
	runtime.AddCleanup(&rs[0], func(k weak.Pointer[*anypb.Any]) { r.m.Delete(k) }, k)
}

func (r *preparedRegistry) lookup(m *discoveryv3.DiscoveryResponse) *preparedBody {
	if len(m.Resources) == 0 {
		return nil
	}
	v, ok := r.m.Load(weak.Make(&m.Resources[0]))
	if !ok {
		return nil
	}
	b := v.(*preparedBody)
	if b.n != len(m.Resources) || b.version != m.VersionInfo || b.typeURL != m.TypeUrl {
		return nil
	}
	r.hits.Add(1)
	return b
}

// prepare returns the marshaled resources named in names (nil: all) of the
// set, building them once per distinct name set.
func (sr *sharedResources) prepare(reg *preparedRegistry, typeURL string, names map[string]string) ([]*anypb.Any, error) {
	key := "*"
	if len(names) != len(sr.resources) {
		ns := make([]string, 0, len(names))
		for n := range names {
			ns = append(ns, n)
		}
		slices.Sort(ns)
		key = strings.Join(ns, "\x00")
	}
	v, _ := sr.responses.LoadOrStore(key, &preparedResponse{})
	p := v.(*preparedResponse)
	p.once.Do(func() {
		reg.marshals.Add(1)
		out := make([]*anypb.Any, 0, len(names))
		for _, r := range sr.resources {
			name := cachev3.GetResourceName(r)
			if key != "*" {
				if _, ok := names[name]; !ok {
					continue
				}
			}
			b, err := cachev3.MarshalResource(r)
			if err != nil {
				p.err = fmt.Errorf("marshal %s: %w", name, err)
				return
			}
			out = append(out, &anypb.Any{TypeUrl: typeURL, Value: b})
		}
		body, err := proto.MarshalOptions{Deterministic: true}.Marshal(&discoveryv3.DiscoveryResponse{VersionInfo: sr.cache.Version, Resources: out, TypeUrl: typeURL})
		if err != nil {
			p.err = fmt.Errorf("marshal response: %w", err)
			return
		}
		p.resources = out
		reg.add(out, &preparedBody{body: body, n: len(out), version: sr.cache.Version, typeURL: typeURL})
	})
	return p.resources, p.err
}

// sharedResponse turns a cache response for nodeID into one that reuses the
// node's shared, already marshaled resources; it returns r itself when the
// response is not for a shared set the server knows.
func (s *Server) sharedResponse(nodeID string, r cachev3.Response) cachev3.Response {
	raw, ok := r.(*cachev3.RawResponse)
	if !ok || raw.Heartbeat {
		return r
	}
	typeURL := raw.GetRequest().GetTypeUrl()
	ti := typeOf(typeURL)
	if ti < 0 {
		return r
	}
	var sr *sharedResources
	s.mu.Lock()
	if p := s.proxies[nodeID]; p != nil {
		for _, c := range [...]*sharedResources{p.pending[ti], p.gen[ti].shared} {
			if c != nil && c.cache.Version == raw.Version {
				sr = c
				break
			}
		}
	}
	s.mu.Unlock()
	if sr == nil {
		return r
	}
	returned := raw.GetReturnedResources()
	for n := range returned {
		if _, ok := sr.cache.Items[n]; !ok {
			return r // not from this set
		}
	}
	rs, err := sr.prepare(&s.prepared, typeURL, returned)
	if err != nil {
		s.log.Error("prepare shared response", "type", typeURL, "err", err)
		return r
	}
	return &cachev3.PassthroughResponse{
		Request: raw.GetRequest(),
		// A fresh response per stream: the server sets its nonce.
		DiscoveryResponse: &discoveryv3.DiscoveryResponse{VersionInfo: raw.Version, Resources: rs, TypeUrl: typeURL},
		ReturnedResources: returned,
	}
}

// sharedCodec is the ADS server's gRPC codec: a DiscoveryResponse built by
// sharedResponse is written as its shared encoded body plus the per-stream
// fields; everything else goes to the proto codec.
type sharedCodec struct {
	base encoding.CodecV2
	reg  *preparedRegistry
}

func (c sharedCodec) Name() string { return c.base.Name() }

func (c sharedCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

func (c sharedCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*discoveryv3.DiscoveryResponse)
	if !ok {
		return c.base.Marshal(v)
	}
	b := c.reg.lookup(m)
	if b == nil {
		return c.base.Marshal(v)
	}
	// Fields are concatenable in protobuf: the body carries version_info,
	// resources and type_url; the tail the rest.
	tail, err := proto.Marshal(&discoveryv3.DiscoveryResponse{Canary: m.Canary, Nonce: m.Nonce, ControlPlane: m.ControlPlane, ResourceErrors: m.ResourceErrors})
	if err != nil {
		return nil, fmt.Errorf("marshal discovery response: %w", err)
	}
	return mem.BufferSlice{mem.SliceBuffer(b.body), mem.SliceBuffer(tail)}, nil
}
