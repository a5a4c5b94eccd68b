package listener

import (
	"crypto/x509"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestPeerInfoLabelRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   PeerInfo
	}{
		{"none", nil, PeerInfo{Workload: "wl", Namespace: "ns", App: "unknown", Version: "unknown", CanonicalService: "wl", CanonicalRevision: "latest", Cluster: "c1"}},
		{"app and version", map[string]string{"app": "reviews", "version": "v2"},
			PeerInfo{Workload: "wl", Namespace: "ns", App: "reviews", Version: "v2", CanonicalService: "reviews", CanonicalRevision: "v2", Cluster: "c1"}},
		{"kubernetes recommended labels win over app/version", map[string]string{"app": "a", "version": "v", labelAppName: "k8s-name", labelAppVersion: "1.2"},
			PeerInfo{Workload: "wl", Namespace: "ns", App: "k8s-name", Version: "1.2", CanonicalService: "k8s-name", CanonicalRevision: "1.2", Cluster: "c1"}},
		{"canonical labels win", map[string]string{"app": "a", "version": "v", LabelCanonicalName: "canon", LabelCanonicalRevision: "r7"},
			PeerInfo{Workload: "wl", Namespace: "ns", App: "a", Version: "v", CanonicalService: "canon", CanonicalRevision: "r7", Cluster: "c1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := peerInfoFrom("wl", "ns", "c1", tc.labels); got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if got := peerInfoFrom("", "", "", nil); got != *unknownPeer {
		t.Fatalf("empty metadata: %+v, want %+v", got, *unknownPeer)
	}
}

func TestPeerMetadataRoundTrip(t *testing.T) {
	id := Identity{Workload: "reviews-v2", Namespace: "shop", ServiceAccount: "bookinfo-reviews", Cluster: "east",
		Labels: map[string]string{"app": "reviews", "version": "v2"}}
	s := newSelf(id)
	if s.md[0] == "" || s.md[1] == "" {
		t.Fatalf("metadata values %q", s.md)
	}
	got, err := decodePeerMetadata(s.md[0])
	if err != nil {
		t.Fatal(err)
	}
	if *got != s.info {
		t.Fatalf("decoded %+v, want %+v", *got, s.info)
	}
	if want := (PeerInfo{Workload: "reviews-v2", Namespace: "shop", App: "reviews", Version: "v2", CanonicalService: "reviews",
		CanonicalRevision: "v2", Cluster: "east"}); s.info != want {
		t.Fatalf("self %+v, want %+v", s.info, want)
	}
	if s.principal != "unknown" || newSelf(Identity{Workload: "w"}).info.Cluster != DefaultCluster {
		t.Fatalf("defaults: principal %q cluster %q", s.principal, newSelf(Identity{Workload: "w"}).info.Cluster)
	}
	if got, err := decodePeerMetadata(strings.TrimRight(s.md[0], "=")); err != nil || *got != s.info {
		t.Fatalf("unpadded value: %+v %v", got, err)
	}
	for _, bad := range []string{"", "not base64!", "aGVsbG8="} {
		var c peerCache
		if p := c.get(bad); p != unknownPeer {
			t.Errorf("get(%q) = %+v, want unknown", bad, p)
		}
	}
}

func TestPeerCacheNoAllocs(t *testing.T) {
	var c peerCache
	md := newSelf(Identity{Workload: "a", Namespace: "b"}).md[0]
	first := c.get(md)
	if first.Workload != "a" {
		t.Fatalf("decoded %+v", first)
	}
	if n := testing.AllocsPerRun(100, func() {
		if c.get(md) != first {
			t.Fatal("cache returned another value")
		}
	}); n != 0 {
		t.Fatalf("cached lookup allocates %v times", n)
	}
	var pc principalCache
	u, _ := url.Parse("spiffe://cluster.local/ns/shop/sa/reviews")
	cert := &x509.Certificate{URIs: []*url.URL{u}}
	if got := pc.of(cert); got != u.String() || spiffeNamespace(got) != "shop" {
		t.Fatalf("principal %q namespace %q", got, spiffeNamespace(got))
	}
	if n := testing.AllocsPerRun(100, func() { _ = pc.of(cert) }); n != 0 {
		t.Fatalf("cached principal allocates %v times", n)
	}
	if pc.of(nil) != "" || pc.of(&x509.Certificate{}) != "" {
		t.Fatal("principal of no certificate")
	}
}

func TestGRPCStatusLabel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hdr    http.Header
		status int
		want   string
	}{
		{"trailer", http.Header{trailerGRPCStatus: {"0"}}, 200, "0"},
		{"trailers-only header", http.Header{"Grpc-Status": {"5"}}, 200, "5"},
		{"trailer wins", http.Header{"Grpc-Status": {"5"}, trailerGRPCStatus: {"16"}}, 200, "16"},
		{"no status: from HTTP 503", http.Header{}, 503, "14"},
		{"no response", http.Header{}, 0, ""},
		{"out of range", http.Header{"Grpc-Status": {"99"}}, 200, "2"},
		{"garbage", http.Header{"Grpc-Status": {"x"}}, 200, "2"},
		{"empty", http.Header{"Grpc-Status": {""}}, 200, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := grpcStatus(tc.hdr, tc.status); got != tc.want {
				t.Fatalf("grpcStatus = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPeerCacheConcurrent: concurrent lookups of more distinct values than
// the cache keeps all decode correctly (run with -race).
func TestPeerCacheConcurrent(t *testing.T) {
	var c peerCache
	vals := make([]string, maxPeerCache+50)
	for i := range vals {
		vals[i] = newSelf(Identity{Workload: "w" + strconv.Itoa(i), Namespace: "ns"}).md[0]
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, v := range vals {
				if p := c.get(v); p.Workload != "w"+strconv.Itoa(i) {
					t.Errorf("get(%d) = %+v", i, p)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := len(*c.m.Load()); n != maxPeerCache {
		t.Fatalf("cache holds %d values, want the bound %d", n, maxPeerCache)
	}
}
