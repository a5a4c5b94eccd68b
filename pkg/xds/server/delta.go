package server

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unique"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Weft delta xDS. A delta ADS stream whose node announces featureVHDS in
// client_features (weft proxy does) is served here; other delta clients
// (Envoy with delta ADS) keep go-control-plane's delta server. Like the SotW
// handler (ads.go) it keeps per stream and type only the subscription
// (interned), the view last sent and its nonce: a push sends each stream
// the diff from the set it had to the proxy's new set, encoded once per
// (old set, new set, subscriptions) and shared by every stream with the
// same (deltaview.go). Route configurations go out in VHDS form: the
// virtual hosts as VirtualHost resources, so a VirtualService change sends
// the virtual hosts it changed instead of whole route tables.
//
// Protocol rules kept here:
//   - the first request of a type subscribes: no names (or "*") is a
//     wildcard subscription, otherwise the names; later requests add and
//     remove names (resource_names_subscribe/unsubscribe, "*" included);
//   - the first request of a type is always answered (with everything the
//     subscription covers, even nothing); names a reconnecting client lists
//     in initial_resource_versions that no longer exist are removed;
//   - a response carries the resources whose content differs from what the
//     stream sent before, each with a version (its digest), and the names
//     that no longer exist (removed_resources);
//   - an ACK or NACK counts only with the type's latest nonce; after a
//     NACK nothing is sent for the type until its set changes, and then
//     everything it covers (the client kept an older state);
//   - VirtualHost names are "<route configuration>/<virtual host>"; a
//     subscription to "<route configuration>" covers all of its virtual
//     hosts.

// featureVHDS is the client feature (Node.client_features) of a delta
// client that takes route configurations in VHDS form (xdsclient.FeatureVHDS).
const featureVHDS = "weft.io/vhds"

// Delta stream types: the four generated ones and the VHDS virtual hosts.
const (
	vhds          = numTypes
	numDeltaTypes = numTypes + 1
)

var (
	deltaOrder    = [numDeltaTypes]int{cds, eds, lds, rds, vhds}
	deltaTypeURLs = [numDeltaTypes]string{resourcev3.ClusterType, resourcev3.ListenerType, resourcev3.RouteType,
		resourcev3.EndpointType, resourcev3.VirtualHostType}
)

func deltaTypeOf(url string) int {
	return slices.Index(deltaTypeURLs[:], url)
}

// statusType is the proxy-status type a delta type reports under: VHDS is
// part of RDS.
func statusType(ti int) int {
	if ti == vhds {
		return rds
	}
	return ti
}

func hasFeature(n *corev3.Node, f string) bool {
	return slices.Contains(n.GetClientFeatures(), f)
}

// deltaType is one weft delta stream's state for one type.
type deltaType struct {
	subscribed bool
	names      nameKey
	due        bool
	sent       *deltaView // nil: nothing sent yet
	sentNames  nameKey
	// rebase: the client rejected the last response and kept an older
	// state: the next response carries everything the subscription covers.
	rebase bool
	nonce  string
	// initial are the names a reconnecting client said it has.
	initial []string
}

// weftDeltaStream is one delta ADS stream of a client with featureVHDS.
type weftDeltaStream struct {
	streamProxy
	s   *Server
	srv discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer

	// mu (streamProxy's) also guards these.
	nonces uint64
	types  [numDeltaTypes]deltaType
}

// DeltaAggregatedResources serves incremental xDS: clients announcing
// featureVHDS by the weft delta handler, others by go-control-plane's delta
// server over a snapshot cache that only holds their proxies.
func (x adsService) DeltaAggregatedResources(srv discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	first, err := srv.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	if hasFeature(first.GetNode(), featureVHDS) {
		return x.s.serveWeftDelta(srv, first)
	}
	return x.s.delta.DeltaAggregatedResources(&replayDelta{AggregatedDiscoveryService_DeltaAggregatedResourcesServer: srv, first: first})
}

// replayDelta hands go-control-plane's delta server the request already
// read, then the stream's.
type replayDelta struct {
	discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	first *discoveryv3.DeltaDiscoveryRequest
}

func (r *replayDelta) Recv() (*discoveryv3.DeltaDiscoveryRequest, error) {
	if f := r.first; f != nil {
		r.first = nil
		return f, nil
	}
	return r.AggregatedDiscoveryService_DeltaAggregatedResourcesServer.Recv()
}

func (s *Server) serveWeftDelta(srv discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, first *discoveryv3.DeltaDiscoveryRequest) error {
	a := &weftDeltaStream{streamProxy: newStreamProxy(), s: s, srv: srv}
	ctx := srv.Context()
	defer a.detach(s, a)
	if err := a.onRequest(first); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := srv.Recv()
			if err == nil {
				err = a.onRequest(req)
			}
			if err != nil {
				recvErr <- err
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		case <-a.wake:
			if err := a.sendDue(); err != nil {
				return err
			}
		}
	}
}

// listOf is the names of a non-wildcard key (none for the empty set or
// the zero key).
func listOf(k nameKey) []string {
	if k.all || k.names == (unique.Handle[string]{}) || k.names.Value() == "" {
		return nil
	}
	return k.list()
}

