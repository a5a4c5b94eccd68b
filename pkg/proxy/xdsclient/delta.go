package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Delta xDS with VHDS (Config.Delta). The client subscribes to every
// listener and cluster (wildcard) and to the route configurations and load
// assignments they reference, and announces FeatureVHDS: a weft control
// plane then sends route configurations without their virtual hosts (vhds
// set) and the virtual hosts as VirtualHost resources named
// "<route configuration>/<virtual host>", which the client subscribes to by
// route configuration name. A change then costs the resources that
// changed, not whole route tables. Other delta servers send route
// configurations whole, which works the same. The client hands Update the
// assembled route configurations (inline and VHDS virtual hosts, sorted by
// name, vhds cleared): the rest of the proxy sees what SotW would give it.
// A route configuration in VHDS form is left out of Resources.Routes until
// its first virtual host arrived (Complete reports false meanwhile).

// FeatureVHDS is the client feature (Node.client_features) with which a
// delta client asks a weft control plane for VHDS-form route
// configurations.
const FeatureVHDS = "weft.io/vhds"

// VirtualHostType is the VHDS type URL.
const VirtualHostType = typePrefix + "envoy.config.route.v3.VirtualHost"

// deltaState is what the delta protocol keeps across responses and
// reconnects, besides Client.current.
type deltaState struct {
	// versions are the resource versions held, by type URL and name
	// (sent back as initial_resource_versions on reconnect).
	versions map[string]map[string]string
	// raw are the route configurations as received (VHDS form or whole).
	raw map[string]*routev3.RouteConfiguration
	// vhosts are the VHDS virtual hosts by route configuration and
	// resource name.
	vhosts map[string]map[string]*routev3.VirtualHost
}

func newDeltaState() *deltaState {
	return &deltaState{versions: map[string]map[string]string{}, raw: map[string]*routev3.RouteConfiguration{},
		vhosts: map[string]map[string]*routev3.VirtualHost{}}
}

// deltaSub is one type's subscription on a delta stream.
type deltaSub struct {
	wildcard bool
	names    map[string]bool
	nonce    string
}

func (c *Client) deltaStream(ctx context.Context) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(sctx)
	if err != nil {
		return fmt.Errorf("open delta ADS stream: %w", err)
	}
	node := proto.Clone(c.cfg.Node).(*corev3.Node)
	if !slices.Contains(node.ClientFeatures, FeatureVHDS) {
		node.ClientFeatures = append(node.ClientFeatures, FeatureVHDS)
	}
	c.mu.Lock()
	c.stats.Connects++
	cur := c.current
	if c.delta == nil {
		c.delta = newDeltaState()
	}
	ds := c.delta
	c.mu.Unlock()

	subs := map[string]*deltaSub{
		ListenerType:    {wildcard: true},
		ClusterType:     {wildcard: true},
		RouteType:       {names: map[string]bool{}},
		EndpointType:    {names: map[string]bool{}},
		VirtualHostType: {names: map[string]bool{}},
	}
	first := true
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if first {
			req.Node = node
			first = false
		}
		return st.Send(req)
	}
	// Initial requests: wildcards, then the names the last state references,
	// each with the versions held, so the server can tell what is gone.
	for _, t := range []string{ListenerType, ClusterType} {
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, InitialResourceVersions: ds.versions[t]}); err != nil {
			return fmt.Errorf("send %s: %w", t, err)
		}
	}
	want := ds.wanted(cur)
	for _, t := range []string{RouteType, EndpointType, VirtualHostType} {
		if err := c.deltaResubscribe(send, subs[t], t, want[t], ds.versions[t]); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			if s, ok := grpcstatus.FromError(err); ok && s.Code() == codes.Unimplemented {
				return errDeltaUnimplemented
			}
			return fmt.Errorf("receive: %w", err)
		}
		t := resp.GetTypeUrl()
		sub, ok := subs[t]
		if !ok {
			c.log.Warn("ignoring delta response of unsubscribed type", "type", t)
			continue
		}
		sub.nonce = resp.GetNonce()
		c.mu.Lock()
		c.stats.Responses++
		cur := c.current
		c.mu.Unlock()
		next, nds, err := ds.apply(cur, resp)
		if err == nil {
			err = c.cfg.Update(next)
		}
		if err != nil {
			c.log.Warn("rejecting delta xDS update (NACK)", "type", t, "version", resp.GetSystemVersionInfo(), "err", err)
			c.mu.Lock()
			c.stats.NACKs++
			c.stats.LastNACK = err.Error()
			c.mu.Unlock()
			if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: sub.nonce,
				ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}}); err != nil {
				return fmt.Errorf("send NACK: %w", err)
			}
			continue
		}
		ds = nds
		c.mu.Lock()
		c.current, c.delta = next, nds
		c.stats.ACKs++
		c.mu.Unlock()
		c.log.Debug("applied delta xDS update", "type", t, "version", resp.GetSystemVersionInfo(),
			"resources", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: sub.nonce}); err != nil {
			return fmt.Errorf("send ACK: %w", err)
		}
		// Follow references: route configurations, load assignments and
		// the virtual hosts of VHDS-form route configurations.
		want := nds.wanted(next)
		for _, rt := range []string{RouteType, EndpointType, VirtualHostType} {
			if err := c.deltaResubscribe(send, subs[rt], rt, want[rt], nil); err != nil {
				return err
			}
		}
	}
}

