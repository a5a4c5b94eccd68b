package kube_test

import (
	"os"
	"testing"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// weft builds ./cmd/weft once for the tests that run it as a process.
var weft = harness.NewBuilder("./cmd/weft")

func TestMain(m *testing.M) { os.Exit(weft.Main(m)) }
