package server

import (
	"log/slog"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
)

const meshYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: 19080}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 19081}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - {destination: {host: reviews.default.svc.cluster.local, subset: v1}, weight: 50}
    - {destination: {host: reviews.default.svc.cluster.local, subset: v2}, weight: 50}
`

// TestTranslatedSidecarSnapshot runs the production generator (registry +
// translator) for a sidecar with node metadata and checks that its
// snapshot passes the consistency gate and reaches the client.
func TestTranslatedSidecarSnapshot(t *testing.T) {
	rs, err := config.Decode("mesh.yaml", []byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	_, srv, addr := startTranslated(t, rs)

	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "default", "WORKLOAD_NAME": "productpage", "INBOUND_ADDRESS": "127.0.0.1:15006",
		"APP_PORTS": "9081", "SERVICES": "productpage:9080/HTTP", "LABELS": map[string]any{"app": "productpage"}})
	node := &corev3.Node{Id: "sidecar~127.0.0.1~productpage.default~default.svc.cluster.local", Metadata: md}
	c := dial(t, addr)
	c.send(t, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	r := c.next(t)
	names := clusterNames(t, r)
	want := "outbound|9080|v2|reviews.default.svc.cluster.local"
	found := false
	for _, n := range names {
		found = found || n == want
	}
	if !found {
		t.Errorf("clusters %v lack %s", names, want)
	}
	if e := statusOf(t, srv, node.Id).Error; e != "" {
		t.Errorf("generation error: %s", e)
	}
}

// Proxies equal in every field translation reads share one build per push;
// any difference there gets a build of its own.
func TestTranslateGeneratorSharesClasses(t *testing.T) {
	base := func() *model.Proxy {
		return &model.Proxy{ID: "sidecar~10.0.0.1~app.default~default.svc.cluster.local", Type: model.Sidecar, IP: "10.0.0.1",
			Namespace: "default", Workload: "app", Labels: map[string]string{"app": "a", "version": "v1"}, Metadata: map[string]string{}}
	}
	build := TranslateGenerator(registry.New(slog.New(slog.DiscardHandler)))(nil)
	first, err := build(base())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*model.Proxy)
		shared bool
	}{
		{"other node ID", func(p *model.Proxy) { p.ID = "sidecar~10.0.0.1~app.default~other" }, true},
		{"labels in another map", func(p *model.Proxy) { p.Labels = map[string]string{"version": "v1", "app": "a"} }, true},
		{"other labels", func(p *model.Proxy) { p.Labels["version"] = "v2" }, false},
		{"other namespace", func(p *model.Proxy) { p.Namespace = "prod" }, false},
		{"other workload (backing no service)", func(p *model.Proxy) { p.Workload = "app-2" }, true},
		{"other IP", func(p *model.Proxy) { p.IP = "10.0.0.2" }, true},
		{"other metrics address", func(p *model.Proxy) { p.Metadata["METRICS_ADDRESS"] = "10.0.0.2:15020" }, true},
		{"app ports", func(p *model.Proxy) { p.AppPorts = []uint32{8080} }, false},
		{"locality", func(p *model.Proxy) { p.Metadata["LOCALITY"] = "r/z" }, false},
		{"gateway", func(p *model.Proxy) { p.Type = model.Router }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.change(p)
			got, err := build(p)
			if err != nil {
				t.Fatal(err)
			}
			if (got == first) != tc.shared {
				t.Errorf("shared the first build = %v, want %v", got == first, tc.shared)
			}
		})
	}
}

// The fields classKey leaves out do not change translate.Build's output,
// and those it keeps do: proxies are built from a registry where workload
// "productpage" backs productpage:9080.
func TestClassKeyFieldsDoNotChangeOutput(t *testing.T) {
	rs, err := config.Decode("mesh.yaml", []byte(meshYAML+`---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
