// Package analyze looks across a set of Istio resources for mistakes no
// single resource shows: routes to hosts nothing defines, subsets no
// DestinationRule declares, gateways that do not exist, virtual services that
// fight over a host, and policies whose selectors match no workload. It is
// pure: it reads only its arguments.
package analyze

import (
	"fmt"
	"sort"
	"strings"

	meshv1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/meshconfig"
)

// Severity orders messages by how much they matter.
type Severity int

// Severities.
const (
	Info Severity = iota
	Warning
	Error
)

func (s Severity) String() string {
	switch s {
	case Info:
		return "Info"
	case Warning:
		return "Warning"
	}
	return "Error"
}

// Message codes. They are stable: scripts may filter on them.
const (
	CodeHostNotFound       = "WEFT0101" // destination host matches no ServiceEntry or known service
	CodeSubsetNotFound     = "WEFT0102" // destination subset not declared by a DestinationRule
	CodeGatewayNotFound    = "WEFT0103" // VirtualService names a Gateway that does not exist
	CodeConflictingRoutes  = "WEFT0104" // two VirtualServices claim the same host on the same gateway
	CodeSelectorNoMatch    = "WEFT0105" // a workload selector matches no known workload
	CodeMultipleSidecars   = "WEFT0106" // more than one selector-less Sidecar in a namespace
	CodeDestRuleHostUnused = "WEFT0107" // DestinationRule host matches no known service
	CodeCustomProvider     = "WEFT0108" // AuthorizationPolicy CUSTOM names a missing or invalid ext_authz provider
	// EnvoyFilter patches.
	CodeEnvoyFilterNotExecuted = "WEFT0109" // a patch adds or sets something weft proxy does not execute
	CodeEnvoyFilterInvalid     = "WEFT0110" // a patch can never apply (operation, applyTo or value)
	CodeDelegateNotFound       = "WEFT0111" // an http route delegates to a VirtualService that does not exist or has hosts
)

// Message is one finding.
type Message struct {
	Severity Severity
	Code     string
	Resource config.Key
	Source   config.Source // file and line of the field, when decoded from text
	Path     string        // field path, e.g. spec.http[0].route[0].destination.host
	Text     string
}

func (m Message) String() string {
	var b strings.Builder
	if s := m.Source.String(); s != "" {
		b.WriteString(s + ": ")
	}
	kind := m.Resource.Kind
	if s, ok := config.SchemaForKind(kind); ok {
		kind = s.DisplayKind() // Gateway.gateway.networking.k8s.io for KubernetesGateway
	}
	fmt.Fprintf(&b, "%s [%s] %s %s/%s", m.Severity, m.Code, kind, m.Resource.Namespace, m.Resource.Name)
	if m.Path != "" {
		b.WriteString(": " + m.Path)
	}
	b.WriteString(": " + m.Text)
	return b.String()
}

// Workload is a running workload's identity for selector checks.
type Workload struct {
	Namespace string
	Labels    map[string]string
}

type options struct {
	knownHosts []string
	registry   bool // knownHosts is the complete registry
	workloads  []Workload
	checkSel   bool
	domain     string
	mesh       *meshv1.MeshConfig
}

// Option tunes Analyze.
type Option func(*options)

// WithKnownHosts adds hosts the registry knows besides ServiceEntries (for
// example Kubernetes services as "name.namespace.svc.cluster.local") and
// declares the registry complete: without it, an unknown cluster-local host
// is only reported as Info, since it may be a Kubernetes service.
func WithKnownHosts(hosts ...string) Option {
	return func(o *options) { o.knownHosts = append(o.knownHosts, hosts...); o.registry = true }
}

// WithWorkloads turns on selector checks against these workloads (and the
// WorkloadEntries among the analyzed resources).
func WithWorkloads(ws ...Workload) Option {
	return func(o *options) { o.workloads = append(o.workloads, ws...); o.checkSel = true }
}

// WithMeshConfig turns on the AuthorizationPolicy CUSTOM check: the
// provider must be an envoyExtAuthzHttp / envoyExtAuthzGrpc entry of m's
// extensionProviders (the proxy denies what the policy's rules match
// otherwise).
func WithMeshConfig(m *meshv1.MeshConfig) Option { return func(o *options) { o.mesh = m } }

// WithDomain sets the cluster domain used to qualify short host names
// (default "cluster.local").
func WithDomain(d string) Option { return func(o *options) { o.domain = d } }

