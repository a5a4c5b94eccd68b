package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newProxyConfigCmd() *cobra.Command {
	var server, output string
	cmd := &cobra.Command{
		Use:       "proxy-config {listeners|routes|clusters|endpoints} NODE",
		Short:     "Show the Envoy configuration the control plane generated for a proxy",
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"listeners", "routes", "clusters", "endpoints"},
		RunE: func(cmd *cobra.Command, args []string) error {
			typ := strings.ToLower(args[0])
			switch typ {
			case "listener", "route", "cluster", "endpoint":
				typ += "s"
			case "listeners", "routes", "clusters", "endpoints":
			default:
				return fmt.Errorf("unknown config type %q: want listeners, routes, clusters or endpoints", args[0])
			}
			if output != "" && output != "json" {
				return fmt.Errorf("unknown output format %q: want json", output)
			}
			var pc struct {
				Version   string            `json:"version"`
				Resources []json.RawMessage `json:"resources"`
			}
			path := "/api/v1/proxies/" + url.PathEscape(args[1]) + "/config?type=" + typ
			if err := controlPlaneGet(cmd.Context(), server, path, &pc); err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(pc.Resources)
			}
			return writeProxyConfig(cmd.OutOrStdout(), typ, pc.Resources)
		},
	}
	controlPlaneFlag(cmd, &server)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: a summary table)")
	return cmd
}

// writeProxyConfig prints one summary line per resource.
func writeProxyConfig(w io.Writer, typ string, rs []json.RawMessage) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	switch typ {
	case "listeners":
		fmt.Fprintln(tw, "NAME\tADDRESS\tKIND")
	case "routes":
		fmt.Fprintln(tw, "NAME\tVIRTUAL HOSTS\tDOMAINS")
	case "clusters":
		fmt.Fprintln(tw, "NAME\tTYPE\tLB")
	case "endpoints":
		fmt.Fprintln(tw, "CLUSTER\tENDPOINTS")
	}
	for _, raw := range rs {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("decode resource: %w", err)
		}
		var cols []string
		switch typ {
		case "listeners":
			kind := "filter chains"
			if _, ok := m["apiListener"]; ok {
				kind = "api_listener"
			}
			sa := dig(m, "address", "socketAddress")
			addr := "-"
			if sm, ok := sa.(map[string]any); ok {
				addr = fmt.Sprintf("%v:%v", sm["address"], sm["portValue"])
			}
			cols = []string{str(m["name"]), addr, kind}
		case "routes":
			vhs, _ := m["virtualHosts"].([]any)
			var domains []string
			for _, vh := range vhs {
				if ds, ok := dig(vh, "domains").([]any); ok {
					for _, d := range ds {
						domains = append(domains, str(d))
					}
				}
			}
			cols = []string{str(m["name"]), fmt.Sprint(len(vhs)), strings.Join(domains, ",")}
		case "clusters":
			t := str(m["type"]) // protojson omits the zero value, STATIC
			switch {
			case t != "":
			case m["clusterType"] != nil:
				t = str(dig(m, "clusterType", "name"))
			default:
				t = "STATIC"
			}
			lb := str(m["lbPolicy"])
			if lb == "" {
				lb = "ROUND_ROBIN"
			}
			cols = []string{str(m["name"]), t, lb}
		case "endpoints":
			var eps []string
			locs, _ := m["endpoints"].([]any)
			for _, l := range locs {
				lbs, _ := dig(l, "lbEndpoints").([]any)
				for _, e := range lbs {
					if sa, ok := dig(e, "endpoint", "address", "socketAddress").(map[string]any); ok {
						eps = append(eps, fmt.Sprintf("%v:%v", sa["address"], sa["portValue"]))
					}
				}
			}
			cols = []string{str(m["clusterName"]), strings.Join(eps, ",")}
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	return tw.Flush()
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}
