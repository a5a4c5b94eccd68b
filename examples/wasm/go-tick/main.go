//go:build wasip1

// Command go-tick is a proxy-wasm plugin with a timer: every tick period
// (the configuration in milliseconds, default 100) the root context counts
// a tick in "wasm_go_tick_ticks_total" and in shared data; requests get
// "x-tick-count: N" with the count so far.
package main

import (
	"strconv"

	"github.com/weftmesh/weft/examples/wasm/sdk"
)

type plugin struct{ ticks uint32 }

func (p *plugin) OnConfigure(cfg []byte) bool {
	ms := uint64(100)
	if len(cfg) > 0 {
		n, err := strconv.ParseUint(string(cfg), 10, 32)
		if err != nil || n == 0 {
			sdk.Log(sdk.LogError, "configuration must be a tick period in milliseconds")
			return false
		}
		ms = n
	}
	p.ticks = sdk.DefineMetric(sdk.Counter, "wasm_go_tick_ticks_total")
	sdk.SetTickPeriod(uint32(ms))
	return true
}

func (p *plugin) OnTick() {
	sdk.IncrementMetric(p.ticks, 1)
	for { // CAS loop: shared data is shared by every VM of the plugin
		v, cas, _ := sdk.SharedData("go-tick.count")
		n, _ := strconv.Atoi(string(v))
		if sdk.SetSharedData("go-tick.count", []byte(strconv.Itoa(n+1)), cas) {
			return
		}
	}
}

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{} }

type stream struct{ sdk.DefaultHTTPContext }

func (s *stream) OnRequestHeaders(int, bool) sdk.Action {
	v, _, ok := sdk.SharedData("go-tick.count")
	if !ok {
		v = []byte("0")
	}
	sdk.SetRequestHeader("x-tick-count", string(v))
	return sdk.Continue
}

func init() { sdk.SetPlugin(&plugin{}) }

func main() {}
