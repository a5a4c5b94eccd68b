package listener

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// mxChain is an inbound mTLS chain as weft's (and Istio's) translator
// emits it: ALPN alpn, istio.metadata_exchange first when mx.
func mxChain(t *testing.T, port uint32, alpn []string, mx bool) *listenerv3.FilterChain {
	t.Helper()
	fc := inboundChain(t, port, "tls")
	ctx := &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: &tlsv3.CommonTlsContext{AlpnProtocols: alpn}}
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	if mx {
		cfg, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: peerexchange.ConfigTypeURL, Value: &structpb.Struct{Fields: map[string]*structpb.Value{
			"protocol": structpb.NewStringValue(peerexchange.Protocol)}}})
		if err != nil {
			t.Fatal(err)
		}
		fc.Filters = []*listenerv3.Filter{{Name: peerexchange.FilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: cfg}}}
	}
	return fc
}

func TestInboundTLSForPeerExchange(t *testing.T) {
	res := xdsclient.NewResources()
	res.Listeners["virtualInbound"] = &listenerv3.Listener{Name: "virtualInbound", FilterChains: []*listenerv3.FilterChain{
		mxChain(t, 8080, []string{"h2", "http/1.1"}, true),                         // HTTP: no exchange ALPN
		mxChain(t, 9000, []string{"istio-peer-exchange", "h2", "http/1.1"}, true),  // opaque TCP
		mxChain(t, 7000, []string{"istio-peer-exchange", "h2", "http/1.1"}, false), // older control plane: no filter
	}}
	for _, tc := range []struct {
		port     int
		alpn     []string
		exchange string
	}{
		{9000, []string{"istio-peer-exchange", "h2", "http/1.1", "istio"}, "istio-peer-exchange"},
		{8080, []string{"h2", "http/1.1", "istio"}, "istio-peer-exchange"},
		{7000, []string{"istio-peer-exchange", "h2", "http/1.1", "istio"}, ""},
		// Explicit mode: every chain; the exchange protocol first.
		{AnyPort, []string{"istio-peer-exchange", "h2", "http/1.1", "istio"}, "istio-peer-exchange"},
	} {
		got := InboundTLSFor(res, tc.port)
		if !slices.Equal(got.ALPN, tc.alpn) || got.Exchange != tc.exchange || got.Mode() != "STRICT" {
			t.Errorf("port %d: %+v, want ALPN %v exchange %q", tc.port, got, tc.alpn, tc.exchange)
		}
	}
	// The cache answers the same, and recomputes for a new configuration.
	var c InboundTLSCache
	if got := c.For(res, 9000); got.Exchange != peerexchange.Protocol || !slices.Equal(got.ALPN, InboundTLSFor(res, 9000).ALPN) {
		t.Errorf("cached: %+v", got)
	}
	res2 := xdsclient.NewResources()
	res2.Listeners["virtualInbound"] = &listenerv3.Listener{Name: "virtualInbound", FilterChains: []*listenerv3.FilterChain{
		mxChain(t, 9000, []string{"h2", "http/1.1"}, false)}}
	if got := c.For(res2, 9000); got.Exchange != "" || slices.Contains(got.ALPN, peerexchange.Protocol) {
		t.Errorf("cache kept the old configuration: %+v", got)
	}
}

