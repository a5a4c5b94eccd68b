package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Apply installs the rules with iptables-restore in the current network
// namespace. It is all-or-nothing: iptables-restore commits the nat table
// atomically, and existing ISTIO_* chains are replaced, not appended to.
// Rules in other chains and tables are left untouched (--noflush).
func Apply(ctx context.Context, c Config) error {
	rules, err := Render(c)
	if err != nil {
		return err
	}
	// Remove jumps from earlier runs so re-applying does not duplicate them.
	if err := Cleanup(ctx); err != nil {
		return err
	}
	return restore(ctx, rules)
}

func restore(ctx context.Context, rules string) error {
	cmd := exec.CommandContext(ctx, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables-restore: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Cleanup removes every rule and chain Apply created. It succeeds when
// there is nothing to remove.
func Cleanup(ctx context.Context) error {
	for _, j := range []struct{ chain, target string }{{"PREROUTING", "ISTIO_INBOUND"}, {"OUTPUT", "ISTIO_OUTPUT"}} {
		for {
			// Delete every copy of the jump rule.
			if err := exec.CommandContext(ctx, "iptables", "-t", "nat", "-D", j.chain, "-p", "tcp", "-j", j.target).Run(); err != nil {
				break
			}
		}
	}
	for _, ch := range chains {
		_ = exec.CommandContext(ctx, "iptables", "-t", "nat", "-F", ch).Run()
	}
	for _, ch := range chains {
		_ = exec.CommandContext(ctx, "iptables", "-t", "nat", "-X", ch).Run()
	}
	out, err := exec.CommandContext(ctx, "iptables-save", "-t", "nat").Output()
	if err != nil {
		return fmt.Errorf("iptables-save: %w", err)
	}
	if bytes.Contains(out, []byte("ISTIO_")) {
		return fmt.Errorf("cleanup left ISTIO_ rules behind:\n%s", out)
	}
	return nil
}
