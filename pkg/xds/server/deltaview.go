package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Delta views. The weft delta handler (delta.go) sends a set as a diff
// against the set a stream sent before: only resources whose encoding
// changed, and the names that are gone. A deltaView is a set's resources
// as that handler needs them (delta name, the name a subscription matches,
// encoding, digest), built once per set; the diff between two views for a
// pair of name sets is encoded once (deltaView.body) and written to every
// stream that had the first and needs the second, plus its nonce
// (sharedCodec), like a SotW response.
//
// VHDS form: a client that announces featureVHDS gets every route
// configuration that has virtual hosts with the virtual hosts taken out
// and vhds set (config source ADS), and the virtual hosts as VirtualHost
// resources named "<route configuration>/<virtual host name>" (Envoy's
// naming: the route configuration, then a host entry; weft's virtual host
// names are host:port). Subscribing to the VirtualHost name
// "<route configuration>" (as Envoy's VHDS subscription does when it starts)
// means every virtual host of that route configuration. One
// VirtualService change then sends each client the one virtual host it
// changed, not the whole table.
type deltaView struct {
	// id names the view in other views' diff memos (a pointer there would
	// keep every older view alive through the chain of diffs).
	id      uint64
	version string
	// names are the resources' delta names; sub the names a subscription
	// matches them by (the same, or for VHDS the route configuration).
	names, sub []string
	enc        [][]byte
	sums       [][32]byte
	index      map[string]int
	// bodies holds the encoded diffs by deltaKey.
	bodies sync.Map // memoKey -> *deltaBody
}

// deltaKey names one diff: from base (nil: the client has nothing known,
// send everything) and prev (whose names the client may hold, for
// removals) with the stream's old and new subscriptions.
type deltaKey struct {
	base, prev *deltaView
	had, want  nameKey
}

// memoKey is a deltaKey as a view's memo holds it: views by id.
type memoKey struct {
	base, prev uint64
	had, want  nameKey
}

// viewIDs numbers delta views (0: none).
var viewIDs atomic.Uint64

func newView(version string) *deltaView {
	return &deltaView{id: viewIDs.Add(1), version: version}
}

func (k deltaKey) memo() memoKey {
	m := memoKey{had: k.had, want: k.want}
	if k.base != nil {
		m.base = k.base.id
	}
	if k.prev != nil {
		m.prev = k.prev.id
	}
	return m
}

type deltaBody struct {
	once sync.Once
	body []byte
	// empty: no resource and no removal (nothing to send unless the
	// client waits for an answer).
	empty bool
	err   error
}

// view returns the set's delta view (plain types).
func (sr *sharedResources) view() *deltaView {
	sr.viewOnce.Do(func() {
		v := newView(sr.version)
		for i, r := range sr.resources {
			name := cachev3.GetResourceName(r)
			var b []byte
			var sum [32]byte
			switch {
			case sr.sums != nil:
				b, sum = sr.encoded[i], sr.sums[i]
			case sr.encoded != nil:
				b = sr.encoded[i]
				sum = sha256.Sum256(b)
			default:
				b, sum = encode(r)
			}
			v.add(name, name, b, sum)
		}
		sr.dview = v
	})
	return sr.dview
}

// vhdsViews returns an RDS set's route configurations and virtual hosts in
// VHDS form.
func (sr *sharedResources) vhdsViews() (routes, hosts *deltaView) {
	sr.vhdsOnce.Do(func() {
		rv, hv := newView(sr.version), newView(sr.version)
		for _, r := range sr.resources {
			rc, ok := r.(*routev3.RouteConfiguration)
			if !ok {
				continue
			}
			f := rcFormOf(sr.rcForms, rc)
			rv.add(rc.GetName(), rc.GetName(), f.enc, f.sum)
			for i := range f.vhNames {
				hv.add(f.vhNames[i], rc.GetName(), f.vhEnc[i], f.vhSums[i])
			}
		}
		sr.vroutes, sr.vhosts = rv, hv
	})
	return sr.vroutes, sr.vhosts
}

func (v *deltaView) add(name, sub string, enc []byte, sum [32]byte) {
	if v.index == nil {
		v.index = map[string]int{}
	}
	v.index[name] = len(v.names)
	v.names = append(v.names, name)
	v.sub = append(v.sub, sub)
	v.enc = append(v.enc, enc)
	v.sums = append(v.sums, sum)
}

// vhdsVirtualHostsField is RouteConfiguration.virtual_hosts.
const vhdsVirtualHostsField = 2

