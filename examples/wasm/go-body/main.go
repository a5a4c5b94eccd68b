//go:build wasip1

// Command go-body is a proxy-wasm plugin that rewrites bodies: with the
// configuration "FROM=TO" (default "hello=HELLO") it buffers the whole
// request and response bodies (pausing until the end of stream) and
// replaces every FROM with TO in both.
package main

import (
	"bytes"

	"github.com/weftmesh/weft/examples/wasm/sdk"
)

type plugin struct{ from, to []byte }

func (p *plugin) OnConfigure(cfg []byte) bool {
	if len(cfg) == 0 {
		return true
	}
	from, to, ok := bytes.Cut(cfg, []byte("="))
	if !ok || len(from) == 0 {
		sdk.Log(sdk.LogError, "configuration must be FROM=TO")
		return false
	}
	p.from, p.to = from, to
	return true
}

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{p: p} }

type stream struct {
	sdk.DefaultHTTPContext
	p *plugin
}

func (s *stream) OnResponseHeaders(int, bool) sdk.Action {
	sdk.RemoveResponseHeader("content-length") // the body length changes
	return sdk.Continue
}

func (s *stream) OnRequestBody(size int, eos bool) sdk.Action {
	if !eos {
		return sdk.Pause // buffer it all
	}
	sdk.SetRequestBody(bytes.ReplaceAll(sdk.RequestBody(size), s.p.from, s.p.to))
	return sdk.Continue
}

func (s *stream) OnResponseBody(size int, eos bool) sdk.Action {
	if !eos {
		return sdk.Pause
	}
	sdk.SetResponseBody(bytes.ReplaceAll(sdk.ResponseBody(size), s.p.from, s.p.to))
	return sdk.Continue
}

func init() { sdk.SetPlugin(&plugin{from: []byte("hello"), to: []byte("HELLO")}) }

func main() {}
