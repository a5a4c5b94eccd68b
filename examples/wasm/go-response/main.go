//go:build wasip1

// Command go-response is a proxy-wasm plugin for the response and log
// phases: it adds "x-wasm-response: <configuration or weft>" to every
// response and removes "x-internal"; after each response it records the
// request duration in the histogram "wasm_go_response_duration_ms" and
// counts responses with status ≥ 500 in "wasm_go_response_5xx_total".
package main

import "github.com/weftmesh/weft/examples/wasm/sdk"

type plugin struct {
	value            string
	duration, errors uint32
}

func (p *plugin) OnConfigure(cfg []byte) bool {
	if len(cfg) > 0 {
		p.value = string(cfg)
	}
	p.duration = sdk.DefineMetric(sdk.Histogram, "wasm_go_response_duration_ms")
	p.errors = sdk.DefineMetric(sdk.Counter, "wasm_go_response_5xx_total")
	return true
}

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{p: p} }

type stream struct {
	sdk.DefaultHTTPContext
	p *plugin
}

func (s *stream) OnResponseHeaders(int, bool) sdk.Action {
	sdk.SetResponseHeader("x-wasm-response", s.p.value)
	sdk.RemoveResponseHeader("x-internal")
	return sdk.Continue
}

func (s *stream) OnLog() {
	if d, ok := sdk.PropertyUint64("request", "duration"); ok {
		sdk.RecordMetric(s.p.duration, d/1_000_000)
	}
	if code, ok := sdk.PropertyUint64("response", "code"); ok && code >= 500 {
		sdk.IncrementMetric(s.p.errors, 1)
		details, _ := sdk.Property("response", "code_details")
		sdk.Log(sdk.LogInfo, "server error: "+string(details))
	}
}

func init() { sdk.SetPlugin(&plugin{value: "weft"}) }

func main() {}
