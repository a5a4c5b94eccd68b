package dashboard

import (
	"math"
	"sort"
	"time"
)

// Node kinds in the graph.
const (
	NodeService  = "service"
	NodeWorkload = "workload"
	NodeUnknown  = "unknown"
)

// Health of a node, from its inbound 5xx share (Kiali's default thresholds).
const (
	HealthHealthy  = "healthy"
	HealthDegraded = "degraded" // > 0.1 % errors
	HealthFailing  = "failing"  // >= 20 % errors
	HealthIdle     = "idle"     // no inbound requests in the window
)

// Signals are the golden signals of a set of requests over a window.
type Signals struct {
	Requests  float64 `json:"requests"`
	RPS       float64 `json:"rps"`
	ErrorRate float64 `json:"errorRate"` // 5xx share, 0..1
	P99Ms     float64 `json:"p99Ms"`
}

// Node is a graph vertex: a service, or a workload that no service fronts.
type Node struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Workloads []string `json:"workloads,omitempty"`
	Health    string   `json:"health"`
	Inbound   Signals  `json:"inbound"`
}

// Edge is traffic from one node to another.
type Edge struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Target string `json:"target"`
	Signals
	MTLS      bool    `json:"mtls"`      // most requests (whose reporter knew the policy) used mutual TLS
	MTLSShare float64 `json:"mtlsShare"` // 0..1 of the requests with a known connection_security_policy
	Protocol  string  `json:"protocol,omitempty"`
}

// Graph is the answer of GET /api/graph.
type Graph struct {
	Timestamp time.Time `json:"timestamp"`
	Window    string    `json:"window"`
	Nodes     []Node    `json:"nodes"`
	Edges     []Edge    `json:"edges"`
}

// Point is one sample of a time series.
type Point struct {
	T         time.Time `json:"t"`
	RPS       float64   `json:"rps"`
	ErrorRate float64   `json:"errorRate"`
	P99Ms     float64   `json:"p99Ms"`
}

// Detail is the answer of GET /api/services/{ns}/{name} and
// GET /api/workloads/{ns}/{name}.
type Detail struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Workloads []string `json:"workloads,omitempty"` // services: the workloads behind it
	Services  []string `json:"services,omitempty"`  // workloads: the services it backs
	Window    string   `json:"window"`
	Inbound   Signals  `json:"inbound"`
	Outbound  Signals  `json:"outbound"`
	Series    []Point  `json:"series"`
	InEdges   []Edge   `json:"inEdges"`
	OutEdges  []Edge   `json:"outEdges"`
}

func serviceNodeID(k edgeKey) string { return "svc:" + k.DstSvcNS + "/" + k.DstSvcName }

// nodeIndex maps workloads to the service nodes that front them.
type nodeIndex struct {
	svcOf map[[2]string]string // {ns, workload} -> service node ID
	svcs  map[string]*Node
}

func newNodeIndex(ticks []tick) *nodeIndex {
	ix := &nodeIndex{svcOf: map[[2]string]string{}, svcs: map[string]*Node{}}
	for _, t := range ticks {
		for k := range t.Edges {
			id := serviceNodeID(k)
			n := ix.svcs[id]
			if n == nil {
				n = &Node{ID: id, Kind: NodeService, Namespace: k.DstSvcNS, Name: k.DstSvcName}
				ix.svcs[id] = n
			}
			if k.DstWorkload != "unknown" {
				n.Workloads = appendUnique(n.Workloads, k.DstWorkload)
				wk := [2]string{k.DstNS, k.DstWorkload}
				if cur, ok := ix.svcOf[wk]; !ok || id < cur {
					ix.svcOf[wk] = id
				}
			}
		}
	}
	return ix
}

