package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
)

type getOptions struct {
	server        string
	namespace     string
	allNamespaces bool
	output        string
	watch         bool
	timeout       time.Duration
}

func newGetCmd() *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get KIND|all [NAME...]",
		Short: "Show Istio resources stored in the control plane",
		Long: `Show Istio resources, like kubectl get. KIND is a kind, its plural or short
name (virtualservice, virtualservices, vs, ...), or "all".`,
		Example: `  weft get vs
  weft get virtualservice reviews -o yaml
  weft get all -A
  weft get se -o wide`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch o.output {
			case "", "wide", "yaml", "json", "name":
			default:
				return &exitError{code: 2, err: fmt.Errorf("-o %q: want one of yaml, json, wide, name", o.output)}
			}
			return runGet(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &admin.Client{BaseURL: o.server}, o, args[0], args[1:])
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", config.DefaultNamespace, "namespace")
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list resources of every namespace")
	f.StringVarP(&o.output, "output", "o", "", "output format: yaml, json, wide or name")
	f.BoolVarP(&o.watch, "watch", "w", false, "after listing, print a row for every change until interrupted (table output)")
	f.DurationVar(&o.timeout, "timeout", requestTimeout, "how long to wait for the control plane (per request)")
	controlPlaneFlag(cmd, &o.server)
	return cmd
}

func runGet(ctx context.Context, out, errOut io.Writer, c *admin.Client, o getOptions, kindArg string, names []string) error {
	kind := ""
	if strings.ToLower(kindArg) != "all" {
		sch, err := config.ResolveKind(kindArg)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		kind = sch.Kind
	} else if len(names) > 0 {
		return &exitError{code: 2, err: errors.New(`"all" takes no resource names`)}
	}
	ns := o.namespace
	if o.allNamespaces {
		ns = ""
	}
	if o.watch && (len(names) > 0 || (o.output != "" && o.output != "wide")) {
		return &exitError{code: 2, err: errors.New("--watch lists a kind (no names) in table output (-o wide at most)")}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	var (
		items   []*config.Resource
		listRev int64
		events  <-chan admin.WatchEvent
		wErr    func() error
	)
	if o.watch {
		// The watch opens before the list: a change landing between the two
		// is then in the stream, and the rows skip what the list already
		// shows (revision <= the list's). Watching from the list's revision
		// instead would lose such a change when the store is empty (revision
		// 0 means "from now").
		wctx, wcancel := context.WithCancel(parent)
		defer wcancel()
		var err error
		if events, wErr, err = c.Watch(wctx, 0); err != nil {
			return apiError(err)
		}
	}
	if len(names) > 0 {
		if ns == "" {
			return &exitError{code: 2, err: errors.New("a resource name needs one namespace (-n), not -A")}
		}
		for _, name := range names {
			r, err := c.Get(ctx, config.Key{Kind: kind, Namespace: ns, Name: name})
			if errors.Is(err, store.ErrNotFound) {
				return &exitError{code: 1, err: fmt.Errorf("%s %q not found in namespace %q", pluralName(kind), name, ns)}
			}
			if err != nil {
				return apiError(err)
			}
			items = append(items, r)
		}
	} else {
		lr, err := c.List(ctx, kind, ns)
		if err != nil {
			return apiError(err)
		}
		items, listRev = lr.Items, lr.Revision
		for _, w := range lr.Warnings {
			fmt.Fprintln(errOut, "Warning:", w)
		}
		if kind == "" {
			// Group by kind, as kubectl get all does; the store sorts by
			// namespace and name within.
			sort.SliceStable(items, func(i, j int) bool { return items[i].Kind < items[j].Kind })
		}
	}
	single := len(names) == 1
	switch o.output {
	case "json":
		var v any = map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
		if single {
			v = items[0]
		}
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode JSON: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	case "yaml":
		b, err := config.EncodeYAML(items)
		if err != nil {
			return fmt.Errorf("encode YAML: %w", err)
		}
		_, err = out.Write(b)
		return err
	case "name":
		for _, r := range items {
			fmt.Fprintln(out, resourceName(r.Kind, r.Meta.Name))
		}
		return nil
	}
	if o.watch {
		if err := printTables(out, items, kind == "", o.allNamespaces, o.output == "wide", time.Now()); err != nil {
			return err
		}
		return watchRows(parent, out, events, wErr, kind, ns, listRev, o)
	}
	if len(items) == 0 {
		if ns == "" {
			fmt.Fprintln(errOut, "No resources found")
		} else {
			fmt.Fprintf(errOut, "No resources found in %s namespace.\n", ns)
		}
		return nil
	}
	return printTables(out, items, kind == "", o.allNamespaces, o.output == "wide", time.Now())
}

// printTables prints one table per kind, as kubectl get does.
func printTables(out io.Writer, items []*config.Resource, qualify, withNS, wide bool, now time.Time) error {
	byKind := map[string][]*config.Resource{}
	var kinds []string
	for _, r := range items {
		if _, ok := byKind[r.Kind]; !ok {
			kinds = append(kinds, r.Kind)
		}
		byKind[r.Kind] = append(byKind[r.Kind], r)
	}
	sort.Strings(kinds)
	for i, kind := range kinds {
		if i > 0 {
			fmt.Fprintln(out)
		}
		tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
		extra, _ := wideColumns(kind)
		head := []string{"NAME", "AGE"}
		if withNS {
			head = append([]string{"NAMESPACE"}, head...)
		}
		if wide {
			head = append(head, extra...)
		}
		fmt.Fprintln(tw, strings.Join(head, "\t"))
		for _, r := range byKind[kind] {
			fmt.Fprintln(tw, strings.Join(tableRow(r, qualify, withNS, wide, now), "\t"))
		}
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write table: %w", err)
		}
	}
	return nil
}

