//go:build wasip1

// Command go-deny is a proxy-wasm plugin that answers 403 to requests
// without an "x-allowed" header and counts them in the counter
// "wasm_go_deny_denied_total".
package main

import "github.com/weftmesh/weft/examples/wasm/sdk"

type plugin struct{ denied uint32 }

func (p *plugin) OnConfigure([]byte) bool {
	p.denied = sdk.DefineMetric(sdk.Counter, "wasm_go_deny_denied_total")
	return true
}

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{p: p} }

type stream struct {
	sdk.DefaultHTTPContext
	p *plugin
}

func (s *stream) OnRequestHeaders(int, bool) sdk.Action {
	if _, ok := sdk.RequestHeader("x-allowed"); ok {
		return sdk.Continue
	}
	sdk.IncrementMetric(s.p.denied, 1)
	path, _ := sdk.Property("request", "path")
	sdk.Log(sdk.LogInfo, "denied "+string(path))
	sdk.SendLocalResponse(403, "go_deny", []byte("denied by wasm\n"), [][2]string{{"x-denied-by", "go-deny"}})
	return sdk.Pause
}

func init() { sdk.SetPlugin(&plugin{}) }

func main() {}
