package analyze

import (
	"fmt"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
)

// CodeTunnelNotApplied: a route sends traffic to a DestinationRule tunnel
// that Istio's rule (and weft's) does not apply to it.
const CodeTunnelNotApplied = "WEFT0119" // an http route, or a weighted tcp/tls route's subset, does not get the DestinationRule tunnel

// tunnels reports routes whose destination has a DestinationRule tunnel
// that does not apply: tunnels are set on tcp_proxy (TCP and TLS routes),
// so HTTP routes go to the forward proxy untunneled; and with several
// weighted destinations only the first host's top-level tunnel applies,
// so a subset's tunnel is ignored (Istio's tunnelingconfig.Apply).
func (a *analyzer) tunnels() {
	type dr struct {
		r    *config.Resource
		spec *networking.DestinationRule
	}
	byHost := map[string][]dr{}
	for _, r := range a.rs {
		if d, ok := r.Spec.(*networking.DestinationRule); ok {
			h := a.fqdn(d.GetHost(), r.Meta.Namespace)
			byHost[h] = append(byHost[h], dr{r, d})
		}
	}
	if len(byHost) == 0 {
		return
	}
	// tunnelOf returns the DestinationRule and tunnel a single destination
	// gets: the subset's own for a subset, else the top-level one.
	tunnelOf := func(d *networking.Destination, ns string) (*config.Resource, *networking.TrafficPolicy_TunnelSettings, string) {
		for _, x := range byHost[a.fqdn(d.GetHost(), ns)] {
			if d.GetSubset() == "" {
				if t := x.spec.GetTrafficPolicy().GetTunnel(); t != nil {
					return x.r, t, ""
				}
				continue
			}
			for _, s := range x.spec.GetSubsets() {
				if s.GetName() == d.GetSubset() && s.GetTrafficPolicy().GetTunnel() != nil {
					return x.r, s.GetTrafficPolicy().GetTunnel(), s.GetName()
				}
			}
		}
		return nil, nil, ""
	}
	name := func(r *config.Resource, subset string) string {
		s := fmt.Sprintf("DestinationRule %s/%s", r.Meta.Namespace, r.Meta.Name)
		if subset != "" {
			s += " subset " + subset
		}
		return s
	}
	for _, r := range a.rs {
		vs, ok := r.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		ns := r.Meta.Namespace
		for i, h := range vs.GetHttp() {
			for j, d := range h.GetRoute() {
				if dr, t, subset := tunnelOf(d.GetDestination(), ns); t != nil {
					a.report(r, Warning, CodeTunnelNotApplied, fmt.Sprintf("spec.http[%d].route[%d].destination", i, j),
						"%s has a tunnel to %s:%d, but tunnels apply to tcp and tls routes only: this HTTP traffic goes to %s untunneled",
						name(dr, subset), t.GetTargetHost(), t.GetTargetPort(), d.GetDestination().GetHost())
				}
			}
		}
		weighted := func(kind string, i int, ds []*networking.RouteDestination) {
			if len(ds) < 2 {
				return
			}
			for j, d := range ds {
				if d.GetDestination().GetSubset() == "" {
					continue
				}
				if dr, t, subset := tunnelOf(d.GetDestination(), ns); t != nil {
					a.report(r, Warning, CodeTunnelNotApplied, fmt.Sprintf("spec.%s[%d].route[%d].destination.subset", kind, i, j),
						"%s has a tunnel to %s:%d, but with several weighted destinations only the first host's top-level tunnel applies (as in Istio)",
						name(dr, subset), t.GetTargetHost(), t.GetTargetPort())
				}
			}
		}
		for i, tr := range vs.GetTcp() {
			weighted("tcp", i, tr.GetRoute())
		}
		for i, tr := range vs.GetTls() {
			weighted("tls", i, tr.GetRoute())
		}
	}
}
