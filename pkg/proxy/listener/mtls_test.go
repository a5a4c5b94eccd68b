package listener

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/pkg/echotest"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

func inboundChain(t *testing.T, port uint32, proto string) *listenerv3.FilterChain {
	fc := &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: proto}}
	if port > 0 {
		fc.FilterChainMatch.DestinationPort = wrapperspb.UInt32(port)
	}
	if proto == "tls" {
		a, err := anypb.New(&tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	return fc
}

func TestInboundTLSFor(t *testing.T) {
	cases := []struct {
		name   string
		chains []*listenerv3.FilterChain
		port   int
		want   string
	}{
		{"no listener", nil, 9080, "DISABLE"},
		{"plaintext chain", []*listenerv3.FilterChain{inboundChain(t, 9080, "")}, 9080, "DISABLE"},
		{"strict", []*listenerv3.FilterChain{inboundChain(t, 9080, "tls")}, 9080, "STRICT"},
		{"permissive", []*listenerv3.FilterChain{inboundChain(t, 9080, "tls"), inboundChain(t, 9080, "raw_buffer")}, 9080, "PERMISSIVE"},
		{"other port strict does not apply", []*listenerv3.FilterChain{inboundChain(t, 9090, "tls"), inboundChain(t, 9080, "")}, 9080, "DISABLE"},
		{"portless fallback", []*listenerv3.FilterChain{inboundChain(t, 0, "tls"), inboundChain(t, 9090, "")}, 9080, "STRICT"},
		{"tls match without a tls context is not tls", []*listenerv3.FilterChain{{FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9080), TransportProtocol: "tls"}}}, 9080, "DISABLE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := xdsclient.NewResources()
			if tc.chains != nil {
				res.Listeners["virtualInbound"] = &listenerv3.Listener{Name: "virtualInbound", FilterChains: tc.chains}
			}
			if got := InboundTLSFor(res, tc.port).Mode(); got != tc.want {
				t.Errorf("mode = %s, want %s", got, tc.want)
			}
		})
	}
}

// testPKI is a root and leaves with SPIFFE IDs.
type testPKI struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	pool    *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &testPKI{root: root, rootKey: key, pool: pool}
}

func (p *testPKI) leaf(t *testing.T, spiffe string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffe)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, &key.PublicKey, p.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMTLSListener runs real TLS on 127.0.0.1 through an MTLSListener for
// each policy: the server echoes the peer principal it saw ("-" for none).
func TestMTLSListener(t *testing.T) {
	pki := newTestPKI(t)
	serverCert := pki.leaf(t, "spiffe://cluster.local/ns/default/sa/server")
	clientCert := pki.leaf(t, "spiffe://cluster.local/ns/default/sa/client")
	strangerCert := newTestPKI(t).leaf(t, "spiffe://cluster.local/ns/default/sa/client")
	for _, tc := range []struct {
		pol            InboundTLS
		plainOK, tlsOK bool
	}{
		{InboundTLS{TLS: true}, false, true},
		{InboundTLS{TLS: true, Plain: true}, true, true},
		{InboundTLS{Plain: true}, true, false},
	} {
		t.Run(tc.pol.Mode(), func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ml := &MTLSListener{Listener: raw, HandshakeTimeout: 2 * time.Second,
				Config: func() *tls.Config {
					return &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool}
				},
				Policy: func(net.Conn) InboundTLS { return tc.pol },
			}
			defer ml.Close()
			echotest.Serve(t, ml, func(c net.Conn) {
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				p := PeerPrincipal(PeerTLS(c))
				if p == "" {
					p = "-"
				}
				_, _ = io.WriteString(c, strings.TrimSpace(line)+" "+p+"\n")
			})
			roundTrip := func(c net.Conn) (string, error) {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := io.WriteString(c, "ping\n"); err != nil {
					return "", err
				}
				s, err := bufio.NewReader(c).ReadString('\n')
				return strings.TrimSpace(s), err
			}
			plain, err := net.Dial("tcp", raw.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			got, err := roundTrip(plain)
			if tc.plainOK != (err == nil && got == "ping -") {
				t.Errorf("plaintext: got %q err %v, want accepted=%v", got, err, tc.plainOK)
			}
			dialTLS := func(cert tls.Certificate) (string, error) {
				c, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pki.pool, InsecureSkipVerify: true})
				if err != nil {
					return "", err
				}
				return roundTrip(c)
			}
			got, err = dialTLS(clientCert)
			if tc.tlsOK != (err == nil && got == "ping spiffe://cluster.local/ns/default/sa/client") {
				t.Errorf("mTLS: got %q err %v, want accepted=%v", got, err, tc.tlsOK)
			}
			if got, err := dialTLS(strangerCert); err == nil && got != "" {
				t.Errorf("certificate from another root accepted: %q", got)
			}
		})
	}
}
