package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
)

// SDS secret names of Istio's mesh certificates (ISTIO_MUTUAL).
const (
	WorkloadCertSecret = "default"
	RootCASecret       = "ROOTCA"
)

// MTLSClient supplies the workload's mutual-TLS client configuration (the
// current certificate and roots, e.g. caclient.Rotator.ClientConfig).
type MTLSClient func() *tls.Config

// UpstreamMTLS is an executed ISTIO_MUTUAL transport socket.
type UpstreamMTLS struct {
	// SNI sent to the server (Istio's outbound_.PORT_._.HOST).
	SNI string
	// SANs, when not empty, are the accepted peer URI SANs (SPIFFE IDs);
	// empty accepts any SPIFFE ID that chains to the mesh roots.
	SANs []string
	// ALPN protocols offered on opaque connections (DialContext).
	ALPN []string
	// HTTPALPN is ALPN without istio-peer-exchange: the HTTP pools offer
	// it, as Envoy's istio.alpn filter overrides the protocols of Istio's
	// HTTP upstream connections, so HTTP never runs the TCP metadata
	// exchange.
	HTTPALPN []string
}

// SetMTLS makes the manager execute ISTIO_MUTUAL transport sockets (SDS
// "default"/"ROOTCA") with the configuration cfg returns. Without it those
// sockets are reported as warnings and connections stay plaintext. Call it
// before the first Build.
func (m *Manager) SetMTLS(cfg MTLSClient) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mtls = cfg
}

// compileTLS interprets the cluster's transport_socket: an
// upstream_proxy_protocol wrapper (see proxyprotocol.go) around TLS or
// raw_buffer, or TLS.
func (m *Manager) compileTLS(pc *clusterv3.Cluster, c *Cluster) error {
	ts, err := unwrapProxyProtocol(pc.GetTransportSocket(), c)
	if err != nil || ts == nil {
		return err
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if tc := ts.GetTypedConfig(); tc == nil || !tc.MessageIs(ctx) {
		c.Warnings = append(c.Warnings, "transport_socket "+ts.GetName()+" not executed: upstream connections are plaintext")
		return nil
	} else if err := tc.UnmarshalTo(ctx); err != nil {
		return fmt.Errorf("transport_socket: %w", err)
	}
	common := ctx.GetCommonTlsContext()
	sds := common.GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 || sds[0].GetName() != WorkloadCertSecret {
		return m.compileOrigination(ctx, c)
	}
	if m.mtls == nil {
		c.Warnings = append(c.Warnings, "transport_socket ISTIO_MUTUAL not executed (no workload certificate: --ca-address not set): upstream connections are plaintext")
		return nil
	}
	u := &UpstreamMTLS{SNI: ctx.GetSni(), ALPN: common.GetAlpnProtocols()}
	for _, p := range u.ALPN {
		if p != peerexchange.Protocol {
			u.HTTPALPN = append(u.HTTPALPN, p)
		}
	}
	vc := common.GetCombinedValidationContext().GetDefaultValidationContext()
	if vc == nil {
		vc = common.GetValidationContext()
	}
	for _, s := range vc.GetMatchTypedSubjectAltNames() {
		if s.GetSanType() == tlsv3.SubjectAltNameMatcher_URI && s.GetMatcher().GetExact() != "" {
			u.SANs = append(u.SANs, s.GetMatcher().GetExact())
		}
	}
	sort.Strings(u.SANs)
	c.MTLS, c.mtlsCfg = u, m.mtls
	return nil
}

func (u *UpstreamMTLS) key() string {
	if u == nil {
		return ""
	}
	return u.SNI + "|" + strings.Join(u.SANs, ",") + "|" + strings.Join(u.ALPN, ",")
}

// tlsDial wraps dial with a mutual-TLS handshake offering ALPN alpn.
func (u *UpstreamMTLS) tlsDial(cfg MTLSClient, alpn []string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := cfg().Clone()
		tc.ServerName = u.SNI
		tc.NextProtos = alpn
		if len(u.SANs) > 0 {
			verify := tc.VerifyPeerCertificate
			sans := u.SANs
			tc.VerifyPeerCertificate = func(rawCerts [][]byte, chains [][]*x509.Certificate) error {
				if verify != nil {
					if err := verify(rawCerts, chains); err != nil {
						return err
					}
				}
				return matchURISAN(rawCerts, sans)
			}
		}
		conn := tls.Client(raw, tc)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("upstream mTLS handshake with %s: %w", addr, err)
		}
		return conn, nil
	}
}

