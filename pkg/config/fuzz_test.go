package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/validation"
)

// FuzzDecodeValidate checks that decoding and validating never panic, that
// any problem is located, and that valid input survives an encode/decode
// round trip unchanged and still valid.
func FuzzDecodeValidate(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*", "*.yaml"))
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(append([]byte("apiVersion: networking.istio.io/v1\n"), data...))
	}
	f.Add([]byte(`{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"r"},"spec":{"host":"r","trafficPolicy":{"outlierDetection":{"interval":"1.000000001s"}}}}`))
	f.Add([]byte("kind: List\nitems:\n- &a {kind: Gateway}\n- *a\n"))
	f.Add([]byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: {hosts: [a], http: [{timeout: 300ms, route: [{destination: {host: a}, weight: 100}]}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, errs := validation.ParseFile("fuzz.yaml", data)
		for _, e := range errs {
			if e.Msg == "" {
				t.Fatalf("problem without a message: %#v", e)
			}
		}
		if len(errs.Errors()) > 0 {
			if rs != nil {
				t.Fatalf("resources returned with errors: %v", errs)
			}
			return
		}
		out, err := config.EncodeYAML(rs)
		if err != nil {
			t.Fatalf("encode valid resources: %v", err)
		}
		back, errs2 := validation.ParseFile("encoded.yaml", out)
		if len(errs2.Errors()) > 0 {
			t.Fatalf("re-encoded input is invalid: %v\ninput:\n%s\nencoded:\n%s", errs2, data, out)
		}
		if len(back) != len(rs) {
			t.Fatalf("round trip: %d resources, want %d", len(back), len(rs))
		}
		for i := range rs {
			if d := cmp.Diff(rs[i], back[i], protocmp.Transform(), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".Source"
			}, cmp.Ignore())); d != "" {
				t.Fatalf("round trip differs:\n%s\nencoded:\n%s", d, out)
			}
		}
	})
}