// sourceNode returns the node a request's client belongs to: the service
// fronting its workload, else the service named like its app label in its
// namespace, else the workload itself, else "unknown".
func (ix *nodeIndex) sourceNode(k edgeKey) Node {
	if k.SrcWorkload == "unknown" {
		return Node{ID: "unknown", Kind: NodeUnknown, Name: "unknown"}
	}
	if id, ok := ix.svcOf[[2]string{k.SrcNS, k.SrcWorkload}]; ok {
		return *ix.svcs[id]
	}
	if k.SrcApp != "" && k.SrcApp != "unknown" {
		id := "svc:" + k.SrcNS + "/" + k.SrcApp
		if n, ok := ix.svcs[id]; ok {
			return *n
		}
		return Node{ID: id, Kind: NodeService, Namespace: k.SrcNS, Name: k.SrcApp, Workloads: []string{k.SrcWorkload}}
	}
	return Node{ID: "wl:" + k.SrcNS + "/" + k.SrcWorkload, Kind: NodeWorkload, Namespace: k.SrcNS, Name: k.SrcWorkload}
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	list = append(list, s)
	sort.Strings(list)
	return list
}

// signals computes golden signals from summed stats over a duration.
func signals(st *edgeStats, dur time.Duration) Signals {
	s := Signals{Requests: round(st.Requests, 3)}
	if dur > 0 {
		s.RPS = round(st.Requests/dur.Seconds(), 3)
	}
	if st.Requests > 0 {
		s.ErrorRate = round(st.Errors/st.Requests, 4)
	}
	s.P99Ms = round(quantile(0.99, st.Buckets), 2)
	return s
}

func round(v float64, digits int) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// window returns the ticks in the last d and the time they cover.
func window(ticks []tick, now time.Time, d time.Duration) ([]tick, time.Duration) {
	from := now.Add(-d)
	i := sort.Search(len(ticks), func(i int) bool { return ticks[i].At.After(from) })
	var covered time.Duration
	for _, t := range ticks[i:] {
		covered += t.Dur
	}
	return ticks[i:], covered
}

func health(s Signals) string {
	switch {
	case s.Requests == 0:
		return HealthIdle
	case s.ErrorRate >= 0.2:
		return HealthFailing
	case s.ErrorRate > 0.001:
		return HealthDegraded
	default:
		return HealthHealthy
	}
}

// buildGraph aggregates the edges of all stored ticks into a service graph
// whose numbers cover the last win. Edges seen earlier in the retention but
// idle in the window stay, with zero rates. Proxies that never carried
// traffic appear as idle nodes (by their app label's service, else as a
// workload).
func buildGraph(ticks []tick, proxies []ProxyInfo, now time.Time, win time.Duration) Graph {
	ix := newNodeIndex(ticks)
	recent, covered := window(ticks, now, win)
	type agg struct {
		edge  Edge
		stats edgeStats
	}
	edges := map[string]*agg{}
	nodes := map[string]*Node{}
	inbound := map[string]*edgeStats{}
	addNode := func(n Node) {
		if _, ok := nodes[n.ID]; !ok {
			nodes[n.ID] = &n
		}
	}
	edgeOf := func(k edgeKey) *agg {
		src := ix.sourceNode(k)
		dst := *ix.svcs[serviceNodeID(k)]
		addNode(src)
		addNode(dst)
		id := src.ID + "->" + dst.ID
		a := edges[id]
		if a == nil {
			a = &agg{edge: Edge{ID: id, Source: src.ID, Target: dst.ID, Protocol: k.Protocol}}
			edges[id] = a
		}
		return a
	}
	for _, t := range ticks {
		for k := range t.Edges {
			edgeOf(k)
		}
	}
	for _, t := range recent {
		for k, st := range t.Edges {
			edgeOf(k).stats.add(st)
			dst := serviceNodeID(k)
			if inbound[dst] == nil {
				inbound[dst] = &edgeStats{}
			}
			inbound[dst].add(st)
		}
	}
	for _, p := range proxies {
		if p.Workload == "" {
			continue
		}
		if _, ok := ix.svcOf[[2]string{p.Namespace, p.Workload}]; ok {
			continue
		}
		if app := p.Labels["app"]; app != "" {
			id := "svc:" + p.Namespace + "/" + app
			if n, ok := nodes[id]; ok {
				n.Workloads = appendUnique(n.Workloads, p.Workload)
			} else {
				addNode(Node{ID: id, Kind: NodeService, Namespace: p.Namespace, Name: app, Workloads: []string{p.Workload}})
			}
			continue
		}
		addNode(Node{ID: "wl:" + p.Namespace + "/" + p.Workload, Kind: NodeWorkload, Namespace: p.Namespace, Name: p.Workload})
	}
	g := Graph{Timestamp: now, Window: win.String(), Nodes: []Node{}, Edges: []Edge{}}
	for id, n := range nodes {
		if st := inbound[id]; st != nil {
			n.Inbound = signals(st, covered)
		}
		n.Health = health(n.Inbound)
		g.Nodes = append(g.Nodes, *n)
	}
	for _, a := range edges {
		e := a.edge
		e.Signals = signals(&a.stats, covered)
		if a.stats.SecKnown > 0 {
			e.MTLSShare = round(a.stats.MTLS/a.stats.SecKnown, 4)
			e.MTLS = e.MTLSShare >= 0.5
		}
		g.Edges = append(g.Edges, e)
	}
	sort.Slice(g.Nodes, func(i, j int) bool { return g.Nodes[i].ID < g.Nodes[j].ID })
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	return g
}

