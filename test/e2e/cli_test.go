package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// seedFiles are the seed article's fixtures, in pkg/config/testdata/seed.
var seedFiles = []string{"peer-authentication.yaml", "request-authentication.yaml", "service-entry.yaml", "virtual-service.yaml"}

// seedDir copies the seed fixtures into a fresh directory.
func seedDir(t *testing.T) string {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range seedFiles {
		b, err := os.ReadFile(filepath.Join(root, "pkg/config/testdata/seed", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// cli runs weft commands against one control plane.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

// ok runs a command that must succeed and returns its stdout.
func (c cli) ok(args ...string) string {
	c.t.Helper()
	r := harness.Run(c.t, c.bin, c.env, args...)
	if r.ExitCode != 0 {
		c.t.Fatalf("weft %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.ExitCode, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// fail runs a command that must exit with code and returns its stderr.
func (c cli) fail(code int, args ...string) string {
	c.t.Helper()
	r := harness.Run(c.t, c.bin, c.env, args...)
	if r.ExitCode != code {
		c.t.Fatalf("weft %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.ExitCode, code, r.Stdout, r.Stderr)
	}
	return r.Stderr
}

func wantLines(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: missing %q in:\n%s", what, w, got)
		}
	}
}

func TestCLIApplyGetDeleteRestart(t *testing.T) {
	harness.SkipShort(t)
	bin := weft.Binary(t)
	dataDir := t.TempDir()
	seed := seedDir(t)
	cp := harness.StartControlPlane(t, bin, "--data-dir", dataDir)
	c := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=" + cp.URL}}

	if !strings.Contains(cp.Stderr(), "admin API listening on "+cp.URL) {
		t.Errorf("control plane did not log its admin address:\n%s", cp.Stderr())
	}

	// Apply the seed fixtures: everything is created, then unchanged.
	out := c.ok("apply", "-f", seed)
	wantLines(t, "first apply", out,
		"peerauthentication.security.istio.io/default-mtls created",
		"requestauthentication.security.istio.io/jwt-auth created",
		"serviceentry.networking.istio.io/ext-service created",
		"virtualservice.networking.istio.io/ext-service-routes created")
	out = c.ok("apply", "-f", seed)
	if n := strings.Count(out, " unchanged\n"); n != 4 {
		t.Errorf("re-apply: %d unchanged lines, want 4:\n%s", n, out)
	}

	// get: tables, wide columns, YAML and JSON.
	out = c.ok("get", "se")
	wantLines(t, "get se", out, "NAME", "AGE", "ext-service")
	out = c.ok("get", "virtualservices", "-o", "wide")
	wantLines(t, "get vs -o wide", out, "GATEWAYS", "HOSTS", "ext-service-routes", "[extsvc.example.com]")
	out = c.ok("get", "pa", "-A", "-o", "wide")
	wantLines(t, "get pa -A -o wide", out, "NAMESPACE", "MODE", "default", "default-mtls", "STRICT")
	out = c.ok("get", "all")
	wantLines(t, "get all", out,
		"peerauthentication.security.istio.io/default-mtls",
		"requestauthentication.security.istio.io/jwt-auth",
		"serviceentry.networking.istio.io/ext-service",
		"virtualservice.networking.istio.io/ext-service-routes")
	out = c.ok("get", "vs", "ext-service-routes", "-o", "yaml")
	wantLines(t, "get vs -o yaml", out, "kind: VirtualService", "name: ext-service-routes", "prefix: /v1", "host: ext-service", "number: 80", "resourceVersion:")
	out = c.ok("get", "requestauthentication", "jwt-auth", "-o", "json")
	var one struct {
		Kind string
		Spec struct {
			JwtRules []struct {
				Issuer    string
				Audiences []string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &one); err != nil || one.Kind != "RequestAuthentication" ||
		len(one.Spec.JwtRules) != 1 || one.Spec.JwtRules[0].Issuer != "your-issuer" {
		t.Errorf("get ra jwt-auth -o json = %+v (%v):\n%s", one, err, out)
	}
	out = c.ok("get", "all", "-o", "json")
	var list struct {
		Kind  string
		Items []json.RawMessage
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || list.Kind != "List" || len(list.Items) != 4 {
		t.Errorf("get all -o json: kind %q, %d items (%v)", list.Kind, len(list.Items), err)
	}
	out = c.ok("get", "all", "-o", "name")
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("get all -o name: %d lines, want 4:\n%s", n, out)
	}
	errOut := c.fail(1, "get", "vs", "nope")
	wantLines(t, "get missing", errOut, `"nope" not found`)
	errOut = c.fail(2, "get", "nosuchkind")
	wantLines(t, "get unknown kind", errOut, "unknown resource type")

	// A dry run reports the change and stores nothing.
	changed := filepath.Join(t.TempDir(), "vs.yaml")
	b, _ := os.ReadFile(filepath.Join(seed, "virtual-service.yaml"))
	if err := os.WriteFile(changed, []byte(strings.Replace(string(b), "prefix: /v1", "prefix: /v2", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out = c.ok("apply", "-f", changed, "--dry-run")
	wantLines(t, "dry run", out, "virtualservice.networking.istio.io/ext-service-routes configured (dry run)")
	wantLines(t, "after dry run", c.ok("get", "vs", "ext-service-routes", "-o", "yaml"), "prefix: /v1")
	// Applying from stdin really changes it.
	r := harness.RunStdin(t, bin, c.env, strings.Replace(string(b), "prefix: /v1", "prefix: /v2", 1), "apply", "-f", "-")
	if r.ExitCode != 0 || !strings.Contains(r.Stdout, "ext-service-routes configured") {
		t.Fatalf("apply -f -: exit %d\n%s%s", r.ExitCode, r.Stdout, r.Stderr)
	}
	wantLines(t, "after apply", c.ok("get", "vs", "ext-service-routes", "-o", "yaml"), "prefix: /v2")

	// Invalid input: every error is printed with file:line and field path,
	// and the control plane is never contacted (the server is unreachable).
	badDir := t.TempDir()
	badVS, badPA := filepath.Join(badDir, "bad-vs.yaml"), filepath.Join(badDir, "bad-pa.yaml")
	if err := os.WriteFile(badVS, []byte(`apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: bad
spec:
  hosts: [a]
  http:
  - route:
    - destination: {host: a}
      weight: -1
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badPA, []byte(`apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: bad-pa
spec:
  mtls:
    mode: STRICTEST
`), 0o600); err != nil {
		t.Fatal(err)
	}
	unreachable := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=http://127.0.0.1:1"}}
	errOut = unreachable.fail(1, "apply", "-f", badDir, "-f", filepath.Join(seed, "service-entry.yaml"))
	wantLines(t, "invalid apply", errOut, badVS+":10:", "spec.http[0].route[0].weight", badPA+":7:", "spec.mtls.mode", `did you mean "STRICT"`)
	if strings.Contains(errOut, "connect") {
		t.Errorf("invalid apply contacted the server:\n%s", errOut)
	}

	// Delete by name and by file.
	out = c.ok("delete", "vs", "ext-service-routes")
	wantLines(t, "delete", out, `virtualservice.networking.istio.io "ext-service-routes" deleted`)
	c.fail(1, "get", "vs", "ext-service-routes")
	c.fail(1, "delete", "vs", "ext-service-routes")
	c.ok("delete", "vs", "ext-service-routes", "--ignore-not-found")
	out = c.ok("delete", "-f", filepath.Join(seed, "peer-authentication.yaml"))
	wantLines(t, "delete -f", out, `peerauthentication.security.istio.io "default-mtls" deleted`)

	// Restart on the same data dir: the remaining resources are still there.
	if err := cp.Stop(10 * time.Second); err != nil {
		t.Fatalf("control plane did not stop cleanly on SIGTERM: %v\n%s", err, cp.Stderr())
	}
	cp2 := harness.StartControlPlane(t, bin, "--data-dir", dataDir)
	c.env = []string{"WEFT_SERVER=" + cp2.URL}
	out = c.ok("get", "all", "-o", "name")
	if got, want := strings.Fields(out), []string{
		"requestauthentication.security.istio.io/jwt-auth",
		"serviceentry.networking.istio.io/ext-service",
	}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after restart: %v, want %v", got, want)
	}
	out = c.ok("apply", "-f", seed)
	wantLines(t, "apply after restart", out,
		"peerauthentication.security.istio.io/default-mtls created",
		"requestauthentication.security.istio.io/jwt-auth unchanged",
		"serviceentry.networking.istio.io/ext-service unchanged",
		"virtualservice.networking.istio.io/ext-service-routes created")
}

func TestCLIConfigDirReadOnly(t *testing.T) {
	harness.SkipShort(t)
	bin := weft.Binary(t)
	seed := seedDir(t)
	cp := harness.StartControlPlane(t, bin, "--config-dir", seed)
	c := cli{t: t, bin: bin, env: []string{"WEFT_SERVER=" + cp.URL}}
	out := c.ok("get", "all", "-o", "name")
	if n := strings.Count(out, "\n"); n != 4 {
		t.Errorf("get all from --config-dir: %d resources, want 4:\n%s", n, out)
	}
	errOut := c.fail(1, "apply", "-f", seed)
	wantLines(t, "apply to read-only", errOut, "read-only")
	errOut = c.fail(1, "delete", "se", "ext-service")
	wantLines(t, "delete from read-only", errOut, "read-only")
}
