// Package e2e holds Weft's end-to-end tests: they build the weft binary and
// run it as real processes on 127.0.0.1. They are skipped under -short.
// Shared helpers live in the harness subpackage; tests in this package get
// the binary with weft.Binary(t).
package e2e

import (
	"os"
	"testing"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// weft builds ./cmd/weft once for every test of this package.
var weft = harness.NewBuilder("./cmd/weft")

func TestMain(m *testing.M) { os.Exit(weft.Main(m)) }
