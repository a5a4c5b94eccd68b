package proxy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3" // request_authn golden
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// TestTranslatorGoldenCompat feeds the translator's golden outputs
// (pkg/xds/translate/testdata/*.golden.json) through the proxy's compiler:
// every sidecar config the control plane produces must be accepted.
func TestTranslatorGoldenCompat(t *testing.T) {
	files, _ := filepath.Glob("../xds/translate/testdata/*.golden.json")
	if len(files) == 0 {
		t.Skip("no translator golden files")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".golden.json")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Listeners, Routes, Clusters, Endpoints []json.RawMessage
			}
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			res := xdsclient.NewResources()
			u := protojson.UnmarshalOptions{DiscardUnknown: false}
			for _, raw := range doc.Listeners {
				m := &listenerv3.Listener{}
				if err := u.Unmarshal(raw, m); err != nil {
					t.Fatalf("listener: %v", err)
				}
				res.Listeners[m.GetName()] = m
			}
			for _, raw := range doc.Routes {
				m := &routev3.RouteConfiguration{}
				if err := u.Unmarshal(raw, m); err != nil {
					t.Fatalf("route: %v", err)
				}
				res.Routes[m.GetName()] = m
			}
			for _, raw := range doc.Clusters {
				m := &clusterv3.Cluster{}
				if err := u.Unmarshal(raw, m); err != nil {
					t.Fatalf("cluster: %v", err)
				}
				res.Clusters[m.GetName()] = m
			}
			for _, raw := range doc.Endpoints {
				m := &endpointv3.ClusterLoadAssignment{}
				if err := u.Unmarshal(raw, m); err != nil {
					t.Fatalf("endpoints: %v", err)
				}
				res.Endpoints[m.GetClusterName()] = m
			}
			res.Received[xdsclient.ListenerType], res.Received[xdsclient.ClusterType] = true, true
			rt, err := listener.Build(res, cluster.NewManager(nil, nil, nil), nil, nil)
			if err != nil {
				t.Fatalf("the proxy would NACK this translator output: %v", err)
			}
			var warns []string
			warns = append(warns, rt.Warnings...)
			for _, c := range rt.Clusters.Clusters {
				warns = append(warns, c.Warnings...)
			}
			if len(warns) > 0 {
				t.Logf("accepted with warnings: %q", warns)
			}
			if !rt.Complete {
				t.Logf("incomplete: a referenced RDS/EDS resource is missing")
			}
			// /config_dump must be able to render every resource (all Any
			// types linked into the proxy).
			for _, l := range res.Listeners {
				if _, err := protojson.Marshal(l); err != nil {
					t.Errorf("config_dump of listener %q: %v", l.GetName(), err)
				}
			}
			for _, r := range res.Routes {
				if _, err := protojson.Marshal(r); err != nil {
					t.Errorf("config_dump of route %q: %v", r.GetName(), err)
				}
			}
			for _, c := range res.Clusters {
				if _, err := protojson.Marshal(c); err != nil {
					t.Errorf("config_dump of cluster %q: %v", c.GetName(), err)
				}
			}
		})
	}
}