var errDeltaUnimplemented = errors.New("the control plane does not implement delta xDS")

// deltaResubscribe sends the subscription changes that make sub cover
// exactly names.
func (c *Client) deltaResubscribe(send func(*discoveryv3.DeltaDiscoveryRequest) error, sub *deltaSub, typeURL string, names []string, initial map[string]string) error {
	var add, drop []string
	for _, n := range names {
		if !sub.names[n] {
			add = append(add, n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(sub.names)) {
		if !slices.Contains(names, n) {
			drop = append(drop, n)
		}
	}
	if len(add) == 0 && len(drop) == 0 {
		return nil
	}
	for _, n := range add {
		sub.names[n] = true
	}
	for _, n := range drop {
		delete(sub.names, n)
	}
	var iv map[string]string
	for n, v := range initial {
		if typeURL == VirtualHostType {
			if !sub.names[vhostOwner(n)] {
				continue
			}
		} else if !sub.names[n] {
			continue
		}
		if iv == nil {
			iv = map[string]string{}
		}
		iv[n] = v
	}
	if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: add,
		ResourceNamesUnsubscribe: drop, InitialResourceVersions: iv}); err != nil {
		return fmt.Errorf("send %s subscription: %w", typeURL, err)
	}
	return nil
}

// vhostOwner is the route configuration of a VHDS resource name.
func vhostOwner(name string) string {
	rc, _, _ := strings.Cut(name, "/")
	return rc
}

// wanted lists, per type, the names the client should subscribe to: the
// route configurations and load assignments res references, and the route
// configurations among them received in VHDS form.
func (d *deltaState) wanted(res *Resources) map[string][]string {
	routes := res.RouteNames()
	var vh []string
	for _, n := range routes {
		if d.raw[n].GetVhds() != nil {
			vh = append(vh, n)
		}
	}
	return map[string][]string{RouteType: routes, EndpointType: res.EndpointNames(), VirtualHostType: vh}
}

