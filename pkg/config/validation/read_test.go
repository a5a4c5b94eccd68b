package validation

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

const paYAML = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: %s}\nspec: {mtls: {mode: STRICT}}\n"

func pa(name string) string { return strings.Replace(paYAML, "%s", name, 1) }

func TestReadSources(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "b.yaml"), pa("b"))
	write(t, filepath.Join(dir, "a.yml"), pa("a"))
	write(t, filepath.Join(dir, "sub", "c.json"), `{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"c"},"spec":{}}`)
	write(t, filepath.Join(dir, "sub", "notes.txt"), "not config")
	write(t, filepath.Join(dir, ".git", "x.yaml"), "garbage: [")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	write(t, bad, pa("ok")+"---\n"+strings.Replace(pa("bad"), "STRICT", "STRICTER", 1))
	dup := filepath.Join(t.TempDir(), "dup.yaml")
	write(t, dup, pa("a"))

	tests := []struct {
		name      string
		paths     []string
		stdin     string
		wantNames []string
		wantErrs  []string // substrings, in order
	}{
		{"directory recursive and sorted", []string{dir}, "", []string{"a", "b", "c"}, nil},
		{"stdin and file", []string{"-", filepath.Join(dir, "b.yaml")}, pa("s"), []string{"s", "b"}, nil},
		{"one bad document fails all", []string{dir, bad}, "", nil, []string{`bad.yaml:9: PeerAuthentication default/bad: spec.mtls.mode: unknown value "STRICTER"`}},
		{"duplicate is a warning, later wins", []string{dir, dup}, "", []string{"a", "b", "c", "a"}, []string{"dup.yaml:3: warning: PeerAuthentication default/a: metadata.name: also defined at"}},
		{"missing path", []string{filepath.Join(dir, "nope")}, "", nil, []string{"nope: read input:"}},
		{"empty directory", []string{t.TempDir()}, "", nil, []string{"holds no *.yaml"}},
		{"no paths", nil, "", nil, []string{"no input"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, errs := ReadSources(tc.paths, strings.NewReader(tc.stdin))
			var names []string
			for _, r := range rs {
				names = append(names, r.Meta.Name)
			}
			if d := cmp.Diff(tc.wantNames, names); d != "" {
				t.Errorf("names (-want +got):\n%s\nproblems:\n%v", d, errs)
			}
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("got %d problems, want %d:\n%v", len(errs), len(tc.wantErrs), errs)
			}
			for i, w := range tc.wantErrs {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, errs[i], w)
				}
			}
		})
	}
}
