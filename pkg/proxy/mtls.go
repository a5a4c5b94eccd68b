package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"maps"
	"net"
	"net/http"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
)

// WorkloadCerts supplies the workload's mesh certificate, e.g. a
// caclient.Rotator that is already Ready: ServerConfig requires and
// verifies client certificates (SPIFFE ID, mesh roots), ClientConfig
// presents the certificate and verifies the server's SPIFFE ID.
type WorkloadCerts interface {
	ServerConfig() *tls.Config
	ClientConfig() *tls.Config
}

// TLSModeLabel is the label Istio's injector puts on meshed pods; a proxy
// with a workload certificate advertises it so that the control plane's
// auto mTLS sends it mutual TLS.
const TLSModeLabel = "security.istio.io/tlsMode"

// mtlsLabels returns labels with the tlsMode label added when the proxy
// has a workload certificate.
func mtlsLabels(o Options) map[string]string {
	if o.MTLS == nil {
		return o.Labels
	}
	l := maps.Clone(o.Labels)
	if l == nil {
		l = map[string]string{}
	}
	if _, ok := l[TLSModeLabel]; !ok {
		l[TLSModeLabel] = "istio"
	}
	return l
}

// setupMTLS turns on mutual TLS when Options.MTLS is set: clusters with
// ISTIO_MUTUAL transport sockets dial TLS, and the inbound listener is
// wrapped to terminate mTLS per PeerAuthentication. It returns the inbound
// listener to serve.
func (p *Proxy) setupMTLS(ctx context.Context, in net.Listener) net.Listener {
	o := p.opts
	if o.MTLS == nil {
		return in
	}
	p.cm.SetMTLS(cluster.MTLSClient(o.MTLS.ClientConfig))
	p.cm.SetPeerExchange(listener.PeerExchangeFrame(identity(o)))
	// Explicit mode serves every port on one address: the ALPN offered and
	// the metadata exchange are those of any chain (clients that offer
	// istio-peer-exchange are mesh proxies that run the exchange; weft's
	// HTTP pools do not offer it).
	return p.inboundMTLS(ctx, in, !o.Capture, func(c net.Conn) int {
		port := o.AppPort
		if o.Capture { // the captured connection's original port
			if od, ok := originalDst(c); ok {
				port = int(od.Port())
			}
		}
		return port
	})
}

// inboundMTLS wraps an inbound listener to terminate mutual TLS per
// PeerAuthentication for the port portOf says a connection is for (nil
// Options.MTLS: in itself).
func (p *Proxy) inboundMTLS(ctx context.Context, in net.Listener, anyPortALPN bool, portOf func(net.Conn) int) net.Listener {
	o := p.opts
	if o.MTLS == nil {
		return in
	}
	refused := p.stats.Counter("inbound.mtls_refused")
	accepted := p.stats.Counter("inbound.connections") // per accepted inbound connection (mTLS or plaintext)
	// Outcomes of the TCP metadata exchange on inbound connections (Envoy's
	// metadata_exchange stats, under weft names).
	mxFound := p.stats.Counter("inbound.metadata_exchange.found")
	mxNoHeader := p.stats.Counter("inbound.metadata_exchange.header_not_found")
	mxMalformed := p.stats.Counter("inbound.metadata_exchange.malformed")
	mxRefused := p.stats.Counter("inbound.metadata_exchange.refused")
	tlsCache := &listener.InboundTLSCache{}
	return &listener.MTLSListener{
		Listener: in,
		Config: func() *tls.Config {
			c := o.MTLS.ServerConfig()
			// Ports whose chains name their ALPN (all, from weft's
			// translator) replace this per connection (InboundTLS.ALPN).
			c.NextProtos = []string{"istio", "h2", "http/1.1"}
			return c
		},
		PeerFrame: listener.PeerExchangeFrame(identity(o)),
		OnExchange: func(err error) {
			switch {
			case err == nil:
				mxFound.Add(1)
			case errors.Is(err, peerexchange.ErrNoHeader):
				mxNoHeader.Add(1)
			case errors.Is(err, peerexchange.ErrMalformed):
				mxMalformed.Add(1)
			default:
				mxRefused.Add(1)
			}
		},
		Policy: func(c net.Conn) listener.InboundTLS {
			accepted.Add(1)
			rt := p.rt.Load()
			if rt == nil {
				return listener.InboundTLS{Plain: true}
			}
			pol := tlsCache.For(rt.Resources, portOf(c))
			if anyPortALPN {
				all := tlsCache.For(rt.Resources, listener.AnyPort)
				pol.ALPN, pol.Exchange = all.ALPN, all.Exchange
			}
			return pol
		},
		OnRefused: func(string) { refused.Add(1) },
		Log:       p.log,
		Ctx:       ctx,
	}
}

type peerTLSKey struct{}

// peerTLSContext returns the inbound http.Server's ConnContext: after
// next (may be nil) it keeps the connection's mTLS state for
// peerTLSHandler.
func peerTLSContext(next func(context.Context, net.Conn) context.Context) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, c net.Conn) context.Context {
		if next != nil {
			ctx = next(ctx, c)
		}
		if st := listener.PeerTLS(c); st != nil {
			return context.WithValue(ctx, peerTLSKey{}, st)
		}
		return ctx
	}
}

// peerTLSHandler exposes the mTLS state as r.TLS, where the RBAC filter
// reads the source principal and the handler the security policy label.
func peerTLSHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, ok := r.Context().Value(peerTLSKey{}).(*tls.ConnectionState); ok && r.TLS == nil {
			r.TLS = st
		}
		next.ServeHTTP(w, r)
	})
}

// workloadChain returns the workload certificate chain new handshakes
// present (leaf first), or nil without mTLS; admin /certs shows it.
func (p *Proxy) workloadChain() []*x509.Certificate {
	if p.opts.MTLS == nil {
		return nil
	}
	c := p.opts.MTLS.ServerConfig()
	if c.GetCertificate == nil {
		return nil
	}
	cert, err := c.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || cert == nil {
		return nil
	}
	var out []*x509.Certificate
	for _, der := range cert.Certificate {
		if x, err := x509.ParseCertificate(der); err == nil {
			out = append(out, x)
		}
	}
	return out
}

// localPrincipal is the SPIFFE ID of the workload certificate (the first
// URI SAN of the certificate ServerConfig serves), or "" without one.
func localPrincipal(wc WorkloadCerts) string {
	if wc == nil {
		return ""
	}
	c := wc.ServerConfig()
	var cert *tls.Certificate
	switch {
	case c.GetCertificate != nil:
		cert, _ = c.GetCertificate(&tls.ClientHelloInfo{})
	case len(c.Certificates) > 0:
		cert = &c.Certificates[0]
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return ""
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return ""
		}
	}
	if len(leaf.URIs) == 0 {
		return ""
	}
	return leaf.URIs[0].String()
}

// identity is the proxy's workload identity for telemetry labels.
func identity(o Options) listener.Identity {
	return listener.Identity{Workload: o.Workload, Namespace: o.Namespace, App: o.Labels["app"], ServiceAccount: o.ServiceAccount,
		Labels: o.Labels, Cluster: o.ClusterID, Principal: localPrincipal(o.MTLS)}
}
