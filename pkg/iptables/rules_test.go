package iptables

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRenderDefaults(t *testing.T) {
	out, err := Render(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		":ISTIO_INBOUND - [0:0]", ":ISTIO_REDIRECT - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]",
		"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
		"-A PREROUTING -p tcp -j ISTIO_INBOUND",
		"-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
		"-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
		"-A OUTPUT -p tcp -j ISTIO_OUTPUT",
		"-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
		"-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
		"-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing rule %q in:\n%s", want, out)
		}
	}
	if !strings.HasPrefix(out, "*nat\n") || !strings.HasSuffix(out, "COMMIT\n") {
		t.Errorf("not an iptables-restore document:\n%s", out)
	}
	// The uid exclusion must come before the catch-all redirect.
	if strings.Index(out, "--uid-owner 1337 -j RETURN") > strings.Index(out, "-A ISTIO_OUTPUT -j ISTIO_REDIRECT") {
		t.Error("proxy uid exclusion comes after the outbound redirect: the proxy would capture itself")
	}
}

func TestRenderOptions(t *testing.T) {
	c := Defaults()
	c.InboundPorts = "8080,9090"
	c.OutboundIPRanges = "10.0.0.0/8,192.168.1.7"
	c.ExcludeOutboundIPRanges = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	c.ExcludeOutboundPorts = []uint16{5432}
	out, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
		"-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT",
		"-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
		"-A ISTIO_OUTPUT -d 192.168.1.7/32 -j ISTIO_REDIRECT",
		"-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN",
		"-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing rule %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT") {
		t.Error("catch-all inbound redirect present although only listed ports are captured")
	}
	if strings.Index(out, "-d 10.1.0.0/16 -j RETURN") > strings.Index(out, "-d 10.0.0.0/8 -j ISTIO_REDIRECT") {
		t.Error("excluded range must be checked before included ranges")
	}
}

func TestRenderNoCapture(t *testing.T) {
	c := Defaults()
	c.InboundPorts = ""
	c.OutboundIPRanges = ""
	out, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "PREROUTING") || strings.Contains(out, "-j ISTIO_REDIRECT") {
		t.Errorf("empty port/range lists must capture nothing:\n%s", out)
	}
}

func TestRenderErrors(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad inbound port", func(c *Config) { c.InboundPorts = "80,http" }, `invalid port "http"`},
		{"zero port", func(c *Config) { c.InboundPorts = "0" }, `invalid port "0"`},
		{"port too big", func(c *Config) { c.InboundPorts = "70000" }, `invalid port "70000"`},
		{"bad cidr", func(c *Config) { c.OutboundIPRanges = "10.0.0.0/33" }, `invalid CIDR or IP "10.0.0.0/33"`},
		{"ipv6 exclude", func(c *Config) { c.ExcludeOutboundIPRanges = []netip.Prefix{netip.MustParsePrefix("fd00::/8")} }, "only IPv4"},
		{"no capture ports", func(c *Config) { c.InboundCapturePort = 0 }, "capture ports must be set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			tc.mod(&c)
			_, err := Render(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
