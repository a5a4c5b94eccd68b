package proxy

import (
	"encoding/json"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
	"github.com/weftmesh/weft/pkg/proxy/listener"
	"github.com/weftmesh/weft/pkg/proxy/xdsclient"
)

// TestConfigDumpTypeNotLinked: a listener whose filter's typed_config is
// of a type this binary does not register (as an EnvoyFilter's extension
// in the proxy-only build) is still dumped, the filter with its "@type".
func TestConfigDumpTypeNotLinked(t *testing.T) {
	t.Parallel()
	const url = "type.googleapis.com/example.weft.NotLinked"
	res := xdsclient.NewResources()
	res.Listeners["l1"] = &listenerv3.Listener{Name: "l1", FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "example.not_linked", ConfigType: &listenerv3.Filter_TypedConfig{
			TypedConfig: &anypb.Any{TypeUrl: url, Value: []byte{0x0a, 0x03, 'a', 'b', 'c'}}}}},
	}}}
	p := &Proxy{}
	p.rt.Store(&listener.Runtime{Resources: res, Clusters: &cluster.Set{}})
	b, err := p.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Listeners []map[string]any `json:"listeners"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatal(err)
	}
	if len(dump.Listeners) != 1 || dump.Listeners[0]["name"] != "l1" || dump.Listeners[0]["error"] != nil {
		t.Fatalf("listeners = %v", dump.Listeners)
	}
	if !strings.Contains(string(b), `"@type": "`+url+`"`) && !strings.Contains(string(b), `"@type":"`+url+`"`) {
		t.Errorf("the filter's @type %s is not in the dump:\n%s", url, b)
	}
}
