package gatewayapi

import (
	"fmt"
	"regexp"
	"time"
)

// durationRE is the Gateway API Duration format (GEP-2257): one to four
// number+unit pairs, units h, m, s, ms, each number at most 5 digits.
var durationRE = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// ParseDuration parses a Gateway API Duration ("10s", "1h30m", "500ms").
// Go's own syntax is wider (fractions, "us", signs); those are refused as
// the Gateway API's CRD validation refuses them.
func ParseDuration(s string) (time.Duration, error) {
	if !durationRE.MatchString(s) {
		return 0, fmt.Errorf("invalid duration %q: want Gateway API duration syntax such as 10s, 500ms or 1h30m", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return d, nil
}
