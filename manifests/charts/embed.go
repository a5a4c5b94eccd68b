// Package charts embeds Weft's Helm chart (manifests/charts/weft) so `weft
// install` and `weft manifest generate` render the same chart `helm
// install` uses.
package charts

import "embed"

// FS holds the chart directory "weft".
//
//go:embed all:weft
var FS embed.FS
