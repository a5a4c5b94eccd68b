package server

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	meshv1 "istio.io/api/mesh/v1alpha1"
	securityv1beta1 "istio.io/api/security/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/credentials"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/registry"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate"
	"github.com/weftmesh/weft/pkg/xds/translate/envoyfilter"
)

// TranslateGenerator is the production Generator: it snapshots reg once per
// push and builds each proxy's resources with translate.Build.
func TranslateGenerator(reg *registry.Registry) Generator {
	return translateGenerator(reg, false, meshconfig.Default(), nil, nil)
}

// translateGenerator is TranslateGenerator with mutual TLS on or off (see
// translate.Input.MTLS). Within one push, proxies of the same class (equal
// in every field translate.Build reads, see classKey) are built once and
// share the output, so the server hashes and marshals it once too.
//
// A push whose inputs equal the previous push's (the same config objects
// and a registry snapshot with the same content, e.g. after a proxy that
// adds no endpoint connected) reuses the previous push's builder: known
// classes get their previous output, which the server recognizes as
// unchanged without hashing it, so such pushes cost almost nothing.
//
// creds (nil: none) resolves gateway credentialNames; a change of its
// Version is a changed input too.
func translateGenerator(reg *registry.Registry, mtls bool, mesh *meshv1.MeshConfig, creds credentials.Source, jwks JWKSSource) Generator {
	var last struct {
		sync.Mutex
		configs  []*config.Resource
		snap     *registry.Snapshot
		regSum   [32]byte
		credsVer uint64
		jwksVer  uint64
		build    func(*model.Proxy) (*Resources, error)
		// cache is the last push's translate.Cache, whose clusters and
		// load assignments the next push reuses when only
		// VirtualServices changed (translate.NewCacheFrom).
		cache *translate.Cache
	}
	var lookup func(ns, name string) (translate.Credential, bool)
	if creds != nil {
		lookup = creds.Lookup
	}
	return func(configs []*config.Resource) func(*model.Proxy) (*Resources, error) {
		snap := reg.Snapshot()
		var credsVer, jwksVer uint64
		if creds != nil {
			credsVer = creds.Version()
		}
		var jwksURI func(string) (string, bool)
		if jwks != nil {
			jwksVer, jwksURI = jwks.Version(), jwks.Lookup
		}
		last.Lock()
		defer last.Unlock()
		// The registry hands out the same snapshot until it changes: only
		// a new one needs hashing.
		sum, sumOK := last.regSum, last.snap != nil && snap == last.snap
		if !sumOK {
			sum, sumOK = registrySum(snap)
		}
		if sumOK && last.build != nil && sum == last.regSum && credsVer == last.credsVer && jwksVer == last.jwksVer && slices.Equal(configs, last.configs) {
			return last.build
		}
		if !slices.Equal(configs, last.configs) {
			retainIssuers(jwks, configs)
		}
		var prev *translate.Cache
		if snap == last.snap && credsVer == last.credsVer && jwksVer == last.jwksVer {
			// The same registry snapshot, credentials and JWKS: the cache
			// reuses what configs other than VirtualServices decide.
			prev = last.cache
		}
		build, cache := newTranslateBuild(&translate.Input{Configs: configs, Registry: snap, MTLS: mtls,
			Mesh: mesh, RootNamespace: meshconfig.RootNamespace(mesh), Credentials: lookup, JWKSURI: jwksURI}, prev)
		last.configs, last.regSum, last.credsVer, last.jwksVer, last.build, last.snap, last.cache = configs, sum, credsVer, jwksVer, nil, nil, cache
		if sumOK {
			last.snap, last.build = snap, build
		}
		return build
	}
}

// retainIssuers lets a JWKS source that resolves issuers in the background
// (oidc.Resolver) forget those no RequestAuthentication jwtRule needs any
// more (rules without jwks and jwksUri are the ones it resolves).
func retainIssuers(jwks JWKSSource, configs []*config.Resource) {
	r, ok := jwks.(interface{ Retain(func(string) bool) })
	if !ok {
		return
	}
	need := map[string]bool{}
	for _, c := range configs {
		if ra, ok := c.Spec.(*securityv1beta1.RequestAuthentication); ok {
			for _, rule := range ra.GetJwtRules() {
				if rule.GetJwks() == "" && rule.GetJwksUri() == "" {
					need[rule.GetIssuer()] = true
				}
			}
		}
	}
	r.Retain(func(issuer string) bool { return need[issuer] })
}