// TestMTLSListenerPeerExchange runs real mutual TLS on 127.0.0.1 through
// an MTLSListener for an opaque TCP port with the exchange: an exchanging
// client gets the server's metadata and its own reaches the server's
// labels, the payload arrives unchanged both ways; a plain Go TLS client
// with ALPN "istio" works without an exchange; a client announcing an
// oversized frame is closed.
func TestMTLSListenerPeerExchange(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	serverCert := pki.leaf(t, "spiffe://cluster.local/ns/db-ns/sa/db")
	clientCert := pki.leaf(t, "spiffe://cluster.local/ns/client-ns/sa/client")
	serverID := Identity{Workload: "db-v1", Namespace: "db-ns", Labels: map[string]string{"app": "db", "version": "v1"}}
	clientID := Identity{Workload: "client-v2", Namespace: "client-ns", Labels: map[string]string{"app": "client", "version": "v2"}}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	exchanged := make(chan error, 10)
	ml := &MTLSListener{Listener: raw, HandshakeTimeout: 20 * time.Second,
		Config: func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool,
				NextProtos: []string{"istio", "h2", "http/1.1"}}
		},
		Policy: func(net.Conn) InboundTLS {
			return InboundTLS{TLS: true, ALPN: []string{"istio-peer-exchange", "h2", "http/1.1", "istio"}, Exchange: peerexchange.Protocol}
		},
		PeerFrame:  PeerExchangeFrame(serverID),
		OnExchange: func(err error) { exchanged <- err },
	}
	t.Cleanup(func() { ml.Close() })
	h := &Handler{Direction: Inbound, Ident: serverID}
	type seen struct {
		app, version, workload, ns, policy string
	}
	seenc := make(chan seen, 10)
	echotest.Serve(t, ml, func(c net.Conn) {
		l := h.tcpLabels("inbound|9000||", "", "", h.principals.of(tlsLeaf(PeerTLS(c))), h.peers.ofExchange(downstreamPeer(c)))
		seenc <- seen{l.SourceApp, l.SourceVersion, l.SourceWorkload, l.SourceWorkloadNamespace, l.ConnectionSecurityPolicy}
		_, _ = io.Copy(c, c) // echo
	})
	payload := "\x3d\x23\x04\x67 looks like a header but is the app's\n"
	echo := func(t *testing.T, c io.ReadWriter) {
		t.Helper()
		if _, err := io.WriteString(c, payload); err != nil {
			t.Fatal(err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != payload {
			t.Fatalf("echo %q, %v; want %q", got, err, payload)
		}
	}
	dial := func(t *testing.T, alpn ...string) *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: pki.pool,
			InsecureSkipVerify: true, NextProtos: alpn})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		return c
	}

	t.Run("exchanging client", func(t *testing.T) {
		c := dial(t, "istio-peer-exchange", "istio")
		if p := c.ConnectionState().NegotiatedProtocol; p != "istio-peer-exchange" {
			t.Fatalf("negotiated %q", p)
		}
		xc, err := peerexchange.Exchange(c, PeerExchangeFrame(clientID), time.Now().Add(20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		// The server's frame says who it is; the client's labels come from it.
		ch := &Handler{Direction: Outbound, Ident: clientID}
		l := ch.tcpLabels("outbound|9000||db.db-ns.svc.cluster.local", "", "", "spiffe://cluster.local/ns/db-ns/sa/db", ch.peers.ofExchange(xc.Peer))
		if l.DestinationApp != "db" || l.DestinationVersion != "v1" || l.DestinationWorkload != "db-v1" || l.DestinationCanonicalService != "db" ||
			l.DestinationWorkloadNamespace != "db-ns" || l.Reporter != "source" || l.SourceApp != "client" {
			t.Errorf("client's labels: %+v", l)
		}
		echo(t, xc)
		if err := <-exchanged; err != nil {
			t.Errorf("server's exchange: %v", err)
		}
		want := seen{"client", "v2", "client-v2", "client-ns", "mutual_tls"}
		if s := <-seenc; s != want {
			t.Errorf("server's labels %+v, want %+v", s, want)
		}
	})
	t.Run("plain Go TLS client, ALPN istio", func(t *testing.T) {
		c := dial(t, "istio")
		if p := c.ConnectionState().NegotiatedProtocol; p != "istio" {
			t.Fatalf("negotiated %q", p)
		}
		echo(t, c)
		// No exchange: the peer is known by its certificate only.
		want := seen{"unknown", "unknown", "unknown", "client-ns", "mutual_tls"}
		if s := <-seenc; s != want {
			t.Errorf("server's labels %+v, want %+v", s, want)
		}
	})
	t.Run("client without the exchange but its ALPN", func(t *testing.T) {
		c := dial(t, "istio-peer-exchange")
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		p, err := peerexchange.Read(br) // the server's frame comes first
		if err != nil || p.Metadata.Fields["WORKLOAD_NAME"].GetStringValue() != "db-v1" {
			t.Fatalf("server frame %+v, %v", p, err)
		}
		if got, err := br.ReadString('\n'); err != nil || got != "hello\n" {
			t.Fatalf("echo %q, %v", got, err)
		}
		if err := <-exchanged; !errors.Is(err, peerexchange.ErrNoHeader) {
			t.Errorf("server's exchange: %v, want ErrNoHeader", err)
		}
		<-seenc
	})
	t.Run("oversized frame", func(t *testing.T) {
		c := dial(t, "istio-peer-exchange")
		if _, err := c.Write([]byte{0x3d, 0x23, 0x04, 0x67, 0x7f, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
		if err := <-exchanged; !errors.Is(err, peerexchange.ErrTooLarge) {
			t.Errorf("server's exchange: %v, want ErrTooLarge", err)
		}
		br := bufio.NewReader(c)
		if _, err := peerexchange.Read(br); err != nil {
			t.Fatalf("server frame: %v", err)
		}
		if b, err := br.ReadByte(); err == nil {
			t.Errorf("connection still open: read %q", b)
		}
	})
}

// BenchmarkInboundTLSPolicy is the per-connection policy lookup of the
// inbound mTLS listener (HTTP and TCP connections alike) on a sidecar
// with an HTTP and a TCP port: "uncached" computes it from the chains as
// every connection did before (now also reading their ALPN and filters),
// "cached" is what runs now. The ratio is printed.
func BenchmarkInboundTLSPolicy(b *testing.B) {
	t := &testing.T{}
	res := xdsclient.NewResources()
	res.Listeners["virtualInbound"] = &listenerv3.Listener{Name: "virtualInbound", FilterChains: []*listenerv3.FilterChain{
		mxChain(t, 8080, []string{"h2", "http/1.1"}, true),
		mxChain(t, 9000, []string{"istio-peer-exchange", "h2", "http/1.1"}, true),
	}}
	var ns [2]float64
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = InboundTLSFor(res, 8080)
		}
		ns[0] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		c := &InboundTLSCache{}
		for b.Loop() {
			_ = c.For(res, 8080)
		}
		ns[1] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	if ns[0] > 0 && ns[1] > 0 {
		b.Logf("per connection: cached %.0f ns vs uncached %.0f ns (%.2fx)", ns[1], ns[0], ns[1]/ns[0])
	}
}
