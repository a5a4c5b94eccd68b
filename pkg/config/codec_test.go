package config_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/validation"
)

// roundTrip decodes YAML, encodes it, and decodes again; both models must be
// equal.
func roundTrip(t *testing.T, file string, data []byte) []*config.Resource {
	t.Helper()
	first, err := config.Decode(file, data)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	out, err := config.EncodeYAML(first)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	second, err := config.Decode("encoded.yaml", out)
	if err != nil {
		t.Fatalf("decode encoded: %v\n%s", err, out)
	}
	if len(first) != len(second) {
		t.Fatalf("got %d resources back, want %d", len(second), len(first))
	}
	for i := range first {
		if d := cmp.Diff(first[i], second[i], protocmp.Transform(), cmp.FilterPath(func(p cmp.Path) bool {
			return p.Last().String() == ".Source"
		}, cmp.Ignore())); d != "" {
			t.Errorf("round trip of %s differs (-first +second):\n%s\nencoded:\n%s", first[i].Key(), d, out)
		}
	}
	return first
}

func TestRoundTripEveryKindAndVersion(t *testing.T) {
	for _, s := range config.Schemas() {
		body, err := os.ReadFile(filepath.Join("testdata", "roundtrip", s.Kind+".yaml"))
		if err != nil {
			t.Fatalf("fixture for %s: %v", s.Kind, err)
		}
		for _, gv := range s.APIVersions() {
			t.Run(s.Kind+"/"+gv, func(t *testing.T) {
				data := []byte("apiVersion: " + gv + "\n" + string(body))
				rs := roundTrip(t, s.Kind+".yaml", data)
				if len(rs) != 1 || rs[0].Kind != s.Kind || rs[0].APIVersion != gv {
					t.Fatalf("decoded %v", rs)
				}
				if proto := rs[0].Spec; proto == nil || len(mustJSON(t, rs[0])) < 80 {
					t.Errorf("spec looks empty: %s", mustJSON(t, rs[0]))
				}
				if _, errs := validation.ParseFile(s.Kind+".yaml", data); len(errs) > 0 {
					t.Errorf("fixture does not validate cleanly:\n%v", errs)
				}
			})
		}
	}
}