// watchRows prints a table row for every change after rev until ctx ends.
func watchRows(ctx context.Context, out io.Writer, events <-chan admin.WatchEvent, streamErr func() error, kind, ns string, rev int64, o getOptions) error {
	for ev := range events {
		r := ev.Object
		if ev.Revision <= rev || r == nil || (kind != "" && r.Kind != kind) || (ns != "" && r.Meta.Namespace != ns) {
			continue
		}
		tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, strings.Join(tableRow(r, kind == "", o.allNamespaces, o.output == "wide", time.Now()), "\t"))
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write row: %w", err)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return streamErr()
}

// tableRow is one resource's row of printTables.
func tableRow(r *config.Resource, qualify, withNS, wide bool, now time.Time) []string {
	name := r.Meta.Name
	if qualify {
		name = resourceName(r.Kind, name)
	}
	row := []string{name, age(r.Meta.CreationTimestamp, now)}
	if withNS {
		row = append([]string{r.Meta.Namespace}, row...)
	}
	if wide {
		_, cells := wideColumns(r.Kind)
		row = append(row, cells(r)...)
	}
	return row
}

// wideColumns returns the kind-specific columns of -o wide (those of
// Istio's CRD printer columns) and a function computing them.
func wideColumns(kind string) ([]string, func(*config.Resource) []string) {
	switch kind {
	case config.KindVirtualService:
		return []string{"GATEWAYS", "HOSTS"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*networking.VirtualService)
			return []string{list(s.GetGateways()), list(s.GetHosts())}
		}
	case config.KindDestinationRule:
		return []string{"HOST"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*networking.DestinationRule)
			return []string{orNone(s.GetHost())}
		}
	case config.KindGateway:
		return []string{"SERVERS"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*networking.Gateway)
			var hosts []string
			for _, sv := range s.GetServers() {
				hosts = append(hosts, fmt.Sprintf("%d/%s", sv.GetPort().GetNumber(), strings.Join(sv.GetHosts(), ",")))
			}
			return []string{list(hosts)}
		}
	case config.KindServiceEntry:
		return []string{"HOSTS", "LOCATION", "RESOLUTION"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*networking.ServiceEntry)
			return []string{list(s.GetHosts()), s.GetLocation().String(), s.GetResolution().String()}
		}
	case config.KindWorkloadEntry:
		return []string{"ADDRESS"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*networking.WorkloadEntry)
			return []string{orNone(s.GetAddress())}
		}
	case config.KindPeerAuthentication:
		return []string{"MODE"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*security.PeerAuthentication)
			mode := "UNSET"
			if s.GetMtls() != nil {
				mode = s.GetMtls().GetMode().String()
			}
			return []string{mode}
		}
	case config.KindRequestAuthentication:
		return []string{"ISSUERS"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*security.RequestAuthentication)
			var iss []string
			for _, j := range s.GetJwtRules() {
				iss = append(iss, j.GetIssuer())
			}
			return []string{list(iss)}
		}
	case config.KindAuthorizationPolicy:
		return []string{"ACTION"}, func(r *config.Resource) []string {
			s, _ := r.Spec.(*security.AuthorizationPolicy)
			return []string{s.GetAction().String()}
		}
	}
	return nil, func(*config.Resource) []string { return nil }
}

func list(xs []string) string {
	if len(xs) == 0 {
		return "<none>"
	}
	return "[" + strings.Join(xs, " ") + "]"
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func pluralName(kind string) string {
	if sch, ok := config.SchemaForKind(kind); ok {
		return sch.Plural + "." + sch.Group
	}
	return strings.ToLower(kind)
}

// age renders a duration the way kubectl does: 45s, 5m12s, 17m, 3h4m, 20h, 12d.
func age(created, now time.Time) string {
	if created.IsZero() {
		return "<unknown>"
	}
	d := now.Sub(created)
	if d < 0 {
		d = 0
	}
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 10*time.Minute:
		m := int(d.Minutes())
		if s := int(d.Seconds()) % 60; s != 0 {
			return fmt.Sprintf("%dm%ds", m, s)
		}
		return fmt.Sprintf("%dm", m)
	case d < 3*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 8*time.Hour:
		h := int(d.Hours())
		if m := int(d.Minutes()) % 60; m != 0 {
			return fmt.Sprintf("%dh%dm", h, m)
		}
		return fmt.Sprintf("%dh", h)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}