type analyzer struct {
	o     options
	rs    []*config.Resource
	msgs  []Message
	hosts map[string]string // FQDN -> what defines it ("ServiceEntry ns/name")
	wild  []string          // wildcard hosts ("*.example.com")
}

// Analyze returns the cross-resource findings for rs, sorted by source.
func Analyze(rs []*config.Resource, opts ...Option) []Message {
	a := &analyzer{rs: latest(rs), hosts: map[string]string{}, o: options{domain: "cluster.local"}}
	for _, opt := range opts {
		opt(&a.o)
	}
	a.indexHosts()
	a.virtualServices()
	a.destinationRules()
	a.sidecars()
	a.envoyFilters()
	a.gatewayAPI()
	a.telemetries()
	a.tunnels()
	if a.o.checkSel {
		a.selectors()
	}
	if a.o.mesh != nil {
		a.customProviders()
		a.telemetryProviders()
	}
	sort.SliceStable(a.msgs, func(i, j int) bool {
		si, sj := a.msgs[i].Source, a.msgs[j].Source
		if si.File != sj.File {
			return si.File < sj.File
		}
		return si.Line < sj.Line
	})
	return a.msgs
}

// latest keeps the last definition of each resource, as applying rs in order
// would.
func latest(rs []*config.Resource) []*config.Resource {
	last := map[config.Key]int{}
	for i, r := range rs {
		last[r.Key()] = i
	}
	out := make([]*config.Resource, 0, len(last))
	for i, r := range rs {
		if last[r.Key()] == i {
			out = append(out, r)
		}
	}
	return out
}

func (a *analyzer) report(r *config.Resource, sev Severity, code, path, format string, args ...any) {
	fe := r.FieldError(path, sev != Error, format, args...)
	a.msgs = append(a.msgs, Message{Severity: sev, Code: code, Resource: r.Key(), Source: fe.Source, Path: path, Text: fe.Msg})
}

// fqdn qualifies a short name with the namespace, as Istio does:
// "reviews" -> "reviews.default.svc.cluster.local"; names with dots stay.
func (a *analyzer) fqdn(host, ns string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host != "*" && !strings.Contains(host, ".") {
		return host + "." + ns + ".svc." + a.o.domain
	}
	return host
}

func (a *analyzer) indexHosts() {
	for _, h := range a.o.knownHosts {
		a.addHost(strings.ToLower(h), "the service registry")
	}
	for _, r := range a.rs {
		se, ok := r.Spec.(*networking.ServiceEntry)
		if !ok {
			continue
		}
		for _, h := range se.GetHosts() {
			a.addHost(a.fqdn(h, r.Meta.Namespace), "ServiceEntry "+r.Meta.Namespace+"/"+r.Meta.Name)
		}
	}
}

func (a *analyzer) addHost(h, by string) {
	if strings.HasPrefix(h, "*") {
		a.wild = append(a.wild, h)
		return
	}
	if _, ok := a.hosts[h]; !ok {
		a.hosts[h] = by
	}
}

func (a *analyzer) hostKnown(fq string) bool {
	if _, ok := a.hosts[fq]; ok {
		return true
	}
	for _, w := range a.wild {
		if w == "*" || strings.HasSuffix(fq, strings.TrimPrefix(w, "*")) {
			return true
		}
	}
	return false
}

// checkDelegate reports a delegate that names no VirtualService, or one
// with hosts (a delegate must have none, or the proxies ignore it).
func (a *analyzer) checkDelegate(r *config.Resource, path string, d *networking.Delegate) {
	ns := d.GetNamespace()
	if ns == "" {
		ns = r.Meta.Namespace
	}
	for _, o := range a.rs {
		if vs, ok := o.Spec.(*networking.VirtualService); ok && o.Meta.Name == d.GetName() && o.Meta.Namespace == ns {
			if len(vs.GetHosts()) > 0 {
				a.report(r, Warning, CodeDelegateNotFound, path, "VirtualService %s/%s has hosts: a delegate must have none, so these routes are left out", ns, d.GetName())
			}
			return
		}
	}
	a.report(r, Warning, CodeDelegateNotFound, path, "delegate VirtualService %s/%s not found: these routes are left out", ns, d.GetName())
}

func (a *analyzer) checkDestination(r *config.Resource, path string, d *networking.Destination) {
	if d == nil || d.GetHost() == "" {
		return
	}
	fq := a.checkHost(r, path+".host", d.GetHost())
	if d.GetSubset() != "" {
		a.checkSubset(r, path+".subset", fq, d.GetSubset())
	}
}