// buildDetail computes a service's or workload's signals, per-tick series
// over the last span and its edges over win. It returns false when the
// entity never appeared in the stored metrics.
func buildDetail(kind, ns, name string, ticks []tick, now time.Time, win, span time.Duration) (Detail, bool) {
	ix := newNodeIndex(ticks)
	var isIn, isOut func(k edgeKey) bool
	d := Detail{Kind: kind, Namespace: ns, Name: name, Window: win.String(), Series: []Point{}, InEdges: []Edge{}, OutEdges: []Edge{}}
	switch kind {
	case NodeService:
		id := "svc:" + ns + "/" + name
		isIn = func(k edgeKey) bool { return serviceNodeID(k) == id }
		isOut = func(k edgeKey) bool { return ix.sourceNode(k).ID == id }
		if n, ok := ix.svcs[id]; ok {
			d.Workloads = n.Workloads
		}
	default:
		isIn = func(k edgeKey) bool { return k.DstNS == ns && k.DstWorkload == name }
		isOut = func(k edgeKey) bool { return k.SrcNS == ns && k.SrcWorkload == name }
	}
	found := false
	for _, t := range ticks {
		for k := range t.Edges {
			if isIn(k) || isOut(k) {
				found = true
			}
			if kind == NodeWorkload && isIn(k) {
				d.Services = appendUnique(d.Services, k.DstSvcName)
			}
		}
	}
	if !found {
		return d, false
	}
	series, _ := window(ticks, now, span)
	for _, t := range series {
		var st edgeStats
		for k, e := range t.Edges {
			if isIn(k) {
				st.add(e)
			}
		}
		s := signals(&st, t.Dur)
		d.Series = append(d.Series, Point{T: t.At, RPS: s.RPS, ErrorRate: s.ErrorRate, P99Ms: s.P99Ms})
	}
	recent, covered := window(ticks, now, win)
	var in, out edgeStats
	for _, t := range recent {
		for k, e := range t.Edges {
			if isIn(k) {
				in.add(e)
			}
			if isOut(k) {
				out.add(e)
			}
		}
	}
	d.Inbound = signals(&in, covered)
	d.Outbound = signals(&out, covered)
	g := buildGraph(ticks, nil, now, win)
	for _, e := range g.Edges {
		// Graph edges are service-level; for a workload, match the nodes
		// its edges map to.
		if kind == NodeService {
			id := "svc:" + ns + "/" + name
			if e.Target == id {
				d.InEdges = append(d.InEdges, e)
			}
			if e.Source == id {
				d.OutEdges = append(d.OutEdges, e)
			}
		}
	}
	if kind == NodeWorkload {
		inNodes, outNodes := map[string]bool{}, map[string]bool{}
		for _, t := range ticks {
			for k := range t.Edges {
				if isIn(k) {
					inNodes[ix.sourceNode(k).ID+"->"+serviceNodeID(k)] = true
				}
				if isOut(k) {
					outNodes[ix.sourceNode(k).ID+"->"+serviceNodeID(k)] = true
				}
			}
		}
		for _, e := range g.Edges {
			if inNodes[e.ID] {
				d.InEdges = append(d.InEdges, e)
			}
			if outNodes[e.ID] {
				d.OutEdges = append(d.OutEdges, e)
			}
		}
	}
	return d, true
}