// registrySum hashes a registry snapshot's content (all but its version);
// ok is false when it cannot be encoded.
func registrySum(snap *registry.Snapshot) (sum [32]byte, ok bool) {
	if snap == nil {
		return sum, true
	}
	c := *snap
	c.Version = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return sum, false
	}
	return sha256.Sum256(b), true
}

// newTranslateBuild returns the builder of one push: one translation per
// proxy class, through a translate.Cache, so classes that differ only in
// their inbound side (the deployments of a namespace) share one outbound
// translation: the same cluster, endpoint and route objects, hashed and
// encoded once. prev (may be nil) is the previous push's cache, made from
// the same registry snapshot, credentials and JWKS (see
// translate.NewCacheFrom); the new cache is returned for the next push.
func newTranslateBuild(in *translate.Input, prev *translate.Cache) (func(*model.Proxy) (*Resources, error), *translate.Cache) {
	var classes sync.Map // classKey -> *classBuild
	backs := workloadServices(in.Registry)
	// EnvoyFilter proxy matches read node metadata: proxies that differ
	// in those fields are different classes.
	efKeys := envoyfilter.MetadataKeys(in.Configs)
	cache := translate.NewCacheFrom(prev, in)
	return func(p *model.Proxy) (*Resources, error) {
		key := classKey(p, backs)
		for _, k := range efKeys {
			key += fmt.Sprintf("\x00%q=%q", k, p.Metadata[k])
		}
		v, _ := classes.LoadOrStore(key, &classBuild{})
		c := v.(*classBuild)
		c.once.Do(func() {
			out, err := cache.Build(p)
			if err != nil {
				c.err = err
				return
			}
			c.res = &Resources{Listeners: out.Listeners, Routes: out.Routes, Clusters: out.Clusters, Endpoints: out.Endpoints,
				Warnings: out.Warnings}
		})
		if c.err != nil {
			return nil, fmt.Errorf("translate for %s: %w", p.ID, c.err)
		}
		return c.res, nil
	}, cache
}

type classBuild struct {
	once sync.Once
	res  *Resources
	err  error
}

// classKey identifies the proxies translate.Build gives equal output. Build
// reads a proxy's type, namespace, labels, LOCALITY metadata and app ports,
// and its workload name only to find the services (of its namespace) the
// workload is an endpoint of; backs lists those per namespace/workload. The
// node ID, IP, pod and service account names and other metadata do not
// change the output, so the pods of one deployment share one build.
// TestClassKeyFieldsDoNotChangeOutput checks this against the translator.
func classKey(p *model.Proxy, backs map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\x00%s\x00", p.Type, p.Namespace)
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%q=%q,", k, p.Labels[k])
	}
	fmt.Fprintf(&b, "\x00%q\x00%v\x00", p.Metadata["LOCALITY"], p.AppPorts)
	if p.Workload != "" {
		b.WriteString(backs[p.Namespace+"/"+p.Workload])
	}
	return b.String()
}

// workloadServices maps namespace/workload to the services of that
// namespace the workload is an endpoint of (the inbound ports translation
// gives its proxy), as one string.
func workloadServices(reg *registry.Snapshot) map[string]string {
	out := map[string]string{}
	if reg == nil {
		return out
	}
	for _, svc := range reg.Services {
		seen := map[string]bool{}
		for _, e := range reg.EndpointsOf(svc.Hostname) {
			if e.Workload == "" || e.Namespace != svc.Namespace || seen[e.Workload] {
				continue
			}
			seen[e.Workload] = true
			k := e.Namespace + "/" + e.Workload
			out[k] += fmt.Sprintf("%q,", svc.Hostname)
		}
	}
	return out
}

var _ Registry = (*registry.Registry)(nil)