// checkHost reports (WEFT0101, at path) a host that matches no
// ServiceEntry or known service, and returns its FQDN.
func (a *analyzer) checkHost(r *config.Resource, path, host string) string {
	fq := a.fqdn(host, r.Meta.Namespace)
	if !a.hostKnown(fq) {
		msg := fmt.Sprintf("host %q (%s) matches no ServiceEntry or known service", host, fq)
		sev := Warning
		if hint := a.hostHint(host, r.Meta.Namespace); hint != "" {
			msg += "; " + hint
		} else if !a.o.registry && strings.HasSuffix(fq, ".svc."+a.o.domain) {
			sev = Info
			msg += " here; fine if it is a Kubernetes service (pass known hosts to check)"
		}
		a.report(r, sev, CodeHostNotFound, path, "%s", msg)
	}
	return fq
}

// hostHint suggests the host of a ServiceEntry whose name was used as a host.
func (a *analyzer) hostHint(host, ns string) string {
	for _, r := range a.rs {
		if se, ok := r.Spec.(*networking.ServiceEntry); ok && r.Meta.Name == host && r.Meta.Namespace == ns && len(se.GetHosts()) > 0 {
			return fmt.Sprintf("did you mean %q, the host of ServiceEntry %s/%s?", se.GetHosts()[0], ns, host)
		}
	}
	var cands []string
	for h := range a.hosts {
		cands = append(cands, h)
	}
	if s := config.Suggest(a.fqdn(host, ns), cands); s != "" {
		return fmt.Sprintf("did you mean %q?", s)
	}
	return ""
}

func (a *analyzer) checkSubset(r *config.Resource, path, fq, subset string) {
	var found []*config.Resource
	for _, x := range a.rs {
		dr, ok := x.Spec.(*networking.DestinationRule)
		if !ok || a.fqdn(dr.GetHost(), x.Meta.Namespace) != fq {
			continue
		}
		found = append(found, x)
		for _, s := range dr.GetSubsets() {
			if s.GetName() == subset {
				return
			}
		}
	}
	if len(found) == 0 {
		a.report(r, Warning, CodeSubsetNotFound, path, "subset %q is not defined: no DestinationRule for host %s", subset, fq)
		return
	}
	var have []string
	for _, x := range found {
		for _, s := range x.Spec.(*networking.DestinationRule).GetSubsets() {
			have = append(have, s.GetName())
		}
	}
	a.report(r, Warning, CodeSubsetNotFound, path, "subset %q is not defined by DestinationRule %s/%s (subsets: %s)",
		subset, found[0].Meta.Namespace, found[0].Meta.Name, strings.Join(have, ", "))
}

func (a *analyzer) gatewayExists(ns, name string) bool {
	for _, r := range a.rs {
		if r.Kind == config.KindGateway && r.Meta.Namespace == ns && r.Meta.Name == name {
			return true
		}
	}
	return false
}

func (a *analyzer) virtualServices() {
	type claim struct {
		r    *config.Resource
		path string
	}
	claims := map[string]claim{}
	for _, r := range a.rs {
		vs, ok := r.Spec.(*networking.VirtualService)
		if !ok {
			continue
		}
		gws := vs.GetGateways()
		if len(gws) == 0 {
			gws = []string{"mesh"}
		}
		for i, g := range vs.GetGateways() {
			if g == "mesh" {
				continue
			}
			ns, name, ok := strings.Cut(g, "/")
			if !ok {
				ns, name = r.Meta.Namespace, g
			}
			if !a.gatewayExists(ns, name) {
				a.report(r, Warning, CodeGatewayNotFound, fmt.Sprintf("spec.gateways[%d]", i), "gateway %s/%s not found", ns, name)
			}
		}
		for i, h := range vs.GetHosts() {
			fq := a.fqdn(h, r.Meta.Namespace)
			for _, g := range gws {
				gk := g
				if g != "mesh" && !strings.Contains(g, "/") {
					gk = r.Meta.Namespace + "/" + g
				}
				k := fq + "|" + gk
				p := fmt.Sprintf("spec.hosts[%d]", i)
				if prev, dup := claims[k]; dup && prev.r != r {
					a.report(r, Warning, CodeConflictingRoutes, p,
						"host %s on gateway %s is also routed by VirtualService %s/%s (%s); only one of them takes effect — merge them",
						fq, gk, prev.r.Meta.Namespace, prev.r.Meta.Name, prev.r.Source.String())
					continue
				}
				claims[k] = claim{r, p}
			}
		}
		for i, hr := range vs.GetHttp() {
			if d := hr.GetDelegate(); d != nil {
				a.checkDelegate(r, fmt.Sprintf("spec.http[%d].delegate", i), d)
			}
			for j, rd := range hr.GetRoute() {
				a.checkDestination(r, fmt.Sprintf("spec.http[%d].route[%d].destination", i, j), rd.GetDestination())
			}
			//nolint:staticcheck // mirror is deprecated but still served.
			if m := hr.GetMirror(); m != nil {
				a.checkDestination(r, fmt.Sprintf("spec.http[%d].mirror", i), m)
			}
			for j, m := range hr.GetMirrors() {
				a.checkDestination(r, fmt.Sprintf("spec.http[%d].mirrors[%d].destination", i, j), m.GetDestination())
			}
		}
		for i, tr := range vs.GetTcp() {
			for j, rd := range tr.GetRoute() {
				a.checkDestination(r, fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), rd.GetDestination())
			}
		}
		for i, tr := range vs.GetTls() {
			for j, rd := range tr.GetRoute() {
				a.checkDestination(r, fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j), rd.GetDestination())
			}
		}
	}
}

