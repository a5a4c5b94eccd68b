package server

import (
	"fmt"
	"sync"

	meshv1 "istio.io/api/mesh/v1alpha1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate"
)

// TranslateGenerator is the production Generator: it snapshots reg once per
// push and builds each proxy's resources with translate.Build.
func TranslateGenerator(reg *registry.Registry) Generator {
	return translateGenerator(reg, false, meshconfig.Default())
}

// translateGenerator is TranslateGenerator with mutual TLS on or off (see
// translate.Input.MTLS). Within one push, proxies of the same class (equal
// in every field but the node ID, which translate.Build does not read) are
// built once and share the output, so the server hashes and marshals it
// once too.
func translateGenerator(reg *registry.Registry, mtls bool, mesh *meshv1.MeshConfig) Generator {
	return func(configs []*config.Resource) func(*model.Proxy) (*Resources, error) {
		in := &translate.Input{Configs: configs, Registry: reg.Snapshot(), MTLS: mtls,
			Mesh: mesh, RootNamespace: meshconfig.RootNamespace(mesh)}
		var classes sync.Map // classKey -> *classBuild
		return func(p *model.Proxy) (*Resources, error) {
			v, _ := classes.LoadOrStore(classKey(p), &classBuild{})
			c := v.(*classBuild)
			c.once.Do(func() {
				out, err := translate.Build(in, p)
				if err != nil {
					c.err = err
					return
				}
				c.res = &Resources{Listeners: out.Listeners, Routes: out.Routes, Clusters: out.Clusters, Endpoints: out.Endpoints}
			})
			if c.err != nil {
				return nil, fmt.Errorf("translate for %s: %w", p.ID, c.err)
			}
			return c.res, nil
		}
	}
}

type classBuild struct {
	once sync.Once
	res  *Resources
	err  error
}

// classKey identifies the proxies translate.Build gives equal output: every
// field but the ID (fmt prints maps in key order).
func classKey(p *model.Proxy) string {
	q := *p
	q.ID = ""
	return fmt.Sprintf("%#v", q)
}

var _ Registry = (*registry.Registry)(nil)
