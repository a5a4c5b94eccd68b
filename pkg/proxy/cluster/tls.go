package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
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
	// ALPN protocols offered.
	ALPN []string
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

// compileTLS interprets the cluster's transport_socket.
func (m *Manager) compileTLS(pc *clusterv3.Cluster, c *Cluster) error {
	ts := pc.GetTransportSocket()
	if ts == nil {
		return nil
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
		c.Warnings = append(c.Warnings, "transport_socket: only ISTIO_MUTUAL (SDS \"default\") is executed: upstream connections are plaintext")
		return nil
	}
	if m.mtls == nil {
		c.Warnings = append(c.Warnings, "transport_socket ISTIO_MUTUAL not executed (no workload certificate: --ca-address not set): upstream connections are plaintext")
		return nil
	}
	u := &UpstreamMTLS{SNI: ctx.GetSni(), ALPN: common.GetAlpnProtocols()}
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

// tlsDial wraps dial with a mutual-TLS handshake.
func (u *UpstreamMTLS) tlsDial(cfg MTLSClient, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := cfg().Clone()
		tc.ServerName = u.SNI
		tc.NextProtos = u.ALPN
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
// socket is an executed ISTIO_MUTUAL one, plaintext otherwise.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: timeout}
	if c.MTLS != nil && c.mtlsCfg != nil {
		return c.MTLS.tlsDial(c.mtlsCfg, d.DialContext)(ctx, network, addr)
	}
	return d.DialContext(ctx, network, addr)
}