// rcForm is one route configuration in VHDS form.
type rcForm struct {
	enc     []byte // the route configuration without virtual hosts, vhds set
	sum     [32]byte
	vhNames []string // "<route configuration>/<virtual host>"
	vhEnc   [][]byte
	vhSums  [][32]byte
}

// rcFormOf derives rc's VHDS form, once per push when forms is the push's
// map (nil: every call): route configurations are shared by every class
// that sees them.
func rcFormOf(forms *sync.Map, rc *routev3.RouteConfiguration) *rcForm {
	if forms != nil {
		if v, ok := forms.Load(rc); ok {
			return v.(*rcForm)
		}
	}
	f := &rcForm{}
	stripped := rc
	if len(rc.GetVirtualHosts()) > 0 {
		// A shallow copy without the virtual hosts (its other fields are
		// rc's own values, shared and never modified).
		stripped = &routev3.RouteConfiguration{}
		dst := stripped.ProtoReflect()
		rc.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Number() != vhdsVirtualHostsField {
				dst.Set(fd, v)
			}
			return true
		})
		stripped.Vhds = &routev3.Vhds{ConfigSource: &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}}
		for _, vh := range rc.GetVirtualHosts() {
			b, sum := encode(vh)
			f.vhNames = append(f.vhNames, rc.GetName()+"/"+vh.GetName())
			f.vhEnc = append(f.vhEnc, b)
			f.vhSums = append(f.vhSums, sum)
		}
	}
	f.enc, f.sum = encode(stripped)
	if forms != nil {
		v, _ := forms.LoadOrStore(rc, f)
		return v.(*rcForm)
	}
	return f
}

// encode marshals msg deterministically (nil if that fails).
func encode(msg proto.Message) ([]byte, [32]byte) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		b = nil
	}
	return b, sha256.Sum256(b)
}

// matcher reports whether a subscription (name set k) covers sub names.
func matcher(k nameKey) func(string) bool {
	if k.all {
		return func(string) bool { return true }
	}
	set := map[string]bool{}
	for _, n := range listOf(k) {
		set[n] = true
	}
	return func(n string) bool { return set[n] }
}

// resourceVersion is a resource's version in delta responses: its digest.
func resourceVersion(sum [32]byte) string { return hex.EncodeToString(sum[:8]) }

// body returns the encoded DeltaDiscoveryResponse (system_version_info,
// resources, type_url, removed_resources; no nonce) that takes a client
// from k.base/k.prev under subscription k.had to v under k.want, built
// once per key.
func (v *deltaView) body(st *prepStats, typeURL string, k deltaKey) ([]byte, bool, error) {
	mk := k.memo()
	x, ok := v.bodies.Load(mk)
	if !ok {
		x, _ = v.bodies.LoadOrStore(mk, &deltaBody{})
	}
	d := x.(*deltaBody)
	d.once.Do(func() {
		st.marshals.Add(1)
		want := matcher(k.want)
		had := matcher(k.had)
		resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: v.version, TypeUrl: typeURL}
		for i, name := range v.names {
			if !want(v.sub[i]) {
				continue
			}
			if b := k.base; b != nil {
				if j, ok := b.index[name]; ok && had(b.sub[j]) && b.sums[j] == v.sums[i] {
					continue // the client has this very content
				}
			}
			if v.enc[i] == nil {
				d.err = fmt.Errorf("marshal %s %q failed", typeURL, name)
				return
			}
			resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: resourceVersion(v.sums[i]),
				Resource: &anypb.Any{TypeUrl: typeURL, Value: v.enc[i]}})
		}
		if p := k.prev; p != nil {
			for j, name := range p.names {
				if _, ok := v.index[name]; ok && want(v.sub[v.index[name]]) {
					continue
				}
				if had(p.sub[j]) && want(p.sub[j]) {
					resp.RemovedResources = append(resp.RemovedResources, name)
				}
			}
		}
		d.empty = len(resp.Resources) == 0 && len(resp.RemovedResources) == 0
		d.body, d.err = proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	})
	return d.body, d.empty, d.err
}

// removedField encodes extra removed_resources entries (field 6) to append
// to a shared body: names a reconnecting client reported that no longer
// exist.
func removedField(names []string) []byte {
	var b []byte
	for _, n := range names {
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendString(b, n)
	}
	return b
}

// vhdsOwner is the route configuration a VHDS resource name belongs to.
func vhdsOwner(name string) string {
	rc, _, _ := strings.Cut(name, "/")
	return rc
}