// matchURISAN checks that the leaf certificate has one of the URI SANs.
func matchURISAN(rawCerts [][]byte, sans []string) error {
	if len(rawCerts) == 0 {
		return fmt.Errorf("peer sent no certificate")
	}
	leaf, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	for _, u := range leaf.URIs {
		for _, s := range sans {
			if u.String() == s {
				return nil
			}
		}
	}
	return fmt.Errorf("peer identity %v is not one of %v", leaf.URIs, sans)
}

// DialContext opens an opaque upstream connection (tcp_proxy, CONNECT) to
// addr, a host of the cluster: mutual TLS when the cluster's transport
// socket is an executed ISTIO_MUTUAL one, TLS when it originates TLS
// (DestinationRule SIMPLE/MUTUAL), plaintext otherwise; a PROXY protocol
// cluster first sends the header of the downstream in ctx (WithDownstream).
// When the cluster has Istio's metadata exchange filter and the mutual
// TLS negotiated its protocol, the exchange runs before DialContext
// returns: the connection is a *peerexchange.Conn whose Peer is the
// server's metadata (nil when it sent none).
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: timeout}
	dial := c.wrapPP(d.DialContext, downstream{})
	if c.MTLS != nil && c.mtlsCfg != nil {
		dial = c.MTLS.tlsDial(c.mtlsCfg, c.MTLS.ALPN, dial)
	} else {
		dial = c.wrapTLS(dial)
	}
	conn, err := dial(ctx, network, addr)
	if err != nil || c.PeerExchange == "" || len(c.peerFrame) == 0 {
		return conn, err
	}
	return c.exchange(ctx, conn, addr, timeout)
}

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// wrapTLS adds the cluster's upstream TLS (ISTIO_MUTUAL or origination) to
// the HTTP pools' dial.
func (c *Cluster) wrapTLS(dial dialFunc) dialFunc {
	switch {
	case c.MTLS != nil && c.mtlsCfg != nil:
		return c.MTLS.tlsDial(c.mtlsCfg, c.MTLS.HTTPALPN, dial)
	case c.Origin != nil:
		return c.Origin.dial(dial)
	}
	return dial
}

// UpstreamTLS is an executed TLS-originating transport socket (a
// DestinationRule SIMPLE or MUTUAL, e.g. Istio's egress TLS origination):
// the application sends plaintext, the proxy speaks TLS upstream.
type UpstreamTLS struct {
	cfg *tls.Config
	id  string // digest of the socket's config and the files it read
	err error  // not executable: every dial fails with it
}

func (u *UpstreamTLS) key() string {
	if u == nil {
		return ""
	}
	return u.id
}

// dial wraps dial with a TLS handshake.
func (u *UpstreamTLS) dial(dial dialFunc) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if u.err != nil {
			return nil, u.err
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, u.cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("upstream TLS handshake with %s: %w", addr, err)
		}
		return conn, nil
	}
}

// compileOrigination executes an UpstreamTlsContext that is not
// ISTIO_MUTUAL, as Envoy does: SNI, ALPN, client certificate (MUTUAL) and
// the validation context (trusted CA, subject alt names, or accept
// untrusted for insecureSkipVerify). Without a trusted CA the system roots
// verify the server (Istio's VERIFY_CERTIFICATE_AT_CLIENT); without subject
// alt names the certificate must be valid for the SNI. A file that cannot
// be read or parsed, or an SDS secret weft proxy cannot fetch (an
// unresolved credentialName), makes every connection of this cluster fail
// (and is listed in its warnings) instead of going out in plaintext; the
// rest of the update applies (Envoy would reject the whole update).
func (m *Manager) compileOrigination(ctx *tlsv3.UpstreamTlsContext, c *Cluster) error {
	if err := m.buildOrigination(ctx, c); err != nil {
		c.Origin.err = fmt.Errorf("upstream TLS: %w", err)
		c.Warnings = append(c.Warnings, "transport_socket: "+err.Error()+": connections fail")
	}
	return nil
}

