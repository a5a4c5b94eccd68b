package validation

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	typev1beta1 "istio.io/api/type/v1beta1"

	"github.com/weftmesh/weft/pkg/config"
)

func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func key(path, k string) string { return path + "[" + k + "]" }

// isDNSLabel accepts RFC 1123 labels in either case.
func isDNSLabel(s string) bool { return config.IsDNS1123Label(strings.ToLower(s)) }

// checkHost validates a service host name: an FQDN or short name, optionally
// with a leading "*." wildcard (or "*" alone when allowStar).
func (v *validator) checkHost(path, host string, allowStar bool) {
	switch {
	case host == "":
		v.errorf(path, "host must not be empty")
		return
	case host == "*":
		if !allowStar {
			v.errorf(path, "wildcard host \"*\" is not allowed here")
		}
		return
	case len(host) > 255:
		v.errorf(path, "host %q is longer than 255 characters", host)
		return
	}
	name := host
	if strings.HasPrefix(name, "*.") {
		name = name[2:]
	} else if strings.HasPrefix(name, "*") {
		// "*foo.com" is accepted by Istio as a suffix wildcard.
		name = name[1:]
		if name == "" {
			return
		}
	}
	if strings.Contains(name, "*") {
		v.errorf(path, "invalid host %q: a wildcard is only allowed as the leftmost label (\"*.example.com\")", host)
		return
	}
	name = strings.TrimSuffix(name, ".")
	for _, l := range strings.Split(name, ".") {
		if !isDNSLabel(l) {
			v.errorf(path, "invalid host %q: %q is not a DNS label (letters, digits and '-', at most 63 characters)", host, l)
			return
		}
	}
}

func isIP(s string) bool { return net.ParseIP(s) != nil }

// checkPort checks a port number is 1-65535.
func (v *validator) checkPort(path string, n uint32) {
	if n < 1 || n > 65535 {
		v.errorf(path, "port number %d out of range (1-65535)", n)
	}
}

var protocols = []string{"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP", "HTTP_PROXY"}

func (v *validator) checkProtocol(path, p string) {
	if p == "" {
		return
	}
	for _, x := range protocols {
		if strings.EqualFold(x, p) {
			return
		}
	}
	msg := fmt.Sprintf("unknown protocol %q (valid: %s)", p, strings.Join(protocols, ", "))
	if s := config.Suggest(strings.ToUpper(p), protocols); s != "" {
		msg = fmt.Sprintf("unknown protocol %q; did you mean %q?", p, s)
	}
	v.errorf(path, "%s", msg)
}

func (v *validator) checkPortName(path, name string, required bool) {
	if name == "" {
		if required {
			v.errorf(path, "port name is required")
		}
		return
	}
	if !isDNSLabel(name) {
		v.errorf(path, "invalid port name %q: must be a DNS label (letters, digits and '-')", name)
	}
}

// checkDuration checks an optional duration is at least 1ms.
func (v *validator) checkDuration(path string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		v.errorf(path, "invalid duration: %v", err)
		return
	}
	if d.AsDuration() < time.Millisecond {
		v.errorf(path, "duration must be at least 1ms, got %s", d.AsDuration())
	}
}

func (v *validator) checkRegex(path, re string) {
	if re == "" {
		v.errorf(path, "regex must not be empty")
		return
	}
	if _, err := regexp.Compile(re); err != nil {
		v.errorf(path, "invalid RE2 regex %q: %v", re, err)
	}
}

func (v *validator) checkPercent(path string, p float64) {
	if p < 0 || p > 100 {
		v.errorf(path, "percentage must be between 0 and 100, got %v", p)
	}
}

// checkLabels checks Kubernetes label keys and values.
func (v *validator) checkLabels(path string, labels map[string]string) {
	for k, val := range labels {
		p := key(path, k)
		if err := labelKeyError(k); err != "" {
			v.errorf(p, "invalid label key %q: %s", k, err)
		}
		if val != "" && !labelValueRE.MatchString(val) || len(val) > 63 {
			v.errorf(p, "invalid label value %q: at most 63 characters, alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric", val)
		}
	}
}

var labelValueRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)

func labelKeyError(k string) string {
	name := k
	if i := strings.LastIndex(k, "/"); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if !config.IsDNS1123Subdomain(prefix) {
			return fmt.Sprintf("prefix %q must be a DNS subdomain", prefix)
		}
	}
	if name == "" || len(name) > 63 || !labelValueRE.MatchString(name) {
		return "name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
	}
	return ""
}

func (v *validator) checkSelector(path string, sel *typev1beta1.WorkloadSelector) {
	if sel == nil {
		return
	}
	v.checkLabels(path+".matchLabels", sel.GetMatchLabels())
}

// checkGatewayRef checks "name", "namespace/name" or "mesh".
func (v *validator) checkGatewayRef(path, ref string) {
	if ref == "mesh" {
		return
	}
	ns, name, hasNS := strings.Cut(ref, "/")
	if !hasNS {
		name, ns = ref, ""
	}
	if hasNS && !config.IsDNS1123Label(ns) {
		v.errorf(path, "invalid gateway reference %q: namespace %q is not a DNS-1123 label", ref, ns)
		return
	}
	if !config.IsDNS1123Subdomain(name) {
		v.errorf(path, "invalid gateway reference %q: use \"name\", \"namespace/name\" or \"mesh\"", ref)
	}
}

// checkNamespacedHost checks "namespace/host" as used by Sidecar egress and
// Gateway servers ("*/host", "./host", "~/host" allowed).
func (v *validator) checkNamespacedHost(path, h string) {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		v.errorf(path, "host %q must be in namespace/dnsName form, e.g. \"*/%s\" or \"./%s\"", h, h, h)
		return
	}
	if ns != "*" && ns != "." && ns != "~" && !config.IsDNS1123Label(ns) {
		v.errorf(path, "invalid namespace %q in %q: use a namespace name, \"*\", \".\" or \"~\"", ns, h)
		return
	}
	v.checkHost(path, host, true)
}

// checkCIDR accepts an IP address or a CIDR block.
func (v *validator) checkCIDR(path, s string) {
	if _, err := netip.ParsePrefix(s); err == nil {
		return
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return
	}
	v.errorf(path, "%q is not an IP address or CIDR block", s)
}

func (v *validator) checkNonEmptyStrings(path string, vals []string) {
	for i, s := range vals {
		if strings.TrimSpace(s) == "" {
			v.errorf(idx(path, i), "value must not be empty")
		}
	}
}

func parsePort(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 1 && n <= 65535
}

// isDNSName accepts a host name of RFC 1123 labels (either case, an
// optional trailing dot), at most 255 characters, without wildcards.
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 255 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}
