package server

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
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
	for i := range n {
		c := dial(t, h.addr)
		id := fmt.Sprintf("sidecar~127.0.0.%d~app-%d.default~default.svc.cluster.local", i+1, i)
		c.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id}, TypeUrl: resourcev3.ClusterType})
		resps = append(resps, c.next(t))
		clients = append(clients, c)
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

	// ACKed watches wait for the next push, which answers them all from
	// one new shared set.
	for i, c := range clients {
		c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: resps[i].GetVersionInfo(), ResponseNonce: resps[i].GetNonce()})
	}
	waitFor(t, "watches open", func() bool {
		h.srv.watches.mu.Lock()
		defer h.srv.watches.mu.Unlock()
		return len(h.srv.watches.m) == n
	})
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
	sr := &sharedResources{resources: rs, cache: cachev3.NewResources("7", rs)}
	reg := &preparedRegistry{}
	codec := sharedCodec{base: encoding.GetCodecV2(encodingproto.Name), reg: reg}
	all, err := sr.prepare(reg, resourcev3.ClusterType, map[string]string{"a": "", "b": "", "c": ""})
	if err != nil {
		t.Fatal(err)
	}
	some, err := sr.prepare(reg, resourcev3.ClusterType, map[string]string{"c": "", "a": ""})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := sr.prepare(reg, resourcev3.ClusterType, map[string]string{"a": "", "c": ""})
	if &again[0] != &some[0] {
		t.Error("the same name set was prepared twice")
	}
	other := []*anypb.Any{all[0]} // not prepared as a slice: the codec must marshal it
	for _, tc := range []struct {
		name     string
		msg      *discoveryv3.DiscoveryResponse
		names    []string
		fromBody bool
	}{
		{"all prepared", &discoveryv3.DiscoveryResponse{VersionInfo: "7", TypeUrl: resourcev3.ClusterType, Resources: all, Nonce: "1"}, []string{"a", "b", "c"}, true},
		{"subset prepared", &discoveryv3.DiscoveryResponse{VersionInfo: "7", TypeUrl: resourcev3.ClusterType, Resources: some, Nonce: "2"}, []string{"a", "c"}, true},
		{"other version", &discoveryv3.DiscoveryResponse{VersionInfo: "8", TypeUrl: resourcev3.ClusterType, Resources: all, Nonce: "3"}, []string{"a", "b", "c"}, false},
		{"shorter slice", &discoveryv3.DiscoveryResponse{VersionInfo: "7", TypeUrl: resourcev3.ClusterType, Resources: all[:2], Nonce: "4"}, []string{"a", "b"}, false},
		{"not prepared", &discoveryv3.DiscoveryResponse{VersionInfo: "7", TypeUrl: resourcev3.ClusterType, Resources: other, Nonce: "5"}, []string{"a"}, false},
		{"empty", &discoveryv3.DiscoveryResponse{VersionInfo: "7", TypeUrl: resourcev3.ClusterType, Nonce: "6"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := reg.hits.Load()
			buf, err := codec.Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := reg.hits.Load() > hits; got != tc.fromBody {
				t.Errorf("written from the shared body = %v, want %v", got, tc.fromBody)
			}
			var got discoveryv3.DiscoveryResponse
			if err := proto.Unmarshal(buf.Materialize(), &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, tc.msg) {
				t.Errorf("decoded %v, want %v", &got, tc.msg)
			}
			var names []string
			for _, a := range got.GetResources() {
				var c clusterv3.Cluster
				if err := a.UnmarshalTo(&c); err != nil {
					t.Fatal(err)
				}
				names = append(names, c.GetName())
			}
			if !slices.Equal(names, tc.names) {
				t.Errorf("clusters %v, want %v", names, tc.names)
			}
		})
	}
	if got := reg.marshals.Load(); got != 2 {
		t.Errorf("prepared %d responses, want 2 (all, subset)", got)
	}
}

// Answers a snapshot gives several open watches of one node reach the
// stream in ADS order, whatever order the watches were opened in.
func TestWatchForwardKeepsADSOrder(t *testing.T) {
	s := &Server{proxies: map[string]*proxyState{}}
	out := make(chan cachev3.Response, 8)
	urls := []string{resourcev3.RouteType, resourcev3.ListenerType, resourcev3.EndpointType, resourcev3.ClusterType, resourcev3.SecretType}
	for _, u := range urls {
		w := &sotwWatch{s: s, nodeID: "n", order: adsOrder(u), mid: make(chan cachev3.Response, 1), out: out, done: make(chan struct{})}
		s.watches.add(w)
		if w.forward() {
			t.Fatal("a watch with no answer yet was finished")
		}
		w.mid <- &cachev3.PassthroughResponse{Request: &discoveryv3.DiscoveryRequest{TypeUrl: u}}
	}
	other := &sotwWatch{s: s, nodeID: "other", mid: make(chan cachev3.Response, 1), out: out, done: make(chan struct{})}
	s.watches.add(other)
	other.mid <- &cachev3.PassthroughResponse{Request: &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}}

	s.watches.forward("n")
	want := []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType}
	for i, u := range want {
		select {
		case r := <-out:
			if got := r.GetRequest().GetTypeUrl(); got != u {
				t.Errorf("answer %d is %s, want %s", i, got, u)
			}
		default:
			t.Fatalf("only %d answers forwarded, want %d", i, len(want))
		}
	}
	select {
	case r := <-out:
		t.Errorf("another node's answer was forwarded: %s", r.GetRequest().GetTypeUrl())
	default:
	}
	if _, ok := s.watches.m["n"]; ok {
		t.Error("answered watches stay registered")
	}
	other.close()
	if len(s.watches.m) != 0 {
		t.Errorf("closed watch stays registered: %v", s.watches.m)
	}
}
