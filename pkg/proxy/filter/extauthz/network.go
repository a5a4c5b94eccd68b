package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthznet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// NetworkFilterName is the listener filter name of the network ext_authz
// filter (AuthorizationPolicy CUSTOM with a gRPC provider on opaque TCP).
const NetworkFilterName = "envoy.filters.network.ext_authz"

// NetworkFilters returns this package's network filter factory keyed by
// NetworkFilterName (merge into proxy.Options.NetworkFilters). Options as
// for Filters (WithClusters sends checks through the proxy's cluster).
func NetworkFilters(log *slog.Logger, opts ...Option) map[string]listener.NetworkFilterFactory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o := &options{conns: &connCache{m: map[string]*grpcConn{}}}
	for _, f := range opts {
		f(o)
	}
	if o.dial == nil {
		o.dial = defaultDial
	}
	return map[string]listener.NetworkFilterFactory{NetworkFilterName: func(tc *anypb.Any) (listener.ConnFilter, error) {
		cfg := &extauthznet.ExtAuthz{}
		if tc != nil {
			if err := tc.UnmarshalTo(cfg); err != nil {
				return nil, fmt.Errorf("%s: %w", NetworkFilterName, err)
			}
		}
		return newNetworkFilter(cfg, log, o)
	}}
}

// NetworkFilter checks each accepted connection with the authorization
// service (envoy.service.auth.v3 Check with source and destination
// attributes, no request); a denial or, without failure_mode_allow, a
// failed check closes the connection.
type NetworkFilter struct {
	c        *grpcChecker
	failOpen bool
	enabled  func(*listener.ConnInfo) bool
	log      *slog.Logger
}

func newNetworkFilter(cfg *extauthznet.ExtAuthz, log *slog.Logger, o *options) (*NetworkFilter, error) {
	if cfg.GetGrpcService() == nil {
		return nil, fmt.Errorf("%s: grpc_service is required", NetworkFilterName)
	}
	c, err := newGRPCChecker(cfg.GetGrpcService(), nil, o)
	if err != nil {
		return nil, fmt.Errorf("%s: grpc_service: %w", NetworkFilterName, err)
	}
	f := &NetworkFilter{c: c, failOpen: cfg.GetFailureModeAllow(), log: log}
	if m := cfg.GetFilterEnabledMetadata(); m != nil {
		if f.enabled, err = compileConnEnabled(m); err != nil {
			return nil, fmt.Errorf("%s: filter_enabled_metadata: %w", NetworkFilterName, err)
		}
	}
	return f, nil
}

// CheckConn asks the service about the connection.
func (f *NetworkFilter) CheckConn(ci *listener.ConnInfo) (bool, string) {
	if f.enabled != nil && !f.enabled(ci) {
		return true, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.c.timeout)
	defer cancel()
	resp, err := f.c.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: peer(ci.Source, ci.Principal), Destination: peer(ci.Destination, "")}})
	if err != nil {
		if f.failOpen {
			f.log.Warn("network ext_authz check failed; allowing (failure_mode_allow)", "err", err, "source", ci.Source)
			return true, ""
		}
		f.log.Warn("network ext_authz check failed; closing", "err", err, "source", ci.Source)
		return false, "ext_authz_error"
	}
	if code.Code(resp.GetStatus().GetCode()) != code.Code_OK {
		return false, "ext_authz_denied"
	}
	return true, ""
}

func peer(ap netip.AddrPort, principal string) *authv3.AttributeContext_Peer {
	p := &authv3.AttributeContext_Peer{Principal: principal}
	if ap.IsValid() {
		p.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ap.Addr().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
	}
	return p
}

// compileConnEnabled is compileEnabled over a connection's metadata.
func compileConnEnabled(m *matcherv3.MetadataMatcher) (func(*listener.ConnInfo) bool, error) {
	if len(m.GetPath()) != 1 || m.GetPath()[0].GetKey() == "" {
		return nil, fmt.Errorf("path must be one key (got %d segments)", len(m.GetPath()))
	}
	filter, key := m.GetFilter(), m.GetPath()[0].GetKey()
	sm := m.GetValue().GetStringMatch()
	if sm == nil {
		return nil, fmt.Errorf("only string_match values are supported")
	}
	match, err := compileString(sm)
	if err != nil {
		return nil, err
	}
	invert := m.GetInvert()
	return func(c *listener.ConnInfo) bool {
		v, ok := c.Metadata(filter, key)
		return (ok && match(v)) != invert
	}, nil
}

var (
	_           listener.ConnFilter = (*NetworkFilter)(nil)
	defaultDial                     = (&netDialer{timeout: 10 * time.Second}).DialContext
)
