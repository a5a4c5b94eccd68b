// Package mesh runs `weft control-plane --kubeconfig` against a real etcd
// and kube-apiserver, with `weft proxy` processes standing in for the pods
// (no kubelet exists here): Services and EndpointSlices created through the
// API server reach the proxies over EDS, and proxies get their workload
// certificates with projected service-account tokens (TokenReview).
package mesh

import (
	"os"
	"testing"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// weft builds ./cmd/weft once for every test of this package.
var weft = harness.NewBuilder("./cmd/weft")

func TestMain(m *testing.M) { os.Exit(weft.Main(m)) }