func (a *analyzer) destinationRules() {
	if !a.o.registry {
		// Without a registry most DestinationRules target Kubernetes
		// services we cannot see; do not guess.
		return
	}
	for _, r := range a.rs {
		dr, ok := r.Spec.(*networking.DestinationRule)
		if !ok || strings.HasPrefix(dr.GetHost(), "*") {
			continue
		}
		if fq := a.fqdn(dr.GetHost(), r.Meta.Namespace); !a.hostKnown(fq) {
			a.report(r, Warning, CodeDestRuleHostUnused, "spec.host", "host %s matches no ServiceEntry or known service", fq)
		}
	}
}

func (a *analyzer) sidecars() {
	first := map[string]*config.Resource{}
	for _, r := range a.rs {
		sc, ok := r.Spec.(*networking.Sidecar)
		if !ok || len(sc.GetWorkloadSelector().GetLabels()) > 0 {
			continue
		}
		if prev, dup := first[r.Meta.Namespace]; dup {
			a.report(r, Warning, CodeMultipleSidecars, "spec.workloadSelector",
				"namespace %s already has a Sidecar without workloadSelector (%s); only one may apply", r.Meta.Namespace, prev.Meta.Name)
			continue
		}
		first[r.Meta.Namespace] = r
	}
}

func (a *analyzer) selectors() {
	workloads := append([]Workload(nil), a.o.workloads...)
	for _, r := range a.rs {
		if we, ok := r.Spec.(*networking.WorkloadEntry); ok {
			workloads = append(workloads, Workload{Namespace: r.Meta.Namespace, Labels: we.GetLabels()})
		}
	}
	for _, r := range a.rs {
		var path string
		var labels map[string]string
		switch s := r.Spec.(type) {
		case *security.AuthorizationPolicy:
			path, labels = "spec.selector.matchLabels", matchLabels(s.GetSelector())
		case *security.PeerAuthentication:
			path, labels = "spec.selector.matchLabels", matchLabels(s.GetSelector())
		case *security.RequestAuthentication:
			path, labels = "spec.selector.matchLabels", matchLabels(s.GetSelector())
		case *networking.Sidecar:
			path, labels = "spec.workloadSelector.labels", s.GetWorkloadSelector().GetLabels()
		case *networking.EnvoyFilter:
			path, labels = "spec.workloadSelector.labels", s.GetWorkloadSelector().GetLabels()
		default:
			continue
		}
		if len(labels) == 0 {
			continue
		}
		matched := false
		for _, w := range workloads {
			if w.Namespace == r.Meta.Namespace && subset(labels, w.Labels) {
				matched = true
				break
			}
		}
		if !matched {
			a.report(r, Warning, CodeSelectorNoMatch, path, "selector %s matches no workload in namespace %s", formatLabels(labels), r.Meta.Namespace)
		}
	}
}

func (a *analyzer) customProviders() {
	for _, r := range a.rs {
		ap, ok := r.Spec.(*security.AuthorizationPolicy)
		if !ok || ap.GetAction() != security.AuthorizationPolicy_CUSTOM {
			continue
		}
		name := ap.GetProvider().GetName()
		if _, err := meshconfig.ExtAuthz(a.o.mesh, name); err != nil {
			a.report(r, Error, CodeCustomProvider, "spec.provider.name", "%v; requests this policy's rules match are denied", err)
		}
	}
}

func matchLabels(s *typev1beta1.WorkloadSelector) map[string]string { return s.GetMatchLabels() }

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func formatLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
