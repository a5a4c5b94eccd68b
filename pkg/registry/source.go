package registry

import (
	"sort"
)

// ServiceKey identifies a service: its host name and the namespace that
// defines it.
type ServiceKey struct {
	Hostname  string
	Namespace string
}

// SourceService is one service with its endpoints as an external source
// (the Kubernetes registry) sees it.
type SourceService struct {
	Service   *Service
	Endpoints []*Endpoint
}

// Key returns the service's key.
func (s SourceService) Key() ServiceKey {
	return ServiceKey{Hostname: s.Service.Hostname, Namespace: s.Service.Namespace}
}

// Source is what an external service source feeds; *Registry implements it.
// Implementations must be safe for concurrent use.
type Source interface {
	// UpdateSource upserts and removes services of the named source in
	// one change.
	UpdateSource(source string, upsert []SourceService, remove []ServiceKey)
	// ReplaceSource replaces every service of the named source.
	ReplaceSource(source string, all []SourceService)
	// UpdateWorkloads upserts and removes workload instances (pods) of
	// the named source in one change.
	UpdateWorkloads(source string, upsert []*Workload, remove []WorkloadKey)
}

var _ Source = (*Registry)(nil)

// UpdateSource upserts and removes services of the named external source
// (e.g. "kubernetes") as one change: subscribers see one rebuild. The
// registry keeps the given values: callers must not modify them afterwards.
//
// Merging: a source service wins over a ServiceEntry host of the same
// namespace (the ServiceEntry is ignored, as Istio prefers the Kubernetes
// Service); a self-registered proxy naming the service's host and a port the
// service has joins it as one more endpoint. When two sources define the
// same key, the source whose name sorts first wins.
func (r *Registry) UpdateSource(source string, upsert []SourceService, remove []ServiceKey) {
	if len(upsert) == 0 && len(remove) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.sources[source]
	if m == nil {
		m = map[ServiceKey]SourceService{}
		r.sources[source] = m
	}
	for _, k := range remove {
		delete(m, k)
	}
	for _, s := range upsert {
		if s.Service == nil {
			continue
		}
		m[s.Key()] = s
	}
	if len(m) == 0 {
		delete(r.sources, source)
	}
	r.rebuildLocked()
}

// ReplaceSource replaces every service of the named source with all (nil
// removes the source).
func (r *Registry) ReplaceSource(source string, all []SourceService) {
	m := make(map[ServiceKey]SourceService, len(all))
	for _, s := range all {
		if s.Service != nil {
			m[s.Key()] = s
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(m) == 0 {
		if _, had := r.sources[source]; !had {
			return
		}
		delete(r.sources, source)
	} else {
		r.sources[source] = m
	}
	r.rebuildLocked()
}

// sourceServices flattens the sources in a stable order: by source name,
// then host name, then namespace.
func (r *Registry) sourceServicesLocked() []SourceService {
	names := make([]string, 0, len(r.sources))
	for n := range r.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []SourceService
	for _, n := range names {
		m := r.sources[n]
		start := len(out)
		for _, s := range m {
			out = append(out, s)
		}
		part := out[start:]
		sort.Slice(part, func(i, j int) bool {
			a, b := part[i].Key(), part[j].Key()
			if a.Hostname != b.Hostname {
				return a.Hostname < b.Hostname
			}
			return a.Namespace < b.Namespace
		})
	}
	return out
}

// Workload is a workload instance an external source knows, such as a
// Kubernetes pod: ServiceEntries with a workloadSelector select workloads
// of their namespace by labels, as they select WorkloadEntries.
type Workload struct {
	Name, Namespace string
	// Address is the workload's IP.
	Address        string
	Labels         map[string]string
	ServiceAccount string
	Locality       string // region/zone/subzone
	Network        string
}

// WorkloadKey identifies a workload.
type WorkloadKey struct {
	Namespace, Name string
}

// Key returns the workload's key.
func (w *Workload) Key() WorkloadKey { return WorkloadKey{Namespace: w.Namespace, Name: w.Name} }

// UpdateWorkloads upserts and removes workloads of the named source as one
// change. The registry keeps the given values: callers must not modify
// them afterwards.
func (r *Registry) UpdateWorkloads(source string, upsert []*Workload, remove []WorkloadKey) {
	if len(upsert) == 0 && len(remove) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.workloads[source]
	if m == nil {
		m = map[WorkloadKey]*Workload{}
		r.workloads[source] = m
	}
	for _, k := range remove {
		delete(m, k)
	}
	for _, w := range upsert {
		if w != nil {
			m[w.Key()] = w
		}
	}
	if len(m) == 0 {
		delete(r.workloads, source)
	}
	r.rebuildLocked()
}

// sourceWorkloadsLocked flattens the sources' workloads by source name,
// then namespace and name.
func (r *Registry) sourceWorkloadsLocked() []*Workload {
	names := make([]string, 0, len(r.workloads))
	for n := range r.workloads {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*Workload
	for _, n := range names {
		start := len(out)
		for _, w := range r.workloads[n] {
			out = append(out, w)
		}
		part := out[start:]
		sort.Slice(part, func(i, j int) bool {
			if part[i].Namespace != part[j].Namespace {
				return part[i].Namespace < part[j].Namespace
			}
			return part[i].Name < part[j].Name
		})
	}
	return out
}
