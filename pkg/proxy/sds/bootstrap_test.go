package sds_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3" // the snippet's typed_extension_protocol_options
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"
)

// TestREADMEBootstrap: the Envoy bootstrap snippet in README.md is a valid
// envoy.config.bootstrap.v3.Bootstrap (proto validation rules included)
// whose cluster sds-grpc (the name the translator's sds_config uses) is
// HTTP/2 to a pipe. No real Envoy runs here.
func TestREADMEBootstrap(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	snippet, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("README.md has no ```yaml block")
	}
	var v any
	if err := yaml.Unmarshal([]byte(snippet), &v); err != nil {
		t.Fatalf("README snippet: %v", err)
	}
	js, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		t.Fatalf("README snippet is no Bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("README snippet: %v", err)
	}
	cs := bs.GetStaticResources().GetClusters()
	if len(cs) != 1 || cs[0].GetName() != "sds-grpc" {
		t.Fatalf("clusters %v, want sds-grpc", cs)
	}
	if _, ok := cs[0].GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Fatal("sds-grpc does not speak HTTP/2 (gRPC)")
	}
	addr := cs[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
	if !strings.HasSuffix(addr.GetPipe().GetPath(), "/sds.sock") {
		t.Fatalf("sds-grpc address %v, want the --sds-socket pipe", addr)
	}
}
