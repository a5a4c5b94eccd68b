package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/controlplane"
	"github.com/weftmesh/weft/pkg/tracecollector"
)

// newTracingExtension adds the built-in Zipkin-compatible collector
// (--zipkin-address): proxies export to it, and its read API is also served
// by the admin API (/api/v1/traces).
func newTracingExtension(cmd *cobra.Command) controlplane.Extension {
	var addr string
	var capacity int
	cmd.Flags().StringVar(&addr, "zipkin-address", "", "serve a built-in Zipkin-compatible trace collector (POST /api/v2/spans) on this address, e.g. 127.0.0.1:9411 (empty disables)")
	cmd.Flags().IntVar(&capacity, "trace-spans", 20000, "spans the built-in collector keeps in memory")
	return controlplane.ExtensionFunc(func(ctx context.Context, env *controlplane.Env) error {
		if addr == "" {
			return nil
		}
		c := tracecollector.New(capacity)
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("trace collector: listen %s: %w", addr, err)
		}
		log := env.Logger.With("component", "trace-collector")
		log.Info("trace collector listening", "url", "http://"+lis.Addr().String()+"/api/v2/spans")
		h := c.Handler()
		for _, p := range []string{"GET /api/v1/traces", "GET /api/v1/traces/{id}"} {
			env.Admin.Handle(p, h)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		env.Go("trace collector", func(ctx context.Context) error {
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		return nil
	})
}