// explicitKey is the non-wildcard key of names (possibly none).
func explicitKey(names []string) nameKey {
	if len(names) == 0 {
		return nameKey{names: unique.Make("")}
	}
	names = slices.Clone(names)
	slices.Sort(names)
	return nameKey{names: unique.Make(strings.Join(slices.Compact(names), "\x00"))}
}

// subscribe applies a request's subscription changes to k; first is the
// type's first request.
func subscribe(k nameKey, first bool, sub, unsub []string) nameKey {
	if first {
		if len(sub) == 0 || slices.Contains(sub, "*") {
			return nameKey{all: true}
		}
		return explicitKey(sub)
	}
	if slices.Contains(sub, "*") {
		return nameKey{all: true}
	}
	if k.all {
		if slices.Contains(unsub, "*") {
			return explicitKey(sub)
		}
		return k
	}
	if len(sub) == 0 && len(unsub) == 0 {
		return k
	}
	cur := listOf(k)
	next := make([]string, 0, len(cur)+len(sub))
	for _, n := range cur {
		if !slices.Contains(unsub, n) {
			next = append(next, n)
		}
	}
	for _, n := range sub {
		if !slices.Contains(unsub, n) {
			next = append(next, n)
		}
	}
	return explicitKey(next)
}

func (a *weftDeltaStream) onRequest(req *discoveryv3.DeltaDiscoveryRequest) error {
	s := a.s
	p, err := a.attach(s, req.GetNode(), a)
	if err != nil {
		return err
	}
	ti := deltaTypeOf(req.GetTypeUrl())
	if ti < 0 {
		s.log.Debug("ignoring delta request for an unserved type", "node", p.proxy.ID, "type", req.GetTypeUrl())
		return nil
	}
	nonce := req.GetResponseNonce()
	a.mu.Lock()
	t := &a.types[ti]
	first := !t.subscribed
	t.names = subscribe(t.names, first, req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	t.subscribed = true
	if first {
		t.due = true
		for n := range req.GetInitialResourceVersions() {
			t.initial = append(t.initial, n)
		}
	}
	ack := nonce != "" && nonce == t.nonce
	var version string
	if ack && t.sent != nil {
		version = t.sent.version
	}
	d := req.GetErrorDetail()
	if ack && d != nil {
		t.rebase = true
	}
	a.mu.Unlock()
	if ack {
		if d != nil {
			s.recordNACK(p, statusType(ti), d.GetMessage())
		} else {
			s.recordACK(p, statusType(ti), version)
		}
	}
	a.signal()
	return nil
}

// views are the proxy's current sets as this stream sends them.
func (a *weftDeltaStream) views(p *proxyState) [numDeltaTypes]*deltaView {
	var sets [numTypes]*sharedResources
	a.s.mu.Lock()
	for i := range numTypes {
		sets[i] = p.gen[i].shared
	}
	a.s.mu.Unlock()
	var out [numDeltaTypes]*deltaView
	for _, i := range []int{cds, lds, eds} {
		if sets[i] != nil {
			out[i] = sets[i].view()
		}
	}
	if sets[rds] != nil {
		out[rds], out[vhds] = sets[rds].vhdsViews()
	}
	return out
}

// sendDue sends, in ADS order, every subscribed type whose set or
// subscription changed since the stream last sent it.
func (a *weftDeltaStream) sendDue() error {
	s := a.s
	a.mu.Lock()
	p := a.p
	a.mu.Unlock()
	if p == nil {
		return nil
	}
	views := a.views(p)
	for _, ti := range deltaOrder {
		v := views[ti]
		a.mu.Lock()
		t := &a.types[ti]
		if !t.subscribed || v == nil || (!t.due && t.sent == v && t.sentNames == t.names) {
			a.mu.Unlock()
			continue
		}
		k := deltaKey{base: t.sent, prev: t.sent, had: t.sentNames, want: t.names}
		if t.rebase {
			k.base = nil
		}
		body, empty, err := v.body(&s.prepared, deltaTypeURLs[ti], k)
		if err != nil {
			a.mu.Unlock()
			return status.Error(codes.Internal, err.Error())
		}
		var gone []string
		for _, n := range t.initial {
			if _, ok := v.index[n]; !ok {
				gone = append(gone, n)
			}
		}
		due := t.due
		t.due, t.sent, t.sentNames, t.rebase, t.initial = false, v, k.want, false, nil
		if empty && !due && len(gone) == 0 {
			a.mu.Unlock()
			continue // nothing the client has or wants changed
		}
		a.nonces++
		nonce := strconv.FormatUint(a.nonces, 10)
		t.nonce = nonce
		a.mu.Unlock()
		s.recordSent(p, statusType(ti), v.version, nonce)
		if err := a.srv.SendMsg(&outMsg{body: body, nonce: nonce, extra: removedField(gone)}); err != nil {
			return fmt.Errorf("send delta %s to %s: %w", deltaTypeURLs[ti], p.proxy.ID, err)
		}
		s.lastSend.Store(s.now().UnixNano())
	}
	return nil
}
