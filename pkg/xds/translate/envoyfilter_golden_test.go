package translate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/weftmesh/weft/pkg/config"
)

// TestEnvoyFilterGolden builds each testdata/envoyfilter/*.yaml case with
// and without its EnvoyFilters and compares what the patches changed
// (resources added or changed, in full; names removed; warnings) with
// *.golden.json. A case starting with "# base: NAME" is appended to
// testdata/envoyfilter/NAME.base (the topology shared by several cases).
func TestEnvoyFilterGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/envoyfilter/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("want at least 8 EnvoyFilter golden cases, found %d", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			path := f
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if base, ok := strings.CutPrefix(string(data), "# base: "); ok {
				b, _, _ := strings.Cut(base, "\n")
				head, err := os.ReadFile(filepath.Join("testdata/envoyfilter", strings.TrimSpace(b)+".base"))
				if err != nil {
					t.Fatal(err)
				}
				path = filepath.Join(t.TempDir(), name+".yaml")
				if err := os.WriteFile(path, append(append(head, "\n---\n"...), data...), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			in, p := loadCase(t, path)
			without := *in
			without.Configs = slices.DeleteFunc(slices.Clone(in.Configs), func(r *config.Resource) bool { return r.Kind == config.KindEnvoyFilter })
			if len(without.Configs) == len(in.Configs) {
				t.Fatal("case has no EnvoyFilter")
			}
			before, err := Build(&without, p)
			if err != nil {
				t.Fatalf("Build without EnvoyFilters: %v", err)
			}
			after, err := Build(in, p)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got := renderPatchDiff(t, before, after)
			golden := strings.TrimSuffix(f, ".yaml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/xds/translate -run TestEnvoyFilterGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the build output; run with -update and review the diff:\n%s", golden, got)
			}
		})
	}
}

func renderPatchDiff(t *testing.T, before, after *Output) []byte {
	t.Helper()
	type section struct {
		Changed []json.RawMessage `json:"changed,omitempty"`
		Removed []string          `json:"removed,omitempty"`
	}
	diff := func(a, b []types.Resource) *section {
		old := map[string]types.Resource{}
		for _, r := range a {
			old[resourceName(r)] = r
		}
		s := &section{}
		for _, r := range b {
			n := resourceName(r)
			if o, ok := old[n]; ok && proto.Equal(o, r) {
				delete(old, n)
				continue
			}
			delete(old, n)
			j, err := protojson.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			s.Changed = append(s.Changed, j)
		}
		for n := range old {
			s.Removed = append(s.Removed, n)
		}
		slices.Sort(s.Removed)
		if len(s.Changed)+len(s.Removed) == 0 {
			return nil
		}
		return s
	}
	doc := struct {
		Listeners *section `json:"listeners,omitempty"`
		Routes    *section `json:"routes,omitempty"`
		Clusters  *section `json:"clusters,omitempty"`
		Endpoints *section `json:"endpoints,omitempty"`
		Warnings  []string `json:"warnings,omitempty"`
	}{diff(before.Listeners, after.Listeners), diff(before.Routes, after.Routes), diff(before.Clusters, after.Clusters),
		diff(before.Endpoints, after.Endpoints), after.Warnings}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func resourceName(r types.Resource) string {
	m := r.ProtoReflect()
	for _, f := range []string{"name", "cluster_name"} {
		if fd := m.Descriptor().Fields().ByName(protoreflect.Name(f)); fd != nil {
			return m.Get(fd).String()
		}
	}
	return ""
}
