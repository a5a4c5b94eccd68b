package listener

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
	"github.com/weftmesh/weft/pkg/proxy/xdstest"
)

func TestServiceOf(t *testing.T) {
	tests := []struct{ cluster, authority, want string }{
		{"outbound|9080|v1|reviews.default.svc.cluster.local", "x", "reviews.default.svc.cluster.local"},
		{"inbound|9080||", "reviews:9080", "reviews"},
		{"PassthroughCluster", "10.0.0.1:80", ""},
		{"", "details.default.svc.cluster.local", "details.default.svc.cluster.local"},
	}
	for _, tc := range tests {
		if got := serviceOf(tc.cluster, tc.authority); got != tc.want {
			t.Errorf("serviceOf(%q, %q) = %q, want %q", tc.cluster, tc.authority, got, tc.want)
		}
	}
}

func TestServiceFQDN(t *testing.T) {
	tests := []struct{ host, ns, want string }{
		{"details", "default", "details.default.svc.cluster.local"},
		{"details", "", "details.default.svc.cluster.local"},
		{"reviews", "bookinfo", "reviews.bookinfo.svc.cluster.local"},
		{"details.other", "default", "details.other.svc.cluster.local"},
		{"details.other.svc", "default", "details.other.svc.cluster.local"},
		{"details.default.svc.cluster.local", "x", "details.default.svc.cluster.local"},
		{"Details.Default.svc.cluster.local.", "x", "details.default.svc.cluster.local"},
		{"extsvc.example.com", "default", "extsvc.example.com"},
		{"example.com", "default", "example.com"},
		{"httpbin.org", "default", "httpbin.org"},
		{"a.b.c.d", "default", "a.b.c.d"},
		{"10.0.0.1", "default", "10.0.0.1"},
		{"", "default", ""},
	}
	for _, tc := range tests {
		if got := ServiceFQDN(tc.host, tc.ns); got != tc.want {
			t.Errorf("ServiceFQDN(%q, %q) = %q, want %q", tc.host, tc.ns, got, tc.want)
		}
	}
}

func TestHTTPToGRPC(t *testing.T) {
	for status, want := range map[int]int{503: 14, 504: 14, 404: 12, 403: 7, 401: 16, 400: 13, 500: 2} {
		if got := httpToGRPC(status); got != want {
			t.Errorf("httpToGRPC(%d) = %d, want %d", status, got, want)
		}
	}
}

func TestRequestIDShape(t *testing.T) {
	a, b := newRequestID(1), newRequestID(2)
	if len(a) != 36 || strings.Count(a, "-") != 4 || a == b {
		t.Fatalf("ids %q %q", a, b)
	}
}

// TestSniff classifies real connections: HTTP/1 methods and the h2c preface
// go to Accept, other bytes and silent clients to OnTCP.
func TestSniff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp := make(chan string, 4)
	sl := &SniffListener{Listener: inner, SniffTimeout: 100 * time.Millisecond, OnTCP: func(c net.Conn) {
		defer c.Close()
		b := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := io.ReadFull(c, b)
		tcp <- string(b[:n])
	}}
	defer sl.Close()
	httpc := make(chan string, 4)
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			b := make([]byte, 4)
			_, _ = io.ReadFull(c, b)
			httpc <- string(b)
			c.Close()
		}
	}()
	tests := []struct {
		name, send string
		delay      time.Duration
		wantHTTP   bool
	}{
		{"http/1 GET", "GET / HTTP/1.1\r\n", 0, true},
		{"h2c preface", "PRI * HTTP/2.0\r\n", 0, true},
		{"binary", "\x16\x03\x01\x00", 0, false},
		{"server-first client speaks late", "ping", 300 * time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", inner.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			time.Sleep(tc.delay)
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-httpc:
				if !tc.wantHTTP || got != tc.send[:4] {
					t.Fatalf("went to HTTP with %q", got)
				}
			case got := <-tcp:
				if tc.wantHTTP || got != tc.send[:4] {
					t.Fatalf("went to TCP with %q", got)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("not classified")
			}
		})
	}
}

func TestBuildReportsUnexecutedFilters(t *testing.T) {
	l := xdstest.HTTPListener(9080)
	h, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "x",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: xdstest.RouteConfig(9080, "a", xdstest.ToCluster("r", "c"))},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.rbac"}, {Name: "envoy.filters.http.router"}}})
	if err != nil {
		t.Fatal(err)
	}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: h}
	res := xdsclient.NewResources()
	res.Listeners[l.Name] = l
	rt, err := Build(res, cluster.NewManager(nil, nil, nil), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rt.Warnings) != 1 || !strings.Contains(rt.Warnings[0], "envoy.filters.http.rbac") {
		t.Fatalf("warnings %q", rt.Warnings)
	}
	if rt.Routes["9080"] == nil {
		t.Fatal("inline route config of an outbound listener not compiled under its port")
	}
}

// TestServiceFQDNCache: the handler's remembered names are ServiceFQDN's,
// and a remembered one costs no allocation.
func TestServiceFQDNCache(t *testing.T) {
	h := &Handler{Ident: Identity{Namespace: "shop"}}
	for _, host := range []string{"bench", "details.default", "example.com", "10.0.0.1", "Bench", ""} {
		if got, want := h.serviceFQDN(host), ServiceFQDN(host, "shop"); got != want {
			t.Errorf("serviceFQDN(%q) = %q, want %q", host, got, want)
		}
	}
	host := string([]byte("bench")) // not a constant: as a request's Host
	if allocs := testing.AllocsPerRun(100, func() { _ = h.serviceFQDN(host) }); allocs != 0 {
		t.Errorf("remembered serviceFQDN: %.0f allocations, want 0", allocs)
	}
}
