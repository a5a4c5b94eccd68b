// Package iptables builds and applies the traffic-capture rules that send a
// workload's TCP traffic through its sidecar. The chains are Istio's
// (ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_IN_REDIRECT, ISTIO_OUTPUT), so
// existing debugging habits carry over: inbound TCP is redirected to the
// proxy's inbound capture port (15006), outbound TCP to its outbound port
// (15001), and the proxy's own traffic (uid/gid 1337) is left alone.
package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Config selects what is captured. Zero values take Istio's defaults via
// Defaults().
type Config struct {
	// ProxyUID and ProxyGID own the proxy process; their traffic is never
	// redirected (default 1337).
	ProxyUID, ProxyGID uint32
	// InboundCapturePort receives redirected inbound traffic (default 15006).
	InboundCapturePort uint16
	// OutboundCapturePort receives redirected outbound traffic (default 15001).
	OutboundCapturePort uint16
	// InboundPorts lists the ports whose inbound traffic is captured; "*"
	// (the default) captures every port, "" captures none.
	InboundPorts string
	// ExcludeInboundPorts are never captured inbound, besides the proxy's
	// own ports 15020, 15021 and 15090, which are always excluded.
	ExcludeInboundPorts []uint16
	// OutboundIPRanges lists CIDRs whose outbound traffic is captured; "*"
	// (the default) captures all, "" captures none.
	OutboundIPRanges string
	// ExcludeOutboundIPRanges are never captured outbound.
	ExcludeOutboundIPRanges []netip.Prefix
	// ExcludeOutboundPorts are never captured outbound.
	ExcludeOutboundPorts []uint16
}

// Defaults returns Istio's defaults.
func Defaults() Config {
	return Config{
		ProxyUID: 1337, ProxyGID: 1337,
		InboundCapturePort: 15006, OutboundCapturePort: 15001,
		InboundPorts: "*", OutboundIPRanges: "*",
	}
}

// alwaysExcludedInbound are the proxy's own status/metrics ports.
var alwaysExcludedInbound = []uint16{15008, 15020, 15021, 15090}

// Chains, in the order they are created.
var chains = []string{"ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"}

// ParsePorts parses a comma-separated port list ("80,443"); "*" and "" are
// returned as-is by callers that accept them.
func ParsePorts(s string) ([]uint16, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("invalid port %q: want 1-65535", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// ParseCIDRs parses a comma-separated list of CIDRs or bare IPs.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR or IP %q", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (c Config) validate() error {
	var errs []error
	if c.InboundCapturePort == 0 || c.OutboundCapturePort == 0 {
		errs = append(errs, errors.New("capture ports must be set (use Defaults())"))
	}
	if c.InboundPorts != "*" {
		if _, err := ParsePorts(c.InboundPorts); err != nil {
			errs = append(errs, fmt.Errorf("inbound ports: %w", err))
		}
	}
	if c.OutboundIPRanges != "*" {
		if _, err := ParseCIDRs(c.OutboundIPRanges); err != nil {
			errs = append(errs, fmt.Errorf("outbound IP ranges: %w", err))
		}
	}
	for _, p := range c.ExcludeOutboundIPRanges {
		if !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("exclude outbound range %s: only IPv4 is supported by these rules", p))
		}
	}
	return errors.Join(errs...)
}

// Render returns the rules as iptables-restore input for the nat table.
// The output is deterministic, so it doubles as the --dry-run listing.
func Render(c Config) (string, error) {
	if err := c.validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	add := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	add("*nat")
	for _, ch := range chains {
		add(":%s - [0:0]", ch)
	}
	add("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports %d", c.OutboundCapturePort)
	add("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports %d", c.InboundCapturePort)

	// Inbound.
	switch c.InboundPorts {
	case "":
	case "*":
		add("-A PREROUTING -p tcp -j ISTIO_INBOUND")
		for _, p := range append(append([]uint16(nil), alwaysExcludedInbound...), c.ExcludeInboundPorts...) {
			add("-A ISTIO_INBOUND -p tcp --dport %d -j RETURN", p)
		}
		add("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
	default:
		ports, _ := ParsePorts(c.InboundPorts)
		add("-A PREROUTING -p tcp -j ISTIO_INBOUND")
		for _, p := range ports {
			add("-A ISTIO_INBOUND -p tcp --dport %d -j ISTIO_IN_REDIRECT", p)
		}
	}

	// Outbound.
	add("-A OUTPUT -p tcp -j ISTIO_OUTPUT")
	for _, p := range c.ExcludeOutboundPorts {
		add("-A ISTIO_OUTPUT -p tcp --dport %d -j RETURN", p)
	}
	// Traffic the proxy sends to itself over loopback with a non-local
	// destination is inbound traffic for the app (e.g. app calls its own
	// service VIP): send it through inbound capture.
	add("-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN")
	add("-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner %d -j ISTIO_IN_REDIRECT", c.ProxyUID)
	add("-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner %d -j RETURN", c.ProxyUID)
	add("-A ISTIO_OUTPUT -m owner --uid-owner %d -j RETURN", c.ProxyUID)
	add("-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner %d -j ISTIO_IN_REDIRECT", c.ProxyGID)
	add("-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner %d -j RETURN", c.ProxyGID)
	add("-A ISTIO_OUTPUT -m owner --gid-owner %d -j RETURN", c.ProxyGID)
	add("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN")
	for _, p := range c.ExcludeOutboundIPRanges {
		add("-A ISTIO_OUTPUT -d %s -j RETURN", p)
	}
	switch c.OutboundIPRanges {
	case "":
	case "*":
		add("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
	default:
		ranges, _ := ParseCIDRs(c.OutboundIPRanges)
		for _, p := range ranges {
			add("-A ISTIO_OUTPUT -d %s -j ISTIO_REDIRECT", p)
		}
		add("-A ISTIO_OUTPUT -j RETURN")
	}
	add("COMMIT")
	return b.String(), nil
}
