package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestQuickstartCommands is the fast half of the quick-start check: the
// README's quick start block parses the way hack/quickstart-check.sh reads
// it, it starts the demo, and every make command in it names a target the
// Makefile has. The slow half, running the commands in a fresh clone, is
// `make quickstart-check` (about 2 minutes, most of it the first build).
func TestQuickstartCommands(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", filepath.Join(root, "hack/quickstart-check.sh"), "--list", filepath.Join(root, "README.md")).CombinedOutput()
	if err != nil {
		t.Fatalf("quickstart-check.sh --list: %v\n%s", err, out)
	}
	cmds := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(cmds) == 0 || cmds[0] == "" {
		t.Fatal("README.md has no ```sh block under '## Quick start'")
	}
	hasDemo := false
	for _, c := range cmds {
		f := strings.Fields(c)
		if f[0] != "make" {
			continue
		}
		for _, target := range f[1:] {
			if strings.Contains(target, "=") {
				continue
			}
			if target == "demo" {
				hasDemo = true
			}
			if o, err := exec.Command("make", "-C", root, "-n", target).CombinedOutput(); err != nil {
				t.Errorf("quick start %q: make -n %s: %v\n%s", c, target, err, o)
			}
		}
	}
	if !hasDemo {
		t.Errorf("quick start %q does not run make demo", cmds)
	}
}