// apply returns the resources and delta state after resp; cur and d are
// not modified (maps are copied before the first write).
func (d *deltaState) apply(cur *Resources, resp *discoveryv3.DeltaDiscoveryResponse) (*Resources, *deltaState, error) {
	t := resp.GetTypeUrl()
	next := cur.clone()
	nd := &deltaState{versions: maps.Clone(d.versions), raw: d.raw, vhosts: d.vhosts}
	vers := maps.Clone(d.versions[t])
	if vers == nil {
		vers = map[string]string{}
	}
	nd.versions[t] = vers
	ownRaw, ownVHosts, ownRC := false, false, map[string]bool{}
	rawW := func() map[string]*routev3.RouteConfiguration {
		if !ownRaw {
			nd.raw, ownRaw = maps.Clone(d.raw), true
		}
		return nd.raw
	}
	hostsW := func(rc string) map[string]*routev3.VirtualHost {
		if !ownVHosts {
			nd.vhosts, ownVHosts = maps.Clone(d.vhosts), true
		}
		if !ownRC[rc] {
			m := maps.Clone(nd.vhosts[rc])
			if m == nil {
				m = map[string]*routev3.VirtualHost{}
			}
			nd.vhosts[rc], ownRC[rc] = m, true
		}
		return nd.vhosts[rc]
	}
	var touched []string // route configurations to assemble again
	for _, name := range resp.GetRemovedResources() {
		delete(vers, name)
		switch t {
		case ListenerType:
			delete(next.Listeners, name)
		case ClusterType:
			delete(next.Clusters, name)
		case EndpointType:
			delete(next.Endpoints, name)
		case RouteType:
			delete(rawW(), name)
			touched = append(touched, name)
		case VirtualHostType:
			rc := vhostOwner(name)
			delete(hostsW(rc), name)
			touched = append(touched, rc)
		}
	}
	for i, r := range resp.GetResources() {
		name := r.GetName()
		a := r.GetResource()
		if name == "" {
			return nil, nil, fmt.Errorf("resource %d: empty name", i)
		}
		if a == nil {
			return nil, nil, fmt.Errorf("resource %q: no resource (on-demand removal is not supported)", name)
		}
		if a.GetTypeUrl() != t {
			return nil, nil, fmt.Errorf("resource %q: type %q in a %q response", name, a.GetTypeUrl(), t)
		}
		var m validator
		switch t {
		case ListenerType:
			m = &listenerv3.Listener{}
		case ClusterType:
			m = &clusterv3.Cluster{}
		case EndpointType:
			m = &endpointv3.ClusterLoadAssignment{}
		case RouteType:
			m = &routev3.RouteConfiguration{}
		case VirtualHostType:
			m = &routev3.VirtualHost{}
		default:
			return nil, nil, fmt.Errorf("unsupported type %q", t)
		}
		if err := a.UnmarshalTo(m); err != nil {
			return nil, nil, fmt.Errorf("resource %q: unmarshal: %w", name, err)
		}
		if err := m.Validate(); err != nil {
			return nil, nil, fmt.Errorf("resource %q: %w", name, err)
		}
		vers[name] = r.GetVersion()
		var own string
		switch m := m.(type) {
		case *listenerv3.Listener:
			own = m.GetName()
			next.Listeners[name] = m
		case *clusterv3.Cluster:
			own = m.GetName()
			next.Clusters[name] = m
		case *endpointv3.ClusterLoadAssignment:
			own = m.GetClusterName()
			next.Endpoints[name] = m
		case *routev3.RouteConfiguration:
			own = m.GetName()
			rawW()[name] = m
			touched = append(touched, name)
		case *routev3.VirtualHost:
			rc := vhostOwner(name)
			if rc == name {
				return nil, nil, fmt.Errorf("virtual host %q: name is not <route configuration>/<host>", name)
			}
			own = name
			hostsW(rc)[name] = m
			touched = append(touched, rc)
		}
		if own != name {
			return nil, nil, fmt.Errorf("resource %q: named %q inside", name, own)
		}
	}
	if t == RouteType {
		// Virtual hosts of route configurations that are gone go too.
		for rc := range d.vhosts {
			if nd.raw[rc] == nil {
				if !ownVHosts {
					nd.vhosts, ownVHosts = maps.Clone(d.vhosts), true
				}
				delete(nd.vhosts, rc)
			}
		}
	}
	for _, rc := range touched {
		if r := nd.assemble(rc); r != nil {
			next.Routes[rc] = r
		} else {
			delete(next.Routes, rc)
		}
	}
	next.Versions[t] = resp.GetSystemVersionInfo()
	next.Received[t] = true
	if t == VirtualHostType {
		next.Versions[RouteType] = resp.GetSystemVersionInfo()
	}
	return next, nd, nil
}

// assemble is route configuration rc as the proxy executes it: the
// received one with its VHDS virtual hosts added (sorted by resource name)
// and vhds cleared; nil while it is unknown, or in VHDS form with no
// virtual host received yet.
func (d *deltaState) assemble(rc string) *routev3.RouteConfiguration {
	raw := d.raw[rc]
	if raw == nil {
		return nil
	}
	if raw.GetVhds() == nil {
		return raw
	}
	hosts := d.vhosts[rc]
	if len(hosts) == 0 {
		return nil
	}
	out := &routev3.RouteConfiguration{}
	dst := out.ProtoReflect()
	raw.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "vhds" && fd.Name() != "virtual_hosts" {
			dst.Set(fd, v)
		}
		return true
	})
	out.VirtualHosts = append(slices.Clone(raw.GetVirtualHosts()), make([]*routev3.VirtualHost, 0, len(hosts))...)
	for _, n := range slices.Sorted(maps.Keys(hosts)) {
		out.VirtualHosts = append(out.VirtualHosts, hosts[n])
	}
	return out
}