func (m *Manager) buildOrigination(ctx *tlsv3.UpstreamTlsContext, c *Cluster) error {
	common := ctx.GetCommonTlsContext()
	h := sha256.New()
	u := &UpstreamTLS{}
	defer func() { u.id = hex.EncodeToString(h.Sum(nil)); c.Origin = u }()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(ctx)
	if err != nil {
		return err
	}
	h.Write(b)
	if sds := common.GetTlsCertificateSdsSecretConfigs(); len(sds) > 0 {
		return fmt.Errorf("SDS secret %q is not available (credentialName not resolved by the control plane)", sds[0].GetName())
	}
	if vs := common.GetValidationContextSdsSecretConfig(); vs != nil {
		return fmt.Errorf("SDS validation secret %q is not available", vs.GetName())
	}
	read := func(what string, d *corev3.DataSource) ([]byte, error) {
		var out []byte
		switch {
		case d.GetFilename() != "":
			b, err := os.ReadFile(d.GetFilename())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			out = b
		case d.GetInlineBytes() != nil:
			out = d.GetInlineBytes()
		case d.GetInlineString() != "":
			out = []byte(d.GetInlineString())
		}
		h.Write(out)
		return out, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: ctx.GetSni(), NextProtos: common.GetAlpnProtocols()}
	if certs := common.GetTlsCertificates(); len(certs) > 0 {
		chain, err := read("certificate_chain", certs[0].GetCertificateChain())
		if err != nil {
			return err
		}
		key, err := read("private_key", certs[0].GetPrivateKey())
		if err != nil {
			return err
		}
		pair, err := tls.X509KeyPair(chain, key)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	vc := common.GetValidationContext()
	if vc == nil {
		vc = common.GetCombinedValidationContext().GetDefaultValidationContext()
	}
	cfg.InsecureSkipVerify = true // verified below, Envoy's way
	if vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED {
		u.cfg = cfg
		return nil
	}
	var roots *x509.CertPool
	if vc.GetTrustedCa() != nil {
		pemBytes, err := read("trusted_ca", vc.GetTrustedCa())
		if err != nil {
			return err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("trusted_ca: no PEM certificate")
		}
	} else if roots, err = x509.SystemCertPool(); err != nil {
		return fmt.Errorf("system roots: %w", err)
	}
	var dnsSANs, uriSANs []string
	for _, s := range vc.GetMatchTypedSubjectAltNames() {
		if e := s.GetMatcher().GetExact(); e != "" {
			if s.GetSanType() == tlsv3.SubjectAltNameMatcher_URI {
				uriSANs = append(uriSANs, e)
			} else {
				dnsSANs = append(dnsSANs, e)
			}
		}
	}
	sni := ctx.GetSni()
	cfg.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return fmt.Errorf("upstream sent no certificate")
		}
		certs := make([]*x509.Certificate, len(rawCerts))
		for i, r := range rawCerts {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("upstream certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
			return err
		}
		switch {
		case len(dnsSANs) > 0 || len(uriSANs) > 0:
			for _, n := range dnsSANs {
				if certs[0].VerifyHostname(n) == nil {
					return nil
				}
			}
			if len(uriSANs) > 0 {
				return matchURISAN(rawCerts, uriSANs)
			}
			return fmt.Errorf("upstream certificate matches none of the subject alt names %v", dnsSANs)
		case sni != "":
			return certs[0].VerifyHostname(sni)
		}
		return nil
	}
	u.cfg = cfg
	return nil
}
