package cluster

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	matchv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/matcher/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// errorCodes is a compiled HttpProtocolOptions.outlier_detection
// error_matcher: errorCodes[status] reports whether a response with that
// status is an outlier-detection error (any other response is a success).
type errorCodes [600]bool

// compileErrorMatcher evaluates the matcher for every status 100-599. It
// understands or/and/not/any predicates over response-header matches on
// :status (exact, prefix, suffix, contains, regex, range, present), which
// covers Istio's outlierDetectionHttpErrorCodes; anything else is an error
// wrapping ErrUnsupported.
func compileErrorMatcher(m *matchv3.MatchPredicate) (*errorCodes, error) {
	var out errorCodes
	for code := 100; code < 600; code++ {
		ok, err := evalStatus(m, code)
		if err != nil {
			return nil, err
		}
		out[code] = ok
	}
	return &out, nil
}

func evalStatus(m *matchv3.MatchPredicate, code int) (bool, error) {
	switch r := m.GetRule().(type) {
	case *matchv3.MatchPredicate_AnyMatch:
		return r.AnyMatch, nil
	case *matchv3.MatchPredicate_NotMatch:
		v, err := evalStatus(r.NotMatch, code)
		return !v, err
	case *matchv3.MatchPredicate_OrMatch:
		for _, x := range r.OrMatch.GetRules() {
			v, err := evalStatus(x, code)
			if err != nil || v {
				return v, err
			}
		}
		return false, nil
	case *matchv3.MatchPredicate_AndMatch:
		for _, x := range r.AndMatch.GetRules() {
			v, err := evalStatus(x, code)
			if err != nil || !v {
				return v, err
			}
		}
		return true, nil
	case *matchv3.MatchPredicate_HttpResponseHeadersMatch:
		for _, h := range r.HttpResponseHeadersMatch.GetHeaders() {
			v, err := statusHeaderMatch(h, code)
			if err != nil || !v {
				return v, err
			}
		}
		return true, nil
	}
	return false, fmt.Errorf("outlier_detection error_matcher rule %T: %w", m.GetRule(), ErrUnsupported)
}

func statusHeaderMatch(h *routev3.HeaderMatcher, code int) (bool, error) {
	if h.GetName() != ":status" {
		return false, fmt.Errorf("outlier_detection error_matcher header %q (only :status): %w", h.GetName(), ErrUnsupported)
	}
	s := strconv.Itoa(code)
	var v bool
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch: //nolint:staticcheck // deprecated but valid
		v = s == spec.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch: //nolint:staticcheck // deprecated but valid
		v = strings.HasPrefix(s, spec.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch: //nolint:staticcheck // deprecated but valid
		v = strings.HasSuffix(s, spec.SuffixMatch)
	case *routev3.HeaderMatcher_RangeMatch:
		v = int64(code) >= spec.RangeMatch.GetStart() && int64(code) < spec.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		v = spec.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		sm := spec.StringMatch
		switch {
		case sm.GetExact() != "":
			v = s == sm.GetExact()
		case sm.GetPrefix() != "":
			v = strings.HasPrefix(s, sm.GetPrefix())
		case sm.GetSuffix() != "":
			v = strings.HasSuffix(s, sm.GetSuffix())
		case sm.GetContains() != "":
			v = strings.Contains(s, sm.GetContains())
		case sm.GetSafeRegex() != nil:
			re, err := regexp.Compile("^(?:" + sm.GetSafeRegex().GetRegex() + ")$")
			if err != nil {
				return false, fmt.Errorf("outlier_detection error_matcher regex: %w", err)
			}
			v = re.MatchString(s)
		default:
			return false, fmt.Errorf("outlier_detection error_matcher string match %v: %w", sm, ErrUnsupported)
		}
	default:
		return false, fmt.Errorf("outlier_detection error_matcher header match %T: %w", spec, ErrUnsupported)
	}
	return v != h.GetInvertMatch(), nil
}
