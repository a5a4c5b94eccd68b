package server

import (
	"fmt"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	encodingproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Proxies with equal config get responses marshaled once, written from one
// shared encoded body, and still decode to the full, correct response with
// their own nonce.
func TestSharedResponsesMarshalOnce(t *testing.T) {
	h := start(t, 20*time.Millisecond)
	h.apply(t, vs("a"), vs("b"))
	waitFor(t, "first push", func() bool { return h.srv.Revision() > 0 })
	before := h.srv.prepared.marshals.Load()
	const n = 3
	var resps []*discoveryv3.DiscoveryResponse
	var clients []*adsClient
	var ids []string
	for i := range n {
		c := dial(t, h.addr)
		id := fmt.Sprintf("sidecar~127.0.0.%d~app-%d.default~default.svc.cluster.local", i+1, i)
		c.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: resourcev3.ClusterType})
		resps = append(resps, c.next(t))
		clients = append(clients, c)
		ids = append(ids, id)
	}
	for i, r := range resps {
		if got := clusterNames(t, r); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("client %d clusters = %v, want [a b]", i, got)
		}
		if r.GetVersionInfo() != resps[0].GetVersionInfo() || r.GetTypeUrl() != resourcev3.ClusterType || r.GetNonce() == "" {
			t.Errorf("client %d: version %q type %q nonce %q", i, r.GetVersionInfo(), r.GetTypeUrl(), r.GetNonce())
		}
	}
	if got := h.srv.prepared.marshals.Load() - before; got != 1 {
		t.Errorf("prepared %d CDS responses for %d equal proxies, want 1", got, n)
	}
	if got := h.srv.prepared.hits.Load(); got < n {
		t.Errorf("codec wrote %d responses from the shared body, want >= %d", got, n)
	}

	// ACKed streams wait for the next push, which answers them all from
	// one new shared set.
	for i, c := range clients {
		c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resps[i].GetVersionInfo(), ResponseNonce: resps[i].GetNonce()})
	}
	for _, id := range ids {
		waitFor(t, "ACK of "+id, func() bool { return statusOf(t, h.srv, id).Types["CDS"].State == StateSynced })
	}
	before = h.srv.prepared.marshals.Load()
	h.apply(t, vs("c"))
	for i, c := range clients {
		r := c.next(t)
		if got := clusterNames(t, r); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Errorf("client %d after the change: clusters = %v, want [a b c]", i, got)
		}
		if r.GetVersionInfo() == resps[i].GetVersionInfo() {
			t.Errorf("client %d: version %q did not change", i, r.GetVersionInfo())
		}
	}
	if got := h.srv.prepared.marshals.Load() - before; got != 1 {
		t.Errorf("prepared %d CDS responses after the change, want 1", got)
	}
}

func TestSharedCodecAndPrepare(t *testing.T) {
	rs := []types.Resource{
		&clusterv3.Cluster{Name: "a"}, &clusterv3.Cluster{Name: "b"}, &clusterv3.Cluster{Name: "c"},
	}
	sr := &sharedResources{version: "7", resources: rs}
	st := &prepStats{}
	codec := sharedCodec{base: encoding.GetCodecV2(encodingproto.Name), stats: st}
	all, err := sr.prepare(st, resourcev3.ClusterType, keyOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	some, err := sr.prepare(st, resourcev3.ClusterType, keyOf([]string{"c", "a", "zz"}))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := sr.prepare(st, resourcev3.ClusterType, keyOf([]string{"a", "zz", "c", "a"}))
	if &again[0] != &some[0] {
		t.Error("the same name set was prepared twice")
	}
	star, _ := sr.prepare(st, resourcev3.ClusterType, keyOf([]string{"*"}))
	if &star[0] != &all[0] {
		t.Error(`"*" was not prepared as the wildcard`)
	}
	if got := st.marshals.Load(); got != 2 {
		t.Errorf("prepared %d bodies, want 2 (all, subset)", got)
	}
	for _, tc := range []struct {
		name  string
		body  []byte
		nonce string
		names []string
	}{
		{"all", all, "1", []string{"a", "b", "c"}},
		{"subset, missing names left out", some, "22", []string{"a", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := st.hits.Load()
			buf, err := codec.Marshal(&outMsg{body: tc.body, nonce: tc.nonce})
			if err != nil {
				t.Fatal(err)
			}
			if st.hits.Load() != hits+1 {
				t.Error("outMsg not written from its body")
			}
			var got discoveryv3.DiscoveryResponse
			if err := proto.Unmarshal(buf.Materialize(), &got); err != nil {
				t.Fatal(err)
			}
			if got.GetVersionInfo() != "7" || got.GetTypeUrl() != resourcev3.ClusterType || got.GetNonce() != tc.nonce {
				t.Errorf("decoded version %q type %q nonce %q", got.GetVersionInfo(), got.GetTypeUrl(), got.GetNonce())
			}
			if got := clusterNames(t, &got); !slices.Equal(got, tc.names) {
				t.Errorf("clusters %v, want %v", got, tc.names)
			}
		})
	}
	// Other messages go through the proto codec unchanged.
	msg := &discoveryv3.DiscoveryResponse{VersionInfo: "8", Resources: []*anypb.Any{{TypeUrl: resourcev3.ClusterType}}, Nonce: "x"}
	buf, err := codec.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var got discoveryv3.DiscoveryResponse
	if err := proto.Unmarshal(buf.Materialize(), &got); err != nil || !proto.Equal(&got, msg) {
		t.Errorf("plain response decoded %v (%v), want %v", &got, err, msg)
	}
}
