//go:build wasip1

// Command go-trap is a test plugin whose request callback panics (a wasm
// trap), or spins forever when its configuration is "loop".
package main

import "github.com/weftmesh/weft/examples/wasm/sdk"

type plugin struct{ loop bool }

func (p *plugin) OnConfigure(cfg []byte) bool { p.loop = string(cfg) == "loop"; return true }

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{p: p} }

type stream struct {
	sdk.DefaultHTTPContext
	p *plugin
}

var sink int

func (s *stream) OnRequestHeaders(int, bool) sdk.Action {
	if s.p.loop {
		for {
			sink++
		}
	}
	panic("go-trap: boom")
}

func init() { sdk.SetPlugin(&plugin{}) }

func main() {}
