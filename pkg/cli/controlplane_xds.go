package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/controlplane"
	xdsserver "github.com/weftmesh/weft/pkg/xds/server"
)

// newXDSExtension adds the xDS server's flags to the control-plane command
// and returns the extension that runs it (reading the flags at start-up).
func newXDSExtension(cmd *cobra.Command, caf *caFlags) controlplane.Extension {
	o := &xdsserver.ExtensionOptions{}
	cmd.Flags().DurationVar(&o.Debounce, "debounce", 100*time.Millisecond, "quiet time after a config or registry change before pushing to proxies")
	return controlplane.ExtensionFunc(func(ctx context.Context, env *controlplane.Env) error {
		o.MTLS = caf.enabled()
		return xdsserver.Extension(*o).Setup(ctx, env)
	})
}
