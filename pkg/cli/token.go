package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/ca"
	"github.com/weftmesh/weft/pkg/controlplane"
)

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage workload join tokens for the embedded CA",
	}
	cmd.AddCommand(newTokenCreateCmd())
	return cmd
}

func newTokenCreateCmd() *cobra.Command {
	var (
		ns, sa, dataDir string
		ttl             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --namespace NS --service-account SA",
		Short: "Create a join token that lets a proxy obtain certificates for NS/SA",
		Long: `Create a join token for one service account. A proxy presents it to the
control plane's CA (port 15012, "authorization: Bearer <token>") and receives
certificates for spiffe://<trust-domain>/ns/NS/sa/SA only. Only the token's
SHA-256 hash is stored, in <data-dir>/ca/tokens.json; the running control
plane picks new tokens up without a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			store, err := ca.NewTokenStore(dataDir, nil)
			if err != nil {
				return err
			}
			tok, err := store.Create(ns, sa, ttl)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&ns, "namespace", "n", "default", "namespace of the workload identity")
	f.StringVar(&sa, "service-account", "", "service account of the workload identity (required)")
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is accepted (0 = no expiry)")
	f.StringVar(&dataDir, "data-dir", controlplane.DefaultDataDir(), "the control plane's data directory")
	_ = cmd.MarkFlagRequired("service-account")
	return cmd
}
