package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
)

// TestUpstreamPeerExchange: an ISTIO_MUTUAL cluster with Istio's
// istio.metadata_exchange filter runs the exchange on opaque connections
// that negotiate istio-peer-exchange (real TLS on 127.0.0.1): DialContext
// returns the server's metadata and the payload without the frames; the
// server gets the client's frame first. Without the filter, no exchange.
func TestUpstreamPeerExchange(t *testing.T) {
	t.Parallel()
	serverCert, serverPool := selfSigned(t, "spiffe://cluster.local/ns/default/sa/db")
	clientCert, clientPool := selfSigned(t, "spiffe://cluster.local/ns/default/sa/client")
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: clientPool, NextProtos: []string{"istio-peer-exchange", "istio"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	md, _ := structpb.NewStruct(map[string]any{"WORKLOAD_NAME": "db-v1", "NAMESPACE": "default"})
	serverFrame, err := peerexchange.Encode(md, "sidecar~db-v1.default")
	if err != nil {
		t.Fatal(err)
	}
	clientMD, _ := structpb.NewStruct(map[string]any{"WORKLOAD_NAME": "client-v2"})
	clientFrame, _ := peerexchange.Encode(clientMD, "sidecar~client-v2.default")
	serverSaw := make(chan string, 4)
	echotest.Serve(t, lis, func(c net.Conn) {
		tc := c.(*tls.Conn)
		_ = tc.SetDeadline(time.Now().Add(20 * time.Second))
		if tc.Handshake() != nil {
			return
		}
		var conn net.Conn = tc
		if tc.ConnectionState().NegotiatedProtocol == peerexchange.Protocol {
			xc, err := peerexchange.Exchange(tc, serverFrame, time.Now().Add(20*time.Second))
			if err != nil {
				serverSaw <- "exchange error: " + err.Error()
				return
			}
			serverSaw <- xc.Peer.Metadata.GetFields()["WORKLOAD_NAME"].GetStringValue()
			conn = xc
		} else {
			serverSaw <- "no exchange (" + tc.ConnectionState().NegotiatedProtocol + ")"
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		_, _ = io.WriteString(conn, "echo "+line)
	})
	host, ps, _ := net.SplitHostPort(lis.Addr().String())
	port, _ := strconv.Atoi(ps)
	cfg, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: peerexchange.ConfigTypeURL, Value: &structpb.Struct{Fields: map[string]*structpb.Value{
		"protocol": structpb.NewStringValue(peerexchange.Protocol)}}})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(name string, filters ...*clusterv3.Filter) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}, TransportSocket: istioMutual(t),
			Filters: filters, LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
				Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{ep(host, uint32(port))}}}}}
	}
	clusters := map[string]*clusterv3.Cluster{
		"mx":    mk("mx", &clusterv3.Filter{Name: peerexchange.FilterName, TypedConfig: cfg}),
		"plain": mk("plain"),
		"other": mk("other", &clusterv3.Filter{Name: "envoy.filters.network.unknown"}),
	}
	m, _ := newTestManager()
	m.SetMTLS(func() *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: serverPool, InsecureSkipVerify: true}
	})
	m.SetPeerExchange(clientFrame)
	set, err := m.Build(clusters, nil, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := set.Clusters["mx"]; c.PeerExchange != peerexchange.Protocol || len(c.Warnings) != 0 {
		t.Fatalf("mx: PeerExchange %q warnings %v", c.PeerExchange, c.Warnings)
	}
	if c := set.Clusters["other"]; len(c.Warnings) != 1 {
		t.Errorf("unknown cluster filter: warnings %v, want one", c.Warnings)
	}
	roundTrip := func(c net.Conn) string {
		t.Helper()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		s, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	conn, err := set.Clusters["mx"].DialContext(context.Background(), "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	xc, ok := conn.(*peerexchange.Conn)
	if !ok || xc.Peer == nil || xc.Peer.ID != "sidecar~db-v1.default" || xc.Peer.Metadata.GetFields()["WORKLOAD_NAME"].GetStringValue() != "db-v1" {
		t.Fatalf("mx dial: %T %+v", conn, conn)
	}
	if got := roundTrip(conn); got != "echo ping\n" {
		t.Errorf("mx payload: %q", got)
	}
	if s := <-serverSaw; s != "client-v2" {
		t.Errorf("server saw %q, want the client's frame", s)
	}

	conn, err = set.Clusters["plain"].DialContext(context.Background(), "tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(*tls.Conn); !ok {
		t.Errorf("cluster without the filter: %T, want *tls.Conn (no exchange)", conn)
	}
	conn.Close()
	<-serverSaw
}
