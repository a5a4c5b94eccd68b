//go:build wasip1

// Command go-header is a proxy-wasm plugin that adds
// "x-my-header: Hello from WASM!" to every request. The plugin
// configuration, when set, replaces the header value.
package main

import "github.com/weftmesh/weft/examples/wasm/sdk"

type plugin struct{ value string }

func (p *plugin) OnConfigure(cfg []byte) bool {
	if len(cfg) > 0 {
		p.value = string(cfg)
	}
	return true
}

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{p: p} }

type stream struct {
	sdk.DefaultHTTPContext
	p *plugin
}

func (s *stream) OnRequestHeaders(int, bool) sdk.Action {
	sdk.AddRequestHeader("x-my-header", s.p.value)
	return sdk.Continue
}

func init() { sdk.SetPlugin(&plugin{value: "Hello from WASM!"}) }

func main() {}
