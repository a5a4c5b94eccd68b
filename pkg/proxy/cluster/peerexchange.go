package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/weftmesh/weft/pkg/proxy/peerexchange"
)

// SetPeerExchange sets the frame (peerexchange.Encode of the workload's
// metadata) that clusters with Istio's istio.metadata_exchange filter send
// on opaque connections that negotiate the exchange. Without it those
// connections run no exchange. Call it before the first Build.
func (m *Manager) SetPeerExchange(frame []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peerFrame = frame
}

// compilePeerExchange reads the cluster's filters: istio.metadata_exchange
// (config a TypedStruct of envoy.tcp.metadataexchange.config.MetadataExchange
// whose `protocol` is the ALPN protocol that turns it on, default
// istio-peer-exchange) sets PeerExchange; other filters are warnings.
func (m *Manager) compilePeerExchange(pc *clusterv3.Cluster, c *Cluster) error {
	for _, f := range pc.GetFilters() {
		if f.GetName() != peerexchange.FilterName {
			c.Warnings = append(c.Warnings, fmt.Sprintf("cluster filter %q not executed", f.GetName()))
			continue
		}
		proto := peerexchange.Protocol
		ts := &xdstypev3.TypedStruct{}
		if tc := f.GetTypedConfig(); tc != nil && tc.MessageIs(ts) {
			if err := tc.UnmarshalTo(ts); err != nil {
				return fmt.Errorf("filters: %s: %w", f.GetName(), err)
			}
			if p := ts.GetValue().GetFields()["protocol"].GetStringValue(); p != "" {
				proto = p
			}
		}
		c.PeerExchange = proto
	}
	c.peerFrame = m.peerFrame
	return nil
}

// exchange runs the metadata exchange on conn when its mutual TLS
// negotiated the cluster's exchange protocol; a peer that sends no frame
// (or a malformed one) leaves a usable connection without metadata.
func (c *Cluster) exchange(ctx context.Context, conn net.Conn, addr string, timeout time.Duration) (net.Conn, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok || tc.ConnectionState().NegotiatedProtocol != c.PeerExchange {
		return conn, nil
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	xc, err := peerexchange.Exchange(tc, c.peerFrame, deadline)
	if xc == nil {
		conn.Close()
		return nil, fmt.Errorf("upstream %s: %w", addr, err)
	}
	return xc, nil
}