`))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(slog.New(slog.DiscardHandler))
	reg.SetConfigs(rs)
	node := func(ip, pod, workload, sa string, extra map[string]any) *model.Proxy {
		m := map[string]any{"NAMESPACE": "default", "WORKLOAD_NAME": workload, "INBOUND_ADDRESS": ip + ":15006", "SERVICE_ACCOUNT": sa,
			"APP_PORTS": "9081", "SERVICES": "productpage:9080/HTTP", "LABELS": map[string]any{"app": "productpage"}}
		for k, v := range extra {
			m[k] = v
		}
		md, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		p, err := model.ParseNode("sidecar~"+ip+"~"+pod+".default~default.svc.cluster.local", md, "")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := node("10.0.0.1", "productpage-a", "productpage", "bookinfo", nil)
	reg.UpsertProxy(base)
	same := []*model.Proxy{
		node("10.0.0.2", "productpage-b", "productpage", "bookinfo", map[string]any{"METRICS_ADDRESS": "10.0.0.2:15020", "INSTANCE_IPS": "10.0.0.2"}),
		node("10.0.0.3", "productpage-c", "productpage", "other-sa", nil),
	}
	for _, p := range same {
		reg.UpsertProxy(p)
	}
	differ := []*model.Proxy{
		node("10.0.0.4", "other-a", "other", "bookinfo", nil), // backs nothing: no inbound port 9080
		node("10.0.0.5", "productpage-d", "productpage", "bookinfo", map[string]any{"LOCALITY": "r1/z1"}),
	}
	gen := TranslateGenerator(reg)(rs)
	hashes := func(p *model.Proxy) [numTypes][32]byte {
		out, err := gen(p)
		if err != nil {
			t.Fatal(err)
		}
		var h [numTypes][32]byte
		for i, rs := range [numTypes][]types.Resource{out.Clusters, out.Listeners, out.Routes, out.Endpoints} {
			h[i], _ = hashResources(rs, nil)
		}
		return h
	}
	backs := workloadServices(reg.Snapshot())
	want := hashes(base)
	for _, p := range same {
		if classKey(p, backs) != classKey(base, backs) {
			t.Errorf("%s: class key differs from %s", p.ID, base.ID)
		}
		// Build it on its own (a fresh generator has no class cache).
		out, err := TranslateGenerator(reg)(rs)(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, got := range [numTypes][]types.Resource{out.Clusters, out.Listeners, out.Routes, out.Endpoints} {
			if h, _ := hashResources(got, nil); h != want[i] {
				t.Errorf("%s: %s differ from %s's although the class key ignores what differs", p.ID, typeNames[i], base.ID)
			}
		}
	}
	for _, p := range differ {
		if classKey(p, backs) == classKey(base, backs) {
			t.Errorf("%s: same class key as %s", p.ID, base.ID)
		}
	}
	if hashes(differ[0])[lds] == want[lds] {
		t.Error("a workload backing no service got productpage's inbound listeners")
	}
}

// clientFirstPush decodes meshYAML into a registry and the production
// generator, and translates the first push for client.default.
func clientFirstPush(t *testing.T) ([]*config.Resource, *registry.Registry, Generator, *model.Proxy, *Resources) {
	t.Helper()
	rs, err := config.Decode("mesh.yaml", []byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(slog.New(slog.DiscardHandler))
	reg.SetConfigs(rs)
	gen := TranslateGenerator(reg)
	p, err := model.ParseNodeID("sidecar~10.0.0.9~client.default~default.svc.cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	first, err := gen(rs)(p)
	if err != nil {
		t.Fatal(err)
	}
	return rs, reg, gen, p, first
}

// A push with the same config objects and registry content reuses the
// previous push's output (so the server skips it without hashing); a
// registry change that adds endpoints does not.
func TestTranslateGeneratorReusesUnchangedPush(t *testing.T) {
	rs, reg, gen, p, first := clientFirstPush(t)
	// A proxy without services joins: the registry changes, its content
	// (services, endpoints) does not.
	other, _ := model.ParseNodeID("sidecar~10.0.0.10~other.default~default.svc.cluster.local")
	reg.UpsertProxy(other)
	again, err := gen(slices.Clone(rs))(p)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Error("an unchanged push was translated again")
	}
	// A proxy that joins a service adds an endpoint: translated again.
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "default", "SERVICES": "reviews:9080/HTTP", "INBOUND_ADDRESS": "10.0.0.11:15006"})
	joined, err := model.ParseNode("sidecar~10.0.0.11~reviews-v3.default~default.svc.cluster.local", md, "")
	if err != nil {
		t.Fatal(err)
	}
	reg.UpsertProxy(joined)
	changed, err := gen(rs)(p)
	if err != nil {
		t.Fatal(err)
	}
	if changed == first {
		t.Error("a registry change with a new endpoint reused the old output")
	}
	// Other config objects: translated again.
	if out, _ := gen(append(slices.Clone(rs), vs("extra")))(p); out == changed {
		t.Error("a config change reused the old output")
	}
}

// EnvoyFilter proxy matches read node metadata (ISTIO_VERSION for
// proxyVersion, metadata keys): proxies differing there get their own
// build, and only the matching one gets the patch.
func TestTranslateGeneratorEnvoyFilterProxyMatch(t *testing.T) {
	rs, err := config.Decode("ef.yaml", []byte(`apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: drop-passthrough, namespace: default}
