package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/echotest"
)

// selfSigned returns a certificate whose only identity is the SPIFFE ID.
func selfSigned(t *testing.T, spiffe string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffe)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, pool
}

func istioMutual(t *testing.T, sans ...string) *corev3.TransportSocket {
	vc := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	a, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: "outbound_.80_._.svc", CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: WorkloadCertSecret}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: vc, ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: RootCASecret}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

// TestUpstreamMTLS dials a real TLS server on 127.0.0.1 through ISTIO_MUTUAL
// clusters: the server's SPIFFE ID must match the cluster's SANs, and the
// server sees the workload certificate.
func TestUpstreamMTLS(t *testing.T) {
	const serverID, clientID = "spiffe://cluster.local/ns/default/sa/server", "spiffe://cluster.local/ns/default/sa/client"
	serverCert, serverPool := selfSigned(t, serverID)
	clientCert, clientPool := selfSigned(t, clientID)
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: clientPool, NextProtos: []string{"istio-peer-exchange", "istio"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	echotest.Serve(t, lis, func(c net.Conn) {
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil {
			return
		}
		_, _ = io.WriteString(c, tc.ConnectionState().PeerCertificates[0].URIs[0].String()+"\n")
	})
	host, ps, _ := net.SplitHostPort(lis.Addr().String())
	var port uint32
	for _, ch := range ps {
		port = port*10 + uint32(ch-'0')
	}
	mk := func(name string, sans ...string) *clusterv3.Cluster {
		c := &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}, TransportSocket: istioMutual(t, sans...)}
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{ep(host, port)}}}}
		return c
	}
	clusters := map[string]*clusterv3.Cluster{"any": mk("any"), "match": mk("match", serverID), "mismatch": mk("mismatch", "spiffe://cluster.local/ns/default/sa/other")}

	// Without a workload certificate the socket is a warning, not executed.
	m, _ := newTestManager()
	set, err := m.Build(clusters, nil, edsName, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := set.Clusters["any"]; c.MTLS != nil || len(c.Warnings) == 0 {
		t.Fatalf("no certificate: MTLS=%v warnings=%v, want a warning", c.MTLS, c.Warnings)
	}

	m, _ = newTestManager()
	m.SetMTLS(func() *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{clientCert}, RootCAs: serverPool, InsecureSkipVerify: true,
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				_, err = c.Verify(x509.VerifyOptions{Roots: serverPool})
				return err
			}}
	})
	if set, err = m.Build(clusters, nil, edsName, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cluster string
		ok      bool
	}{{"any", true}, {"match", true}, {"mismatch", false}} {
		c := set.Clusters[tc.cluster]
		if c.MTLS == nil || len(c.Warnings) != 0 {
			t.Fatalf("%s: MTLS=%v warnings=%v", tc.cluster, c.MTLS, c.Warnings)
		}
		conn, err := c.DialContext(context.Background(), "tcp", lis.Addr().String())
		if (err == nil) != tc.ok {
			t.Errorf("%s: dial err %v, want ok=%v", tc.cluster, err, tc.ok)
		}
		if err != nil {
			continue
		}
		b := make([]byte, 128)
		n, _ := conn.Read(b)
		conn.Close()
		if got := strings.TrimSpace(string(b[:n])); got != clientID {
			t.Errorf("%s: server saw %q, want %q", tc.cluster, got, clientID)
		}
	}
	// The HTTP transport dials TLS too, without offering
	// istio-peer-exchange (HTTP runs no TCP metadata exchange).
	if conn, err := set.Clusters["match"].Transport.DialContext(context.Background(), "tcp", lis.Addr().String()); err != nil {
		t.Errorf("transport dial: %v", err)
	} else if tc, ok := conn.(*tls.Conn); !ok {
		t.Errorf("transport dial returned %T, want *tls.Conn", conn)
		conn.Close()
	} else {
		if p := tc.ConnectionState().NegotiatedProtocol; p != "istio" {
			t.Errorf("HTTP transport negotiated %q, want istio", p)
		}
		conn.Close()
	}
}

// TestOriginationUnavailable: a TLS-originating cluster whose client
// credential is an SDS reference the proxy cannot fetch, or whose CA file
// is missing, is accepted with a warning and refuses to dial (never
// plaintext); a valid one dials TLS with the configured SNI.
func TestOriginationUnavailable(t *testing.T) {
	serverCert, _ := selfSigned(t, "spiffe://example/server")
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	sni := make(chan string, 4)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			if err := c.(*tls.Conn).Handshake(); err == nil {
				sni <- c.(*tls.Conn).ConnectionState().ServerName
			}
			c.Close()
		}
	}()
	socket := func(ctx *tlsv3.UpstreamTlsContext) *corev3.TransportSocket {
		a, err := anypb.New(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	untrusted := &tlsv3.CertificateValidationContext{TrustChainVerification: tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED}
	clusters := map[string]*clusterv3.Cluster{}
	for name, ctx := range map[string]*tlsv3.UpstreamTlsContext{
		"sds": {Sni: "ext.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://client-credential"}}}},
		"nofile": {Sni: "ext.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/ca.pem"}}}}}},
		"skipverify": {Sni: "ext.example.com", CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: untrusted}}},
		"verify":     {Sni: "ext.example.com"}, // system roots: the self-signed server fails
	} {
		clusters[name] = &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}, TransportSocket: socket(ctx)}
	}
	m, _ := newTestManager()
	set, err := m.Build(clusters, nil, edsName, nil)
	if err != nil {
		t.Fatalf("update rejected: %v", err)
	}
	for _, name := range []string{"sds", "nofile"} {
		c := set.Clusters[name]
		if len(c.Warnings) == 0 || !strings.Contains(c.Warnings[0], "connections fail") {
			t.Errorf("%s: warnings %v", name, c.Warnings)
		}
		if conn, err := c.DialContext(context.Background(), "tcp", lis.Addr().String()); err == nil {
			conn.Close()
			t.Errorf("%s: dial succeeded", name)
		}
	}
	conn, err := set.Clusters["skipverify"].DialContext(context.Background(), "tcp", lis.Addr().String())
	if err != nil {
		t.Fatalf("insecureSkipVerify: %v", err)
	}
	conn.Close()
	if got := <-sni; got != "ext.example.com" {
		t.Errorf("SNI %q", got)
	}
	if conn, err := set.Clusters["verify"].DialContext(context.Background(), "tcp", lis.Addr().String()); err == nil {
		conn.Close()
		t.Error("a self-signed server passed verification against the system roots")
	}
}
