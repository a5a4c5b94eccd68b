// Package validation checks Istio resources against Istio's rules, beyond
// what the schema alone enforces, and reports every problem with its field
// path (and line, for resources decoded from text). It is pure: no I/O
// besides ReadSources, no global state.
package validation

import (
	"github.com/weftmesh/weft/pkg/config"
)

// Validate checks one resource and returns its errors and warnings.
func Validate(r *config.Resource) config.ErrorList {
	if r == nil || r.Spec == nil {
		return nil
	}
	v := &validator{r: r}
	if fn, ok := kindValidators[r.Kind]; ok {
		fn(v)
	}
	return v.errs
}

// validator collects the problems of one resource.
type validator struct {
	r    *config.Resource
	errs config.ErrorList
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, v.r.FieldError(path, false, format, args...))
}

func (v *validator) warnf(path, format string, args ...any) {
	v.errs = append(v.errs, v.r.FieldError(path, true, format, args...))
}

var kindValidators = map[string]func(*validator){}
