package authz_test

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

// TestTranslatorEmitsRBAC checks the main translator puts the RBAC filters
// before the router on virtualInbound's HTTP chains.
func TestTranslatorEmitsRBAC(t *testing.T) {
	p := &model.Proxy{Type: model.Sidecar, Namespace: "default", Workload: "web-1", Labels: map[string]string{"app": "web"}, AppPorts: []uint32{8080}}
	filtersOf := func(y string) []*hcmv3.HttpFilter {
		out, err := translate.Build(&translate.Input{Configs: decode(t, y)}, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range out.Listeners {
			l := r.(*listenerv3.Listener)
			if l.GetName() != translate.VirtualInbound {
				continue
			}
			h := &hcmv3.HttpConnectionManager{}
			if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			return h.GetHttpFilters()
		}
		t.Fatal("no virtualInbound")
		return nil
	}
	if fs := filtersOf(""); len(fs) != 1 || fs[0].GetName() == authz.FilterName {
		t.Fatalf("without policies: %v", fs)
	}
	fs := filtersOf(denyAdmin + allowPublic)
	if len(fs) != 3 || fs[0].GetName() != authz.FilterName || fs[1].GetName() != authz.FilterName || fs[2].GetName() == authz.FilterName {
		t.Fatalf("filters %v, want rbac, rbac, router", fs)
	}
	var cfgs []*rbachttp.RBAC
	for _, f := range fs[:2] {
		c := &rbachttp.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	e, err := rbac.New(cfgs...)
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Check(&rbac.Request{Method: "GET", Path: "/admin"}); d.Allowed || d.Policy != authz.PolicyName("default", "deny-admin", 0) {
		t.Fatalf("/admin: %+v", d)
	}
	if d := e.Check(&rbac.Request{Method: "GET", Path: "/public/a"}); !d.Allowed {
		t.Fatalf("/public/a: %+v", d)
	}
}