spec:
  configPatches:
  - applyTo: CLUSTER
    match: {proxy: {proxyVersion: '^1\.24\.', metadata: {CLUSTER_ID: west}}, cluster: {name: PassthroughCluster}}
    patch: {operation: REMOVE}
`))
	if err != nil {
		t.Fatal(err)
	}
	proxy := func(version, cluster string) *model.Proxy {
		return &model.Proxy{ID: "sidecar~10.0.0.1~app.default~default.svc.cluster.local", Type: model.Sidecar, Namespace: "default",
			Labels: map[string]string{"app": "a"}, Metadata: map[string]string{"ISTIO_VERSION": version, "CLUSTER_ID": cluster}}
	}
	build := TranslateGenerator(registry.New(slog.New(slog.DiscardHandler)))(rs)
	hasPassthrough := func(p *model.Proxy) bool {
		res, err := build(p)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(res.Clusters, func(r types.Resource) bool { return cachev3.GetResourceName(r) == "PassthroughCluster" })
	}
	for _, tc := range []struct {
		version, cluster string
		want             bool
	}{{"1.24.2", "west", false}, {"1.23.0", "west", true}, {"1.24.2", "east", true}, {"1.24.0", "west", false}} {
		if got := hasPassthrough(proxy(tc.version, tc.cluster)); got != tc.want {
			t.Errorf("ISTIO_VERSION %s CLUSTER_ID %s: PassthroughCluster present = %v, want %v", tc.version, tc.cluster, got, tc.want)
		}
	}
}

// Sidecars of two deployments in one namespace are different classes
// (their inbound sides differ) but share the translated outbound side: the
// same route table and outbound clusters (the same objects, translated and
// hashed once), while each gets its own inbound cluster.
func TestClassesShareOutboundResponses(t *testing.T) {
	rs, err := config.Decode("mesh.yaml", []byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	_, srv, addr := startTranslated(t, rs)

	node := func(app, port string) *corev3.Node {
		md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": "default", "WORKLOAD_NAME": app,
			"APP_PORTS": port, "LABELS": map[string]any{"app": app, "version": "v1"}})
		return &corev3.Node{Id: "sidecar~127.0.0.1~" + app + "-1.default~default.svc.cluster.local", Metadata: md}
	}
	get := func(n *corev3.Node, typeURL string, names ...string) *discoveryv3.DiscoveryResponse {
		c := dial(t, addr)
		c.send(t, &discoveryv3.DiscoveryRequest{Node: n, TypeUrl: typeURL, ResourceNames: names})
		return c.next(t)
	}
	// (That equal route tables are encoded once per push is
	// TestSharedResponsesMarshalOnce's; a push may come between these two
	// connects, so it is not counted here.)
	r1 := get(node("productpage", "9081"), resourcev3.RouteType, "9080")
	r2 := get(node("ratings", "9082"), resourcev3.RouteType, "9080")
	if len(r1.GetResources()) != 1 || !slices.Equal(r1.GetResources()[0].GetValue(), r2.GetResources()[0].GetValue()) {
		t.Error("the two sidecars got different route tables")
	}
	c1 := clusterNames(t, get(node("productpage", "9081"), resourcev3.ClusterType))
	c2 := clusterNames(t, get(node("ratings", "9082"), resourcev3.ClusterType))
	if !slices.Contains(c1, "inbound|9081||") || slices.Contains(c1, "inbound|9082||") || !slices.Contains(c2, "inbound|9082||") {
		t.Errorf("clusters: productpage %v, ratings %v: want each its own inbound cluster", c1, c2)
	}
	// The two classes' outputs hold the very same outbound objects (one
	// translation, hashed once), not equal copies.
	srv.mu.Lock()
	o1, o2 := srv.proxies[node("productpage", "").Id].out, srv.proxies[node("ratings", "").Id].out
	srv.mu.Unlock()
	if o1 == nil || o2 == nil || o1 == o2 {
		t.Fatalf("outputs %p and %p: want two classes' outputs", o1, o2)
	}
	if o1.Routes[0] != o2.Routes[0] {
		t.Error("the route tables are separate objects: the outbound side was translated per class")
	}
	byName := func(rs []types.Resource) map[string]types.Resource {
		m := map[string]types.Resource{}
		for _, r := range rs {
			m[cachev3.GetResourceName(r)] = r
		}
		return m
	}
	m1, m2 := byName(o1.Clusters), byName(o2.Clusters)
	if name := "outbound|9080|v1|reviews.default.svc.cluster.local"; m1[name] == nil || m1[name] != m2[name] {
		t.Errorf("cluster %s is not one shared object", name)
	}
}

// A push that changes only VirtualServices hands proxies the previous
// push's cluster and load-assignment objects (translate.NewCacheFrom), so
// they are not hashed or encoded again; any other change does not.
func TestTranslateGeneratorReusesClustersOnVirtualServiceChange(t *testing.T) {
	rs, reg, gen, p, first := clientFirstPush(t)
	find := func(out *Resources, name string) types.Resource {
		for _, c := range out.Clusters {
			if cachev3.GetResourceName(c) == name {
				return c
			}
		}
		t.Fatalf("no cluster %s", name)
		return nil
	}
	const name = "outbound|9080|v1|reviews.default.svc.cluster.local"
	// The reviews VirtualService edited: 100 % to v1.
	edited := slices.Clone(rs)
	for i, r := range edited {
		if r.Kind == config.KindVirtualService {
			c := *r
			c.Spec = &networking.VirtualService{Hosts: []string{"reviews.default.svc.cluster.local"}, Http: []*networking.HTTPRoute{{
				Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews.default.svc.cluster.local", Subset: "v1"}}}}}}
			edited[i] = &c
		}
	}
	reg.SetConfigs(edited) // as the server does on every config change
	second, err := gen(edited)(p)
	if err != nil {
		t.Fatal(err)
	}
	if find(second, name) != find(first, name) || second.Endpoints[0] != first.Endpoints[0] {
		t.Error("a VirtualService change built clusters or load assignments again")
	}
	if slices.Equal(second.Routes, first.Routes) {
		t.Error("a VirtualService change kept the old routes")
	}
	// A DestinationRule removed: clusters are built again.
	var noDR []*config.Resource
	for _, r := range edited {
		if r.Kind != config.KindDestinationRule {
			noDR = append(noDR, r)
		}
	}
	third, err := gen(noDR)(p)
	if err != nil {
		t.Fatal(err)
	}
	if c := find(third, "outbound|9080||reviews.default.svc.cluster.local"); c == find(second, "outbound|9080||reviews.default.svc.cluster.local") {
		t.Error("a DestinationRule change reused the old clusters")
	}
}