func mustJSON(t *testing.T, r *config.Resource) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMarshalJSONOmitsZeroCreationTimestamp(t *testing.T) {
	rs, err := config.Decode("a.yaml", []byte("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {mtls: {mode: STRICT}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := mustJSON(t, rs[0])
	if strings.Contains(string(b), "creationTimestamp") {
		t.Errorf("zero creationTimestamp rendered: %s", b)
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs[0].Meta.CreationTimestamp = ts
	rs[0].Meta.Generation = 3
	rs[0].Meta.ResourceVersion = "42"
	b = mustJSON(t, rs[0])
	if !strings.Contains(string(b), `"creationTimestamp":"2026-01-02T03:04:05Z"`) {
		t.Errorf("creationTimestamp missing: %s", b)
	}
	var back config.Resource
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Meta.CreationTimestamp.Equal(ts) || back.Meta.Generation != 3 || back.Meta.ResourceVersion != "42" {
		t.Errorf("metadata lost: %+v", back.Meta)
	}
	if d := cmp.Diff(rs[0].Spec, back.Spec, protocmp.Transform()); d != "" {
		t.Errorf("spec differs: %s", d)
	}
}

func TestDecodeJSONListAndMultiDoc(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  []string // keys
	}{
		{"json", `{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"name":"r","namespace":"a"},"spec":{"host":"r"}}`,
			[]string{"DestinationRule a/r"}},
		{"multi-doc with empty docs", "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n---\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\nspec: {host: b}\n",
			[]string{"DestinationRule default/a", "DestinationRule default/b"}},
		{"list", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: DestinationRule\n  metadata: {name: a}\n  spec: {host: a}\n- apiVersion: security.istio.io/v1\n  kind: PeerAuthentication\n  metadata: {name: p, namespace: x}\n",
			[]string{"DestinationRule default/a", "PeerAuthentication x/p"}},
		{"snake case and proto names", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  traffic_policy:\n    connection_pool: {tcp: {max_connections: 5}}\n",
			[]string{"DestinationRule default/a"}},
		{"gateway api kinds", "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {gatewayClassName: istio}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {selector: {a: b}}\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {parentRefs: [{name: g, group: \"\", kind: Service}]}\n",
			[]string{"KubernetesGateway default/g", "Gateway default/g", "HTTPRoute default/r"}},
		{"kubernetes objects skipped", "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: UDPRoute\nmetadata: {name: g}\nspec: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n",
			[]string{"DestinationRule default/a"}},
		{"kubectl metadata ignored", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, uid: 123-4, managedFields: []}\nspec: {host: a}\nstatus: {foo: bar}\n",
			[]string{"DestinationRule default/a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := config.Decode("in", []byte(tc.input))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rs {
				got = append(got, r.Key().String())
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("keys differ: %s", d)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, input string
		want        []string
	}{
		{"yaml syntax", "apiVersion: a\n  kind: : b\n", []string{"f.yaml:2: invalid YAML"}},
		{"scalar document", "hello\n", []string{"f.yaml:1: document is not a mapping"}},
		{"bad doc among good", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\nspec: {hots: b}\n",
			[]string{`f.yaml:9: DestinationRule default/b: spec.hots: unknown field "hots" in DestinationRule; did you mean "host"?`}},
		{"list item", "kind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gatway\n", []string{`f.yaml:4: kind: unknown kind "Gatway"; did you mean "Gateway"?`}},
		{"unknown core kind", "apiVersion: v1\nkind: Nope\nmetadata: {name: a}\n", []string{`f.yaml:2: kind: unknown kind "Nope"`}},
		{"alias bomb", "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\nx0: &a0 [1, 2, 3, 4, 5, 6, 7, 8]\nx1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\nx2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]\nx3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]\nx4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]\nx5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]\nx6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]\nx7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]\nx8: &a8 [*a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7]\nspec:\n  configPatches:\n  - applyTo: CLUSTER\n    patch:\n      operation: MERGE\n      value: {a: [*a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8]}\n",
			[]string{"document too large"}},
		{"list without items", "kind: List\n", []string{"items: a List needs an items sequence"}},
		{"well-known wrapper type", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: many\n",
			[]string{"f.yaml:8: DestinationRule default/a: spec.trafficPolicy.outlierDetection.consecutive5xxErrors: expected a non-negative 32-bit integer"}},
		{"struct must be object", "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\nspec:\n  configPatches:\n  - applyTo: CLUSTER\n    patch:\n      operation: MERGE\n      value: [1]\n",
			[]string{"f.yaml:9: EnvoyFilter default/a: spec.configPatches[0].patch.value: expected an object"}},
		{"enum number ok, bad number", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec:\n  mtls: {mode: 9}\n", []string{"f.yaml:5:", `unknown value "9"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := config.Decode("f.yaml", []byte(tc.input))
			if err == nil || rs != nil {
				t.Fatalf("got %d resources, err %v; want an error", len(rs), err)
			}
			if _, ok := config.AsErrorList(err); !ok {
				t.Errorf("error is %T, want ErrorList", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLineIndex(t *testing.T) {
	in := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  labels:\n    app: r\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r}\n      weight: 50\n    - destination:\n        host: s\n      weight: 50\n"
	rs, err := config.Decode("r.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	src := rs[0].Source
	for path, want := range map[string]int{
		"metadata.labels[app]":                   6,
		"spec.hosts[0]":                          8,
		"spec.http[0]":                           10,
		"spec.http[0].route":                     10,
		"spec.http[0].route[1].weight":           15,
		"spec.http[0].route[1].destination":      13,
		"spec.http[0].route[1].destination.host": 14,
		"spec.http[0].timeout":                   10, // unset: nearest written ancestor
		"spec.tcp":                               7,
		"nothing.at.all":                         1,
	} {
		if got := src.LineOf(path); got != want {
			t.Errorf("LineOf(%s) = %d, want %d", path, got, want)
		}
	}
	e := rs[0].FieldError("spec.http[0].route[1].weight", false, "weights must sum to 100 (got %d)", 110)
	if got, want := e.Error(), "r.yaml:15: VirtualService default/r: spec.http[0].route[1].weight: weights must sum to 100 (got 110)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParentPath(t *testing.T) {
	for in, want := range map[string]string{
		"a.b[2]":                         "a.b",
		"a.b":                            "a",
		"a":                              "",
		"metadata.annotations[x.io/a.b]": "metadata.annotations",
		"spec.x[request.headers[a]]":     "spec.x[request.headers",
		"spec.portLevelMtls[8080].mode":  "spec.portLevelMtls[8080]",
	} {
		if got := config.ParentPath(in); got != want {
			t.Errorf("ParentPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"patch", "match", "applyTo"}
	for in, want := range map[string]string{"patches": "patch", "aplyTo": "applyTo", "zzzzzz": "", "Match": "match"} {
		if got := config.Suggest(in, cands); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGatewayAPIRoundTrip(t *testing.T) {
	in := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo, namespace: shop}
spec:
  parentRefs:
  - {name: gw, sectionName: http, port: 80}
  - {group: "", kind: Service, name: reviews}
  hostnames: [bookinfo.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /productpage}
      headers: [{name: x-user, value: jason}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-a, value: "1"}], remove: [x-b]}
    backendRefs:
    - {name: productpage, port: 9080, weight: 90}
    timeouts: {request: 10s}
`
	rs, err := config.Decode("r.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(rs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"kind":"HTTPRoute"`) || !strings.Contains(string(j), `"group":""`) {
		t.Errorf("encoded %s: want kind HTTPRoute and the explicit empty group kept", j)
	}
	var back config.Resource
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatal(err)
	}
	if back.Kind != config.KindHTTPRoute || !proto.Equal(back.Spec, rs[0].Spec) {
		t.Errorf("round trip: kind %q, spec equal %v", back.Kind, proto.Equal(back.Spec, rs[0].Spec))
	}
	gw, err := config.Decode("g.yaml", []byte("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := config.EncodeYAML(gw)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "kind: Gateway\n") || !strings.Contains(string(y), "apiVersion: gateway.networking.k8s.io/v1\n") {
		t.Errorf("YAML of a Gateway API Gateway:\n%s", y)
	}
	for _, tc := range []struct{ in, want string }{
		{"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n  - backendRef: []\n",
			`f.yaml:6: HTTPRoute default/r: spec.rules[0].backendRef: unknown field "backendRef" in HTTPRouteRule; did you mean "backendRefs"?`},
		{"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  listeners:\n  - port: eighty\n",
			`f.yaml:6: Gateway.gateway.networking.k8s.io default/g: spec.listeners[0].port: `},
		{"apiVersion: gateway.networking.k8s.io/v1alpha3\nkind: HTTPRoute\nmetadata: {name: r}\n",
			`HTTPRoute is served at gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1`},
	} {
		_, err := config.Decode("f.yaml", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}
