//go:build wasip1

// Command go-callout is a proxy-wasm plugin that authorizes requests with
// an HTTP callout: it pauses each request, sends "GET /check" with the
// request's "authorization" header to the proxy cluster named by the
// configuration, and resumes the request with "x-auth-user" set from the
// check response's "x-user" header when the check answers 200; any other
// answer (or a failed or timed-out call) gets a local 403 with the check's
// body.
package main

import "github.com/weftmesh/weft/examples/wasm/sdk"

type plugin struct{ cluster string }

func (p *plugin) OnConfigure(cfg []byte) bool {
	if len(cfg) == 0 {
		sdk.Log(sdk.LogError, "configuration must name the auth cluster")
		return false
	}
	p.cluster = string(cfg)
	return true
}

func (p *plugin) NewHTTPContext(uint32) sdk.HTTPContext { return &stream{p: p} }

type stream struct {
	sdk.DefaultHTTPContext
	p *plugin
}

func (s *stream) OnRequestHeaders(int, bool) sdk.Action {
	auth, _ := sdk.RequestHeader("authorization")
	hs := [][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "auth"}, {"authorization", auth}}
	if !sdk.DispatchHTTPCall(s.p.cluster, hs, nil, 2000, s.onCheck) {
		sdk.SendLocalResponse(503, "auth_callout_refused", []byte("auth unavailable\n"), nil)
		return sdk.Pause
	}
	return sdk.Pause
}

func (s *stream) onCheck(numHeaders, bodySize, _ int) {
	status, user := "", ""
	for _, h := range sdk.HTTPCallResponseHeaders() {
		switch h[0] {
		case ":status":
			status = h[1]
		case "x-user":
			user = h[1]
		}
	}
	if status != "200" {
		body := sdk.HTTPCallResponseBody(bodySize)
		if numHeaders == 0 {
			body = []byte("auth check failed\n")
		}
		sdk.SendLocalResponse(403, "auth_denied", body, [][2]string{{"x-auth-status", status}})
		return
	}
	sdk.SetRequestHeader("x-auth-user", user)
	sdk.ContinueRequest()
}

func init() { sdk.SetPlugin(&plugin{}) }

func main() {}
