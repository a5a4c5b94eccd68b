package server

import (
	"fmt"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate"
)

// TranslateGenerator is the production Generator: it snapshots reg once per
// push and builds each proxy's resources with translate.Build.
func TranslateGenerator(reg *registry.Registry) Generator { return translateGenerator(reg, false) }

// translateGenerator is TranslateGenerator with mutual TLS on or off (see
// translate.Input.MTLS).
func translateGenerator(reg *registry.Registry, mtls bool) Generator {
	return func(configs []*config.Resource) func(*model.Proxy) (*Resources, error) {
		in := &translate.Input{Configs: configs, Registry: reg.Snapshot(), MTLS: mtls}
		return func(p *model.Proxy) (*Resources, error) {
			out, err := translate.Build(in, p)
			if err != nil {
				return nil, fmt.Errorf("translate for %s: %w", p.ID, err)
			}
			return &Resources{Listeners: out.Listeners, Routes: out.Routes, Clusters: out.Clusters, Endpoints: out.Endpoints}, nil
		}
	}
}

var _ Registry = (*registry.Registry)(nil)
