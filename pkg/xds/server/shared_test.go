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
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	encodingproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
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

// A gRPC-style client subscribes to clusters by name: it gets only those,
// gets an answer when it asks for more names (same version), none when it
// ACKs with unchanged names, and stale requests are ignored.
func TestResourceNameSubscriptions(t *testing.T) {
	h := start(t, 20*time.Millisecond)
	h.apply(t, vs("a"), vs("b"), vs("c"))
	// The store's watch delivers the three one by one: wait for a push
	// that has all of them, not just the first.
	waitFor(t, "push of a, b and c", func() bool {
		h.srv.mu.Lock()
		defer h.srv.mu.Unlock()
		return len(h.srv.configList) == 3
	})
	c := dial(t, h.addr)
	const node = "proxyless~127.0.0.1~client.default~default.svc.cluster.local"
	c.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.ClusterType, ResourceNames: []string{"b", "nope"}})
	r1 := c.next(t)
	if got := clusterNames(t, r1); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("subscribed to [b nope]: clusters %v, want [b]", got)
	}
	// More names, carrying the latest nonce (and the ACKed version).
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce, ResourceNames: []string{"c", "a"}})
	r2 := c.next(t)
	if got := clusterNames(t, r2); !slices.Equal(got, []string{"a", "c"}) || r2.VersionInfo != r1.VersionInfo || r2.Nonce == r1.Nonce {
		t.Fatalf("resubscribed to [c a]: clusters %v version %s nonce %s (before %s/%s)", got, r2.VersionInfo, r2.Nonce, r1.VersionInfo, r1.Nonce)
	}
	// A stale request (old nonce, other names) is ignored; the ACK of r2
	// with the same names is not answered.
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r1.VersionInfo, ResponseNonce: r1.Nonce, ResourceNames: []string{"b"}})
	c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, VersionInfo: r2.VersionInfo, ResponseNonce: r2.Nonce, ResourceNames: []string{"a", "c"}})
	select {
	case r := <-c.resps:
		t.Fatalf("unexpected response %s %v", r.VersionInfo, clusterNames(t, r))
	case <-time.After(300 * time.Millisecond):
	}
	waitFor(t, "SYNCED", func() bool { return statusOf(t, h.srv, node).Types["CDS"].State == StateSynced })
	// A change of a subscribed cluster's set reaches the client, filtered.
	h.apply(t, vs("d"))
	r3 := c.next(t)
	if got := clusterNames(t, r3); !slices.Equal(got, []string{"a", "c"}) || r3.VersionInfo == r2.VersionInfo {
		t.Fatalf("after a change: clusters %v version %s (before %s)", got, r3.VersionInfo, r2.VersionInfo)
	}
	// A new stream of the same proxy is answered at once, even when it
	// claims the current version.
	c2 := dial(t, h.addr)
	c2.send(t, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resourcev3.ClusterType, VersionInfo: r3.VersionInfo})
	if got := clusterNames(t, c2.next(t)); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("wildcard on a new stream: clusters %v", got)
	}
}

// Types that change in one push reach the stream in ADS order (CDS, EDS,
// LDS, RDS) whatever order they were subscribed in, and types whose
// resources did not change are not sent again.
func TestADSOrderAndUnchangedTypes(t *testing.T) {
	st, srv, addr := startWith(t, meshGenerator)
	se := func(name string) *config.Resource {
		return &config.Resource{APIVersion: "networking.istio.io/v1", Kind: config.KindServiceEntry,
			Meta: config.Meta{Name: name, Namespace: "default"},
			Spec: &networking.ServiceEntry{Hosts: []string{name + ".example"}, Ports: []*networking.ServicePort{{Number: 80, Name: "http", Protocol: "HTTP"}},
				Resolution: networking.ServiceEntry_STATIC, Endpoints: []*networking.WorkloadEntry{{Address: "10.0.0.1"}}}}
	}
	if _, err := st.Apply(t.Context(), store.Upsert, []*config.Resource{se("a")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "first push", func() bool { return srv.Revision() > 0 })
	c := dial(t, addr)
	subs := []struct {
		url   string
		names []string
	}{{resourcev3.RouteType, []string{"80"}}, {resourcev3.ListenerType, nil}, {resourcev3.EndpointType, []string{"outbound|80||a.example", "outbound|80||b.example"}}, {resourcev3.ClusterType, nil}}
	for i, s := range subs {
		r := &discoveryv3.DiscoveryRequest{TypeUrl: s.url, ResourceNames: s.names}
		if i == 0 {
			r.Node = &corev3.Node{Id: testNode}
		}
		c.send(t, r)
	}
	for range subs {
		r := c.next(t)
		var names []string
		for _, s := range subs {
			if s.url == r.TypeUrl {
				names = s.names
			}
		}
		c.send(t, &discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
	}
	waitFor(t, "all SYNCED", func() bool {
		for _, ts := range statusOf(t, srv, testNode).Types {
			if ts.State != StateSynced {
				return false
			}
		}
		return true
	})
	// A second service changes clusters, endpoints and routes, not listeners.
	if _, err := st.Apply(t.Context(), store.Upsert, []*config.Resource{se("b")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 3 {
		got = append(got, c.next(t).TypeUrl)
	}
	if want := []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RouteType}; !slices.Equal(got, want) {
		t.Errorf("responses after the change: %v, want %v", got, want)
	}
	select {
	case r := <-c.resps:
		t.Errorf("unexpected %s response (unchanged type resent?)", r.TypeUrl)
	case <-time.After(300 * time.Millisecond):
	}
}

// A shared set reuses the encodings its push made while hashing: its
// response carries exactly those bytes, and nothing is marshaled again.
func TestSharedSetReusesHashEncodings(t *testing.T) {
	s := &Server{}
	m := s.newPushMemo()
	rs := []types.Resource{&clusterv3.Cluster{Name: "b"}, &clusterv3.Cluster{Name: "a", AltStatName: "x"}}
	h, _ := m.hash(rs)
	sr := m.share(cds, h, rs)
	if len(sr.encoded) != 2 {
		t.Fatalf("encoded = %d entries, want 2", len(sr.encoded))
	}
	for i, r := range sr.resources {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sr.encoded[i], want) {
			t.Errorf("encoding of %s differs from a deterministic marshal", cachev3.GetResourceName(r))
		}
	}
	var st prepStats
	body, err := sr.prepare(&st, resourcev3.ClusterType, keyOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	var resp discoveryv3.DiscoveryResponse
	if err := proto.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 2 || !slices.Equal(resp.GetResources()[0].GetValue(), sr.encoded[0]) {
		t.Errorf("response resources %v do not carry the shared encodings", resp.GetResources())
	}
	if got := clusterNames(t, &resp); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("clusters = %v, want [a b]", got)
	}
}
