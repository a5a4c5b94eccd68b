package authz_test

import (
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/weftmesh/weft/pkg/proxy/filter/pathnorm"
	"github.com/weftmesh/weft/pkg/proxy/filter/rbac"
)

const denyAdmin = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin", "/admin/*"]}}]
`

const allowPublic = `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-public, namespace: default}
spec:
  rules:
  - to: [{operation: {paths: ["/public/*"]}}]
`

// bypassPaths are request targets as they appear on the request line.
var bypassPaths = []string{
	"/admin", "/admin/", "/admin/x", "//admin", "///admin/", "/./admin", "/admin/.",
	"/admin/../admin", "/public/../admin", "/public/..%2Fadmin", "/public/%2e%2e/admin",
	"/public/%2E%2E%2Fadmin", "/public/.%2e/admin", "/%61dmin", "/%61%64%6d%69%6e",
	"/adm%69n/", "/ADMIN", "/Admin", "/admin?x", "/admin?x=/public/", "/admin#",
	"/admin#/public/x", "/admin%2F", "%2Fadmin", "/admin%2f..%2fadmin", "/public%2F..%2Fadmin",
	"/public\\..\\admin", "/public/..\\admin", "/public/%5C..%5Cadmin", "/admin;x",
	"/admin%00", "/admin%", "/admin%zz", "/public//../admin", "/public/./../admin",
	"/public/x/../../admin", "/public/%2e%2e%2f%2e%2e%2fadmin", "/public/..%252Fadmin",
	"/%2e/admin", "/admin/%2e", "/%2e%2e/admin", "/admin%2Fsecret", "\\admin",
	"/public/%2E%2e/%61dmin/", "/public/x/..//admin",
}

// backendView is how an upstream that decodes percent-escapes and cleans
// dot segments (e.g. a Go server) reads the forwarded path, under Istio's
// documented assumptions per mode: with BASE and MERGE_SLASHES backends keep
// %2F and %5C encoded; with BASE they also keep "//" as an empty segment
// (backends that merge slashes need MERGE_SLASHES, as Istio documents).
func backendView(forwarded string, mode pathnorm.Mode) string {
	decodeSlashes := mode == pathnorm.DecodeAndMergeSlashes
	var b strings.Builder
	for i := 0; i < len(forwarded); i++ {
		c := forwarded[i]
		if c == '%' && i+2 < len(forwarded) {
			if n, err := strconv.ParseUint(forwarded[i+1:i+3], 16, 8); err == nil {
				if (n == '/' || n == '\\') && !decodeSlashes {
					b.WriteString(forwarded[i : i+3])
				} else {
					b.WriteByte(byte(n))
				}
				i += 2
				continue
			}
		}
		b.WriteByte(c)
	}
	v := strings.ReplaceAll(b.String(), "\\", "/")
	if !strings.HasPrefix(v, "/") {
		v = "/" + v
	}
	if mode != pathnorm.Base {
		return path.Clean(v)
	}
	// Resolve dot segments, keeping empty ones.
	var out []string
	for _, seg := range strings.Split(v[1:], "/") {
		switch seg {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isAdmin(view string) bool { return view == "/admin" || strings.HasPrefix(view, "/admin/") }

func TestPathBypass(t *testing.T) {
	if len(bypassPaths) < 30 {
		t.Fatalf("only %d crafted paths", len(bypassPaths))
	}
	configs := map[string]string{"deny-only": denyAdmin, "deny+allow": denyAdmin + allowPublic}
	modes := []pathnorm.Mode{pathnorm.Base, pathnorm.MergeSlashes, pathnorm.DecodeAndMergeSlashes}
	for cname, y := range configs {
		e, _ := engineFor(t, y, productpage())
		for _, mode := range modes {
			bypasses, denied, rejected := 0, 0, 0
			for _, raw := range bypassPaths {
				norm, err := pathnorm.Normalize(raw, mode)
				if err != nil {
					rejected++ // 400 before RBAC
					continue
				}
				p, q, _ := strings.Cut(norm, "?")
				d := e.Check(&rbac.Request{Method: "GET", Host: "productpage", Path: p, RawQuery: q})
				if !d.Allowed {
					denied++
				}
				view := backendView(p, mode)
				if isAdmin(view) && d.Allowed {
					bypasses++
					t.Errorf("%s %v: BYPASS %q -> forwarded %q (backend sees %q) allowed by %q", cname, mode, raw, p, view, d.Policy)
				}
			}
			t.Logf("%s %v: %d paths, %d rejected (400), %d denied (403), %d bypasses", cname, mode, len(bypassPaths), rejected, denied, bypasses)
		}
	}
}

// Positive controls: the policies are not simply denying everything, and
// matching is case-sensitive like Istio's.
func TestPathBypassControls(t *testing.T) {
	e, _ := engineFor(t, denyAdmin+allowPublic, productpage())
	for _, tt := range []struct {
		raw   string
		allow bool
	}{
		{"/public/index.html", true},
		{"/public/a/../b", true},
		{"/%70ublic/x", true},
		{"/admin", false},
		{"/private", false},
	} {
		norm, err := pathnorm.Normalize(tt.raw, pathnorm.Base)
		if err != nil {
			t.Fatal(err)
		}
		if d := e.Check(&rbac.Request{Method: "GET", Path: norm}); d.Allowed != tt.allow {
			t.Errorf("%q (normalized %q): allowed=%v want %v", tt.raw, norm, d.Allowed, tt.allow)
		}
	}
	deny, _ := engineFor(t, denyAdmin, productpage())
	for _, p := range []string{"/ADMIN", "/Admin/x", "/administrator", "/admin;x"} {
		if d := deny.Check(&rbac.Request{Method: "GET", Path: p}); !d.Allowed {
			t.Errorf("%q denied; want allowed (not /admin; case-sensitive)", p)
		}
	}
}
