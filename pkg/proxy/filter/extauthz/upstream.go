package extauthz

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/filter/dynmeta"
)

// partialBodyHeader tells the service whether the body it got is cut at
// max_request_bytes (Envoy's x-envoy-auth-partial-body).
const partialBodyHeader = "x-envoy-auth-partial-body"

// compileEnabled compiles filter_enabled_metadata: the request is checked
// when the named filter's dynamic metadata key matches (one path segment,
// string or present match).
func compileEnabled(m *matcherv3.MetadataMatcher) (func(*http.Request) bool, error) {
	if len(m.GetPath()) != 1 || m.GetPath()[0].GetKey() == "" {
		return nil, fmt.Errorf("path must be one key (got %d segments)", len(m.GetPath()))
	}
	filter, key := m.GetFilter(), m.GetPath()[0].GetKey()
	var match func(string) bool
	switch p := m.GetValue().GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := compileString(p.StringMatch)
		if err != nil {
			return nil, err
		}
		match = sm
	case *matcherv3.ValueMatcher_PresentMatch:
		want := p.PresentMatch
		match = func(string) bool { return want }
	default:
		return nil, fmt.Errorf("value matcher %T not supported", p)
	}
	invert := m.GetInvert()
	return func(r *http.Request) bool {
		v, ok := dynmeta.Get(r.Context(), filter, key)
		return (ok && match(v)) != invert
	}, nil
}

// bufferBody reads up to max bytes of r's body for the check and puts
// them back in front of the rest, so the upstream still gets all of it.
// partial reports a body longer than max (data is then cut at max).
func bufferBody(r *http.Request, max int) (data []byte, partial bool, err error) {
	buf, err := io.ReadAll(io.LimitReader(r.Body, int64(max)+1))
	if err != nil {
		return nil, false, err
	}
	orig := r.Body
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), orig), orig}
	if len(buf) > max {
		return buf[:max], true, nil
	}
	return buf, false, nil
}

// localReply answers the client with an empty body.
func localReply(w http.ResponseWriter, status int, details string) {
	if ds, ok := w.(interface{ SetResponseDetails(string) }); ok {
		ds.SetResponseDetails(details)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

// pickHost returns the named cluster of the current configuration and a
// host its load balancer picked.
func pickHost(clusters func() *cluster.Set, name string) (*cluster.Cluster, *cluster.Host, error) {
	set := clusters()
	var c *cluster.Cluster
	if set != nil {
		c = set.Clusters[name]
	}
	if c == nil {
		return nil, nil, fmt.Errorf("cluster %q not found", name)
	}
	h, err := c.Pick(0)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %q: %w", name, err)
	}
	return c, h, nil
}

// grpcConn is a shared client connection to one authorization service.
type grpcConn struct {
	conn *grpc.ClientConn
}

// connCache keeps one gRPC client connection per service, so each
// configuration update does not open new ones.
type connCache struct {
	mu sync.Mutex
	m  map[string]*grpcConn
}

// get returns the connection for key, creating it with dial.
func (cc *connCache) get(key, authority string, dial func(ctx context.Context, addr string) (net.Conn, error)) (*grpc.ClientConn, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if c, ok := cc.m[key]; ok {
		return c.conn, nil
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial)}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+key, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", key, err)
	}
	cc.m[key] = &grpcConn{conn: conn}
	return conn, nil
}

// netDialer is a net.Dialer with a connect timeout.
type netDialer struct{ timeout time.Duration }

func (d *netDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{Timeout: d.timeout}).DialContext(ctx, network, addr)
}
