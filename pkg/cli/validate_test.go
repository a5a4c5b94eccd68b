package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runWeft(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(strings.NewReader(stdin), &out, &errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return out.String(), errOut.String() + "Error: " + err.Error() + "\n", ExitCode(err)
	}
	return out.String(), errOut.String(), 0
}

const seedDir = "../config/testdata/seed"

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 60
    - destination: {host: reviews, subset: v2}
      weight: 50
`), 0o644); err != nil {
		t.Fatal(err)
	}
	warn := filepath.Join(dir, "warn.yaml")
	if err := os.WriteFile(warn, []byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  subsets:\n  - name: v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		stdin      string
		args       []string
		code       int
		wantOut    string
		wantErrOut []string
	}{
		{"seed fixtures valid", "", []string{"validate", "-f", seedDir}, 0, "4 resources valid\n", nil},
		{"weights", "", []string{"validate", "-f", bad}, 1, "",
			[]string{"routes.yaml:12: VirtualService default/reviews: spec.http[0].route[1].weight: weights must sum to 100 (got 110)", "validation failed: 1 error, 0 warnings"}},
		{"seed envoy filter", "", []string{"validate", "-f", "../config/testdata/invalid/envoy-filter.yaml", "-f", seedDir}, 1, "",
			[]string{`envoy-filter.yaml:14: EnvoyFilter default/custom-header-filter: spec.configPatches[0].patches: unknown field "patches" in EnvoyConfigObjectPatch; did you mean "patch"?`,
				"EnvoyFilter is served at networking.istio.io/v1alpha3", "validation failed: 2 errors"}},
		{"stdin", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICT}}\n", []string{"validate", "-f", "-"}, 0, "1 resource valid\n", nil},
		{"warnings only", "", []string{"validate", "-f", warn}, 0, "1 resource valid (1 warning)\n",
			[]string{"warn.yaml:7: warning: DestinationRule default/r: spec.subsets[0].labels:"}},
		{"missing file", "", []string{"validate", "-f", filepath.Join(dir, "nope.yaml")}, 1, "", []string{"nope.yaml: read input:"}},
		{"no -f", "", []string{"validate"}, 2, "", []string{"give at least one -f"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runWeft(t, tc.stdin, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if out != tc.wantOut {
				t.Errorf("stdout = %q, want %q", out, tc.wantOut)
			}
			for _, w := range tc.wantErrOut {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestAnalyzeCommand(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.yaml")
	if err := os.WriteFile(clean, []byte("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: r\n  subsets:\n  - name: v1\n    labels: {version: v1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		wantOut []string
	}{
		{"seed warns about ext-service", []string{"analyze", "-f", seedDir}, 0, []string{
			`virtual-service.yaml:14: Warning [WEFT0101] VirtualService default/ext-service-routes: spec.http[0].route[0].destination.host: host "ext-service"`,
			`did you mean "extsvc.example.com", the host of ServiceEntry default/ext-service?`,
			"Analyzed 4 resources: 0 errors, 1 warning, 0 info",
		}},
		{"fail on warnings", []string{"analyze", "--fail-on-warnings", "-f", seedDir}, 1, []string{"[WEFT0101]"}},
		{"known host silences", []string{"analyze", "--known-host", "ext-service.default.svc.cluster.local", "-f", seedDir}, 0, []string{"No issues found when analyzing 4 resources"}},
		{"clean", []string{"analyze", "-f", clean}, 0, []string{"No issues found when analyzing 1 resource\n"}},
		{"invalid input", []string{"analyze", "-f", "../config/testdata/invalid"}, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runWeft(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}
