package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"

	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	rbacnet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/validation"
	"github.com/weftmesh/weft/pkg/meshconfig"
	"github.com/weftmesh/weft/pkg/proxy/filter/pathnorm"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
	"github.com/weftmesh/weft/pkg/xds/model"
	"github.com/weftmesh/weft/pkg/xds/translate/authz"
)

func newAuthzCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "authz",
		Short: "Inspect AuthorizationPolicy decisions offline",
	}
	cmd.AddCommand(newAuthzCheckCmd())
	return cmd
}

func newAuthzCheckCmd() *cobra.Command {
	var (
		files                          []string
		toLabels, headers, claims      []string
		toNS, from, method, path, host string
		reqPrincipal, srcIP, remoteIP  string
		destIP, sni, root, norm        string
		meshFile, extAuthzResult       string
		port                           uint32
		tcp                            bool
	)
	cmd := &cobra.Command{
		Use:   "check -f POLICIES.yaml --to-labels app=x --to-namespace NS [request flags]",
		Short: "Evaluate AuthorizationPolicies for one request and explain the decision",
		Long: `Loads AuthorizationPolicies, translates those that apply to the destination
workload (namespace and labels) into Envoy RBAC exactly as the control plane
does, normalizes the path as the sidecar does, and evaluates the request with
the sidecar's RBAC engine. Prints which policy and rule allowed or denied it.

CUSTOM policies (ext_authz) need the mesh config's extensionProviders
(--mesh-config, as given to weft control-plane): a request their rules match
is sent to the provider, whose answer --ext-authz-result assumes (allow by
default; the rest of the evaluation follows an allow). Without a usable
provider their rules deny, as on the sidecar.

--tcp evaluates an opaque TCP connection instead (the network RBAC filter of
the destination's TCP ports): only principals, namespaces, IPs, ports and
SNI count; rules with HTTP-only fields are dropped from ALLOW policies and
those fields ignored in DENY policies (the warnings say which).

Exits 0 when allowed, 2 when denied (or rejected as an invalid path), 1 on
input errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if len(files) == 0 {
				return fmt.Errorf("authz check: give at least one -f FILE, -f DIR or -f -")
			}
			rs, problems := validation.ReadSources(files, cmd.InOrStdin())
			if err := printProblems(cmd.ErrOrStderr(), problems); err != nil {
				return err
			}
			if n := len(problems.Errors()); n > 0 {
				return fmt.Errorf("authz check: %s in input", plural(n, "error"))
			}
			labels, err := keyValues("--to-labels", toLabels)
			if err != nil {
				return err
			}
			proxy := &model.Proxy{Type: model.Sidecar, Namespace: toNS, Labels: map[string]string{}}
			for k, v := range labels {
				proxy.Labels[k] = v[len(v)-1]
			}
			mesh, err := meshconfig.Load(meshFile)
			if err != nil {
				return fmt.Errorf("authz check: --mesh-config: %w", err)
			}
			if extAuthzResult != "allow" && extAuthzResult != "deny" {
				return fmt.Errorf("authz check: --ext-authz-result %q: want allow or deny", extAuthzResult)
			}
			if from != "" && !strings.HasPrefix(from, "spiffe://") {
				from = "spiffe://" + from
			}
			if tcp {
				return checkTCP(cmd, rs, proxy, authz.Options{RootNamespace: root, Mesh: mesh}, from, srcIP, destIP, sni, port, extAuthzResult)
			}
			pol, err := authz.TranslateWith(rs, proxy, authz.Options{RootNamespace: root, Mesh: mesh})
			if err != nil {
				return fmt.Errorf("authz check: %w", err)
			}
			for _, w := range pol.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			eng, err := rbac.New(pol.Configs()...)
			if err != nil {
				return fmt.Errorf("authz check: %w", err)
			}
			mode, err := pathnorm.ParseMode(norm)
			if err != nil {
				return fmt.Errorf("authz check: --path-normalization: %w", err)
			}
			np, err := pathnorm.Normalize(path, mode)
			if err != nil {
				fmt.Fprintf(out, "REJECTED (400): %v\n", err)
				return &exitError{code: 2, err: fmt.Errorf("request rejected")}
			}
			p, q, _ := strings.Cut(np, "?")
			req := &rbac.Request{Method: strings.ToUpper(method), Host: host, Path: p, RawQuery: q, Header: http.Header{},
				RequestPrincipal: reqPrincipal, DestPort: port, SNI: sni}
			req.Principal = from
			hv, err := keyValues("--header", headers)
			if err != nil {
				return err
			}
			for k, vs := range hv {
				for _, v := range vs {
					req.Header.Add(k, v)
				}
			}
			if req.Claims, err = keyValues("--jwt-claims", claims); err != nil {
				return err
			}
			for _, a := range []struct {
				flag, val string
				dst       *netip.Addr
			}{{"--source-ip", srcIP, &req.SourceIP}, {"--remote-ip", remoteIP, &req.RemoteIP}, {"--destination-ip", destIP, &req.DestIP}} {
				if a.val == "" {
					continue
				}
				ip, err := netip.ParseAddr(a.val)
				if err != nil {
					return fmt.Errorf("authz check: %s: %w", a.flag, err)
				}
				*a.dst = ip
			}
			if !req.RemoteIP.IsValid() {
				req.RemoteIP = req.SourceIP
			}
			if np != path {
				fmt.Fprintf(out, "path %q normalized (%s) to %q\n", path, mode, np)
			}
			fmt.Fprintf(out, "policies for %s (labels %v): %d CUSTOM, %d DENY, %d ALLOW, %d AUDIT rules\n", toNS, proxy.Labels,
				count(pol.Custom), count(pol.Deny), count(pol.Allow), count(pol.Audit))
			d := eng.Check(req)
			for _, a := range d.Audited {
				fmt.Fprintf(out, "audited by %s\n", explain(a))
			}
			for _, m := range d.Shadow { // CUSTOM: the request goes to the ext_authz provider
				if !strings.HasPrefix(m.Policy, authz.ExtAuthzPrefix) {
					continue
				}
				fmt.Fprintf(out, "CUSTOM: %s sends the request to ext_authz provider %q (%s)\n", explain(m.Policy), pol.Provider, extAuthzTarget(pol))
				if extAuthzResult == "deny" {
					fmt.Fprintf(out, "DENIED by ext_authz provider %q (--ext-authz-result deny; its status and body reach the client)\n", pol.Provider)
					return &exitError{code: 2, err: fmt.Errorf("denied by ext_authz")}
				}
				fmt.Fprintf(out, "assuming provider %q allows (--ext-authz-result allow)\n", pol.Provider)
			}
			if pol.Custom != nil && len(d.Shadow) == 0 && pol.ExtAuthz != nil {
				fmt.Fprintf(out, "CUSTOM: no rule matches; ext_authz provider %q is not asked\n", pol.Provider)
			}
			printVerdict(out, d, pol.Provider, "ALLOWED", "DENIED")
			if !d.Allowed {
				return &exitError{code: 2, err: fmt.Errorf("%s", rbac.DeniedBody)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, `policy file, directory or "-"; repeatable`)
	f.StringSliceVar(&toLabels, "to-labels", nil, "destination workload labels k=v[,k=v]")
	f.StringVar(&toNS, "to-namespace", "default", "destination workload namespace")
	f.StringVar(&from, "from-principal", "", "peer identity, e.g. spiffe://cluster.local/ns/a/sa/b (empty: plaintext)")
	f.StringVar(&method, "method", "GET", "HTTP method")
	f.StringVar(&path, "path", "/", "request path (with optional ?query), normalized as the sidecar does")
	f.StringVar(&host, "host", "", "Host (:authority)")
	f.Uint32Var(&port, "port", 0, "destination port")
	f.StringArrayVar(&headers, "header", nil, "request header k=v; repeatable")
	f.StringArrayVar(&claims, "jwt-claims", nil, "JWT claim k=v (nested a.b=v); repeatable, repeated keys form a list")
	f.StringVar(&reqPrincipal, "jwt-principal", "", "JWT request principal iss/sub")
	f.StringVar(&srcIP, "source-ip", "", "downstream peer IP")
	f.StringVar(&remoteIP, "remote-ip", "", "original client IP (default: --source-ip)")
	f.StringVar(&destIP, "destination-ip", "", "destination IP")
	f.StringVar(&sni, "sni", "", "TLS SNI")
	f.StringVar(&root, "root-namespace", "", "mesh root namespace (default weft-system; istio-system is always a root)")
	f.StringVar(&norm, "path-normalization", "BASE", "NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES")
	f.StringVar(&meshFile, "mesh-config", "", "MeshConfig file with the extensionProviders CUSTOM policies name (as for weft control-plane)")
	f.StringVar(&extAuthzResult, "ext-authz-result", "allow", "what the CUSTOM policy's ext_authz provider answers: allow or deny")
	f.BoolVar(&tcp, "tcp", false, "evaluate an opaque TCP connection (network RBAC) instead of an HTTP request")
	return cmd
}

func keyValues(flag string, in []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		out[k] = append(out[k], v)
	}
	return out, nil
}

func count(c *rbachttp.RBAC) int {
	return len(c.GetRules().GetPolicies()) + len(c.GetShadowRules().GetPolicies())
}

// extAuthzTarget describes where the ext_authz filter sends checks.
func extAuthzTarget(pol *authz.Policies) string {
	if c := pol.ExtAuthz.GetHttpService().GetServerUri().GetCluster(); c != "" {
		return "HTTP, cluster " + c
	}
	return "gRPC, cluster " + pol.ExtAuthz.GetGrpcService().GetEnvoyGrpc().GetClusterName()
}

// checkTCP evaluates an opaque TCP connection against the network RBAC
// filters the destination's TCP chains get.
func checkTCP(cmd *cobra.Command, rs []*config.Resource, proxy *model.Proxy, o authz.Options, from, srcIP, destIP, sni string, port uint32, extAuthzResult string) error {
	out := cmd.OutOrStdout()
	pol, err := authz.TranslateTCP(rs, proxy, o)
	if err != nil {
		return fmt.Errorf("authz check: %w", err)
	}
	for _, w := range pol.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
	}
	var cfgs []*rbachttp.RBAC
	for _, c := range []*rbacnet.RBAC{pol.Audit, pol.Custom, pol.Deny, pol.Allow} {
		if c != nil {
			cfgs = append(cfgs, &rbachttp.RBAC{Rules: c.GetRules(), ShadowRules: c.GetShadowRules(), ShadowRulesStatPrefix: c.GetShadowRulesStatPrefix()})
		}
	}
	eng, err := rbac.New(cfgs...)
	if err != nil {
		return fmt.Errorf("authz check: %w", err)
	}
	req := &rbac.Request{Principal: from, DestPort: port, SNI: sni}
	for _, a := range []struct {
		flag, val string
		dst       *netip.Addr
	}{{"--source-ip", srcIP, &req.SourceIP}, {"--destination-ip", destIP, &req.DestIP}} {
		if a.val == "" {
			continue
		}
		ip, err := netip.ParseAddr(a.val)
		if err != nil {
			return fmt.Errorf("authz check: %s: %w", a.flag, err)
		}
		*a.dst = ip
	}
	req.RemoteIP = req.SourceIP
	fmt.Fprintf(out, "TCP policies for %s (labels %v): %d DENY, %d ALLOW, %d AUDIT rules\n", proxy.Namespace, proxy.Labels,
		len(pol.Deny.GetRules().GetPolicies()), len(pol.Allow.GetRules().GetPolicies()), len(pol.Audit.GetRules().GetPolicies()))
	d := eng.Check(req)
	for _, a := range d.Audited {
		fmt.Fprintf(out, "audited by %s\n", explain(a))
	}
	for _, m := range d.Shadow {
		if !strings.HasPrefix(m.Policy, authz.ExtAuthzPrefix) || pol.ExtAuthz == nil {
			continue
		}
		fmt.Fprintf(out, "CUSTOM: %s sends the connection to ext_authz provider %q (gRPC, cluster %s)\n", explain(m.Policy), pol.Provider, pol.ExtAuthz.GetGrpcService().GetEnvoyGrpc().GetClusterName())
		if extAuthzResult == "deny" {
			fmt.Fprintf(out, "DENIED (TCP, connection closed) by ext_authz provider %q (--ext-authz-result deny)\n", pol.Provider)
			return &exitError{code: 2, err: fmt.Errorf("connection denied")}
		}
		fmt.Fprintf(out, "assuming provider %q allows (--ext-authz-result allow)\n", pol.Provider)
	}
	printVerdict(out, d, pol.Provider, "ALLOWED (TCP)", "DENIED (TCP, connection closed)")
	if !d.Allowed {
		return &exitError{code: 2, err: fmt.Errorf("connection denied")}
	}
	return nil
}

// explain turns an RBAC policy name into "policy NS/NAME rule N".
// printVerdict prints the decision's last line; allowed and denied are the
// verdict words (HTTP requests and TCP connections differ only there).
func printVerdict(out io.Writer, d rbac.Decision, provider, allowed, denied string) {
	switch {
	case !d.Allowed && strings.HasPrefix(d.Policy, authz.ExtAuthzPrefix):
		fmt.Fprintf(out, "%s by %s: its provider %q cannot be used, so its rules deny (see the warning)\n", denied, explain(d.Policy), provider)
	case d.Allowed && d.Action == "":
		fmt.Fprintf(out, "%s: no ALLOW or DENY policy applies\n", allowed)
	case d.Allowed:
		fmt.Fprintf(out, "%s by %s\n", allowed, explain(d.Policy))
	case d.Action == "DENY":
		fmt.Fprintf(out, "%s by %s\n", denied, explain(d.Policy))
	default:
		fmt.Fprintf(out, "%s: ALLOW policies apply and none matched\n", denied)
	}
}

func explain(name string) string {
	if ns, n, idx, ok := authz.ParsePolicyName(name); ok {
		return fmt.Sprintf("AuthorizationPolicy %s/%s rule %d", ns, n, idx)
	}
	return name
}
