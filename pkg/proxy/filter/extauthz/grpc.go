package extauthz

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
)

type grpcChecker struct {
	client  authv3.AuthorizationClient
	target  string
	timeout time.Duration
	allowed headerList
}

// grpcTarget returns host:port for an envoy_grpc cluster named like
// Istio's "outbound|PORT|SUBSET|HOST", or a google_grpc target_uri.
func grpcTarget(s *corev3.GrpcService) (string, error) {
	if g := s.GetGoogleGrpc(); g != nil {
		return strings.TrimPrefix(g.GetTargetUri(), "dns:///"), nil
	}
	name := s.GetEnvoyGrpc().GetClusterName()
	parts := strings.Split(name, "|")
	if len(parts) != 4 || parts[0] != "outbound" {
		return "", fmt.Errorf("envoy_grpc cluster %q: want outbound|PORT||HOST", name)
	}
	if _, err := strconv.Atoi(parts[1]); err != nil {
		return "", fmt.Errorf("envoy_grpc cluster %q: bad port", name)
	}
	return net.JoinHostPort(parts[3], parts[1]), nil
}

func newGRPCChecker(s *corev3.GrpcService, allowed headerList, o *options) (*grpcChecker, error) {
	c := &grpcChecker{timeout: timeoutOf(s.GetTimeout(), s.GetTimeout() != nil), allowed: allowed}
	if name := s.GetEnvoyGrpc().GetClusterName(); name != "" && o.clusters != nil {
		// Through the proxy's cluster: a host per connection from its load
		// balancer, its transport socket (mutual TLS) on the connection.
		conn, err := o.conns.get("cluster/"+name, s.GetEnvoyGrpc().GetAuthority(), func(ctx context.Context, _ string) (net.Conn, error) {
			cl, h, err := pickHost(o.clusters, name)
			if err != nil {
				return nil, err
			}
			return cl.DialContext(ctx, "tcp", h.Addr)
		})
		if err != nil {
			return nil, err
		}
		c.client, c.target = authv3.NewAuthorizationClient(conn), name
		return c, nil
	}
	target, err := grpcTarget(s)
	if err != nil {
		return nil, err
	}
	conn, err := o.conns.get(target, "", func(ctx context.Context, addr string) (net.Conn, error) { return o.dial(ctx, "tcp", addr) })
	if err != nil {
		return nil, err
	}
	c.client, c.target = authv3.NewAuthorizationClient(conn), target
	return c, nil
}

func (c *grpcChecker) check(ctx context.Context, r *http.Request, body checkBody) (*decision, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.client.Check(ctx, checkRequest(r, c.allowed, body))
	if err != nil {
		return nil, fmt.Errorf("ext_authz grpc %s: %w", c.target, err)
	}
	if code.Code(resp.GetStatus().GetCode()) == code.Code_OK {
		d := &decision{allowed: true, set: http.Header{}, add: http.Header{}, header: http.Header{}}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			k, v := h.GetHeader().GetKey(), h.GetHeader().GetValue()
			if h.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD || h.GetAppend().GetValue() {
				d.add.Add(k, v)
			} else {
				d.set.Set(k, v)
			}
		}
		for _, h := range resp.GetOkResponse().GetResponseHeadersToAdd() {
			d.header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return d, nil
	}
	den := resp.GetDeniedResponse()
	d := &decision{status: int(den.GetStatus().GetCode()), header: http.Header{}, body: []byte(den.GetBody())}
	if d.status == 0 {
		d.status = http.StatusForbidden
	}
	for _, h := range den.GetHeaders() {
		d.header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	return d, nil
}

// checkRequest describes r the way Envoy's ext_authz does (attributes
// source, destination and request.http); only allowed headers (all when
// the list is empty) are included.
func checkRequest(r *http.Request, allowed headerList, body checkBody) *authv3.CheckRequest {
	hdrs := map[string]string{}
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if len(allowed) == 0 || allowed.match(lk) || alwaysSent[lk] {
			hdrs[lk] = strings.Join(vs, ",")
		}
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path := r.URL.RequestURI()
	req := &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Method: r.Method, Path: path, Host: r.Host, Scheme: scheme, Headers: hdrs, Protocol: r.Proto, Size: r.ContentLength,
		Query: r.URL.RawQuery,
	}}
	if body.on {
		hdrs[partialBodyHeader] = strconv.FormatBool(body.partial)
		if body.asBytes {
			req.Http.RawBody = body.data
		} else {
			req.Http.Body = string(body.data)
		}
	}
	src := &authv3.AttributeContext_Peer{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		src.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ap.Addr().Unmap().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
		src.Principal = r.TLS.PeerCertificates[0].URIs[0].String()
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: src, Destination: &authv3.AttributeContext_Peer{}, Request: req}}
}
