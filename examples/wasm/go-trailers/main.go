//go:build wasip1

// Command go-trailers is a test plugin for trailers: it holds the request
// body to its end so the request trailers arrive before the request goes
// upstream; a trailer "x-verdict: deny" gets a local 403, any other value
// is copied into the request header "x-trailer-verdict". Response trailers
// get "x-wasm-trailer: N" with the number of trailers the response had.
package main

import (
	"strconv"

	"github.com/weftmesh/weft/examples/wasm/sdk"
)

type plugin struct{}

func (plugin) OnConfigure([]byte) bool               { return true }
func (plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{} }

type stream struct{ sdk.DefaultHTTPContext }

func (s *stream) OnRequestBody(_ int, eos bool) sdk.Action {
	if !eos {
		return sdk.Pause
	}
	return sdk.Continue
}

func (s *stream) OnRequestTrailers(int) sdk.Action {
	for _, t := range sdk.RequestTrailers() {
		if t[0] != "x-verdict" {
			continue
		}
		if t[1] == "deny" {
			sdk.SendLocalResponse(403, "trailer_verdict", []byte("denied by trailer\n"), nil)
			return sdk.Pause
		}
		sdk.SetRequestHeader("x-trailer-verdict", t[1])
	}
	return sdk.Continue
}

func (s *stream) OnResponseTrailers(n int) sdk.Action {
	sdk.AddResponseTrailer("x-wasm-trailer", strconv.Itoa(n))
	return sdk.Continue
}

func init() { sdk.SetPlugin(plugin{}) }

func main() {}
