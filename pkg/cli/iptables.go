package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/iptables"
)

func newIptablesCmd() *cobra.Command {
	c := iptables.Defaults()
	var (
		dryRun, cleanup                     bool
		excludeIn, excludeOut, excludeCIDRs string
		uid, gid                            uint32
		inPort, outPort                     uint16
	)
	cmd := &cobra.Command{
		Use:   "iptables",
		Short: "Install Istio-compatible traffic capture rules in this network namespace",
		Long: `Writes the nat-table chains ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_IN_REDIRECT and
ISTIO_OUTPUT so that inbound TCP goes to the proxy's inbound port and outbound TCP
to its outbound port, leaving the proxy's own uid/gid alone. Needs root (or
NET_ADMIN) unless --dry-run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c.ProxyUID, c.ProxyGID = uid, gid
			c.InboundCapturePort, c.OutboundCapturePort = inPort, outPort
			var err error
			if c.ExcludeInboundPorts, err = iptables.ParsePorts(excludeIn); err != nil {
				return fmt.Errorf("--exclude-inbound-ports: %w", err)
			}
			if c.ExcludeOutboundPorts, err = iptables.ParsePorts(excludeOut); err != nil {
				return fmt.Errorf("--exclude-outbound-ports: %w", err)
			}
			if c.ExcludeOutboundIPRanges, err = iptables.ParseCIDRs(excludeCIDRs); err != nil {
				return fmt.Errorf("--exclude-outbound-ip-ranges: %w", err)
			}
			if cleanup {
				return iptables.Cleanup(cmd.Context())
			}
			if dryRun {
				rules, err := iptables.Render(c)
				if err != nil {
					return err
				}
				_, err = fmt.Fprint(cmd.OutOrStdout(), rules)
				return err
			}
			return iptables.Apply(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&dryRun, "dry-run", false, "print the iptables-restore rules instead of applying them")
	f.BoolVar(&cleanup, "cleanup", false, "remove the rules installed earlier")
	f.Uint32Var(&uid, "proxy-uid", c.ProxyUID, "uid of the proxy process, whose traffic is not captured")
	f.Uint32Var(&gid, "proxy-gid", c.ProxyGID, "gid of the proxy process, whose traffic is not captured")
	f.Uint16Var(&inPort, "inbound-capture-port", c.InboundCapturePort, "port inbound traffic is redirected to")
	f.Uint16Var(&outPort, "outbound-capture-port", c.OutboundCapturePort, "port outbound traffic is redirected to")
	f.StringVar(&c.InboundPorts, "inbound-ports", c.InboundPorts, `inbound ports to capture: "*" for all, "" for none, or a comma list`)
	f.StringVar(&excludeIn, "exclude-inbound-ports", "", "comma list of inbound ports never captured")
	f.StringVar(&c.OutboundIPRanges, "outbound-ip-ranges", c.OutboundIPRanges, `outbound CIDRs to capture: "*" for all, "" for none, or a comma list`)
	f.StringVar(&excludeCIDRs, "exclude-outbound-ip-ranges", "", "comma list of outbound CIDRs never captured")
	f.StringVar(&excludeOut, "exclude-outbound-ports", "", "comma list of outbound ports never captured")
	return cmd
}
