// Package xconnect turns on RFC 8441 extended CONNECT in the HTTP/2
// servers of net/http and golang.org/x/net/http2 (SETTINGS_ENABLE_CONNECT_PROTOCOL
// advertised, `:protocol` requests passed to the handler), which both keep
// off unless the environment holds GODEBUG=http2xconnect=1 when their
// package initialisers run. There is no API for it: the switch is read
// once, by each package's init, from the environment.
//
// This package's init puts http2xconnect=1 into GODEBUG. It imports only
// os and strings, so by the Go specification's initialisation order
// (packages sorted by import path, the first whose imports are all
// initialised goes next) it runs before net/http's and x/net/http2's,
// whose paths sort after github.com/... and which depend on os themselves.
// Restore, called from an init of a package importing net/http (so after
// it), puts the environment back, so child processes (the application
// `weft proxy -- CMD` starts) do not inherit the switch.
//
// An explicit http2xconnect setting in GODEBUG is left as it is.
package xconnect

import (
	"os"
	"strings"
)

const setting = "http2xconnect=1"

var (
	prev    string
	hadPrev bool
	changed bool
)

func init() {
	prev, hadPrev = os.LookupEnv("GODEBUG")
	if strings.Contains(prev, "http2xconnect=") {
		return // the operator's choice
	}
	v := setting
	if prev != "" {
		v = prev + "," + setting
	}
	if os.Setenv("GODEBUG", v) == nil {
		changed = true
	}
}

// Restore puts GODEBUG back as it was before this package's init. It is
// idempotent; call it from an init function of a package that imports
// net/http.
func Restore() {
	if !changed {
		return
	}
	changed = false
	if hadPrev {
		_ = os.Setenv("GODEBUG", prev)
	} else {
		_ = os.Unsetenv("GODEBUG")
	}
}
