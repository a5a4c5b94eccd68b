package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// xdsProxyStatus mirrors pkg/xds/server.ProxyStatus (JSON of GET /api/v1/proxies).
type xdsProxyStatus struct {
	ID        string    `json:"id"`
	Connected bool      `json:"connected"`
	Version   string    `json:"version"`
	LastPush  time.Time `json:"lastPush"`
	Error     string    `json:"error"`
	Warnings  []string  `json:"warnings"`
	Types     map[string]struct {
		State   string `json:"state"`
		Version string `json:"version"`
		Error   string `json:"error"`
	} `json:"types"`
}

// controlPlaneFlag adds --server (default $WEFT_SERVER or http://127.0.0.1:8080).
func controlPlaneFlag(cmd *cobra.Command, server *string) {
	def := os.Getenv("WEFT_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	cmd.Flags().StringVar(server, "server", def, "control plane admin API URL (env WEFT_SERVER)")
}

// controlPlaneGet GETs path from the admin API and decodes its JSON into v.
func controlPlaneGet(ctx context.Context, server, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimRight(server, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("query control plane at %s: %w", server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("control plane: %s", e.Error)
		}
		return fmt.Errorf("control plane: GET %s: %s", path, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s: %w", u, err)
	}
	return nil
}

func newProxyStatusCmd() *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "proxy-status",
		Short: "Show each connected proxy's xDS sync state (SYNCED, NOT SENT, STALE, NACKED)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ps []xdsProxyStatus
			if err := controlPlaneGet(cmd.Context(), server, "/api/v1/proxies", &ps); err != nil {
				return err
			}
			return writeProxyStatus(cmd.OutOrStdout(), ps, time.Now())
		},
	}
	controlPlaneFlag(cmd, &server)
	return cmd
}

func writeProxyStatus(w io.Writer, ps []xdsProxyStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCDS\tLDS\tEDS\tRDS\tVERSION\tLAST PUSH\tWARN")
	for _, p := range ps {
		cols := []string{p.ID}
		for _, t := range []string{"CDS", "LDS", "EDS", "RDS"} {
			st := p.Types[t]
			s := st.State
			if s == "" {
				s = "NOT SENT"
			}
			if st.Error != "" {
				s += " (" + st.Error + ")"
			}
			cols = append(cols, s)
		}
		v := p.Version
		if p.Error != "" {
			v += " (error: " + p.Error + ")"
		}
		if !p.Connected {
			v += " (disconnected)"
		}
		last := "-"
		if !p.LastPush.IsZero() {
			last = now.Sub(p.LastPush).Round(time.Second).String() + " ago"
		}
		warn := "-"
		if len(p.Warnings) > 0 {
			warn = fmt.Sprint(len(p.Warnings))
		}
		cols = append(cols, v, last, warn)
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Each warning on a line of its own: EnvoyFilter patches skipped, or
	// not executed by weft proxy.
	for _, p := range ps {
		for _, wn := range p.Warnings {
			fmt.Fprintf(w, "WARN %s: %s\n", p.ID, wn)
		}
	}
	return nil
}
