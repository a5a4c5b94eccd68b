package bookinfo

import "embed"

// Config holds the Bookinfo Istio configuration: destination rules, the
// gateway, and the task files the demo suggests (traffic shifting, request
// routing, fault injection). The same files are in examples/bookinfo/config
// for `weft apply -f`.
//
//go:embed config/*.yaml
var Config embed.FS
