package server

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/weftmesh/weft/pkg/controlplane"
	"github.com/weftmesh/weft/pkg/credentials"
	"github.com/weftmesh/weft/pkg/oidc"
	"github.com/weftmesh/weft/pkg/registry"
)

// ExtensionOptions configure the control-plane extension.
type ExtensionOptions struct {
	// Debounce is the quiet time before a push (default 100ms).
	Debounce time.Duration
	// MTLS turns on mutual TLS in the translation (translate.Input.MTLS):
	// set when the control plane runs the workload CA.
	MTLS bool
	// Registry, when set, is the registry the server uses (so that other
	// extensions, such as the Kubernetes source, can feed it); nil makes a
	// new one.
	Registry *registry.Registry
	// Credentials resolves gateway TLS credentialNames
	// (translate.Input.Credentials); nil means none are known. Its changes
	// trigger a push.
	Credentials credentials.Source
	// JWKS resolves JWT issuers' jwks_uri by OpenID discovery
	// (translate.Input.JWKSURI); nil makes a pkg/oidc Resolver. Its changes
	// trigger a push.
	JWKS JWKSSource
}

// JWKSSource resolves an issuer's jwks_uri without blocking (see
// oidc.Resolver).
type JWKSSource interface {
	Lookup(issuer string) (string, bool)
	Version() uint64
	Subscribe(fn func()) (cancel func())
}

// Extension runs the registry and the ADS server inside `weft control-plane`:
// xDS on Options.XDSAddress, /metrics on Options.MonitoringAddress, and the
// proxy-status / proxy-config routes on the admin API. It logs the bound
// addresses ("xDS server listening" address=HOST:PORT), so port 0 works.
func Extension(o ExtensionOptions) controlplane.Extension {
	return controlplane.ExtensionFunc(func(_ context.Context, env *controlplane.Env) error {
		log := env.Logger.With("component", "xds")
		reg := o.Registry
		if reg == nil {
			reg = registry.New(env.Logger.With("component", "registry"))
		}
		jwks := o.JWKS
		var stopOIDC context.CancelFunc = func() {}
		if jwks == nil {
			var octx context.Context
			octx, stopOIDC = context.WithCancel(context.Background())
			jwks = oidc.New(octx, oidc.Options{Logger: env.Logger.With("component", "oidc")})
		}
		srv, err := New(Options{Store: env.Store, Registry: reg, Generate: translateGenerator(reg, o.MTLS, env.Options.Mesh, o.Credentials, jwks), Logger: log, Debounce: o.Debounce})
		if err != nil {
			stopOIDC()
			return err
		}
		cancels := []func(){stopOIDC, jwks.Subscribe(srv.kick)}
		if o.Credentials != nil {
			cancels = append(cancels, o.Credentials.Subscribe(srv.kick))
		}
		env.Go("credential and jwks changes", func(ctx context.Context) error {
			<-ctx.Done()
			for _, cancel := range cancels {
				cancel()
			}
			return nil
		})
		lis, err := net.Listen("tcp", env.Options.XDSAddress)
		if err != nil {
			return fmt.Errorf("xDS: listen: %w", err)
		}
		mlis, err := net.Listen("tcp", env.Options.MonitoringAddress)
		if err != nil {
			lis.Close()
			return fmt.Errorf("monitoring: listen: %w", err)
		}
		srv.RegisterHTTP(env.Admin.Mux())
		log.Info("xDS server listening", "address", lis.Addr().String())
		log.Info("monitoring listening", "address", mlis.Addr().String(), "url", "http://"+mlis.Addr().String()+"/metrics")
		env.Go("xds push loop", srv.Run)
		env.Go("xds server", func(ctx context.Context) error { return srv.Serve(ctx, lis) })
		env.Go("monitoring", func(ctx context.Context) error { return srv.ServeMonitoring(ctx, mlis) })
		return nil
	})
}
