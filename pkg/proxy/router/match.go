package router

import (
	"net"
	"strings"
)

// VirtualHostFor finds the virtual host for a Host header: exact domain
// (with, then without, the port), then the longest "*suffix", then the
// longest "prefix*", then "*". Host must be lower case.
func (t *Table) VirtualHostFor(host string) *VirtualHost {
	if vh := t.lookup(host); vh != nil {
		return vh
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		if vh := t.lookup(h); vh != nil {
			return vh
		}
	}
	return t.any
}

func (t *Table) lookup(host string) *VirtualHost {
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for _, p := range t.suffixes {
		if len(host) > len(p.s) && strings.HasSuffix(host, p.s) {
			return p.vh
		}
	}
	for _, p := range t.prefixes {
		if len(host) > len(p.s) && strings.HasPrefix(host, p.s) {
			return p.vh
		}
	}
	return nil
}

// Match returns the virtual host and first matching route, or nils.
func (t *Table) Match(r *Request) (*VirtualHost, *Route) {
	vh := t.VirtualHostFor(r.Host)
	if vh == nil {
		return nil, nil
	}
	for _, rt := range vh.Routes {
		if rt.Matches(r) {
			return vh, rt
		}
	}
	return vh, nil
}

// Matches reports whether the route's match applies to r.
func (rt *Route) Matches(r *Request) bool {
	p := r.Path
	switch {
	case rt.regex != nil:
		if !rt.regex.MatchString(p) {
			return false
		}
	case rt.path != "":
		if rt.caseInsensitive {
			if !strings.EqualFold(p, rt.path) {
				return false
			}
		} else if p != rt.path {
			return false
		}
	case rt.sepPrefix != "":
		if !strings.HasPrefix(p, rt.sepPrefix) || (len(p) > len(rt.sepPrefix) && p[len(rt.sepPrefix)] != '/') {
			return false
		}
	default:
		if rt.caseInsensitive {
			if len(p) < len(rt.prefix) || !strings.EqualFold(p[:len(rt.prefix)], rt.prefix) {
				return false
			}
		} else if !strings.HasPrefix(p, rt.prefix) {
			return false
		}
	}
	for i := range rt.headers {
		if !rt.headers[i].matches(r) {
			return false
		}
	}
	for i := range rt.queries {
		if !rt.queries[i].matches(r.RawQuery) {
			return false
		}
	}
	return true
}

// PickCluster chooses a weighted cluster; n is a random number.
func (f *Forward) PickCluster(n uint32) *WeightedCluster {
	if len(f.Clusters) == 1 {
		return &f.Clusters[0]
	}
	x := n % f.totalWeight
	for i := range f.Clusters {
		if x < f.Clusters[i].Weight {
			return &f.Clusters[i]
		}
		x -= f.Clusters[i].Weight
	}
	return &f.Clusters[len(f.Clusters)-1]
}

// RewritePath applies prefix_rewrite or regex_rewrite to path.
func (f *Forward) RewritePath(path string) string {
	switch {
	case f.PrefixRewrite != "" && strings.HasPrefix(path, f.matchPfx):
		return f.PrefixRewrite + path[len(f.matchPfx):]
	case f.RegexRewrite != nil:
		return f.RegexRewrite.ReplaceAllString(path, f.RegexSubst)
	}
	return path
}

// Location computes the redirect target for a request.
func (rd *Redirect) Location(r *Request) string {
	scheme := r.Scheme
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	host := r.Host
	if rd.Host != "" {
		host = rd.Host
	}
	if rd.Port != 0 {
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			h = host
		}
		host = net.JoinHostPort(h, itoa(int(rd.Port)))
	}
	path := r.Path
	switch {
	case rd.Path != "":
		path = rd.Path
	case rd.PrefixRewrite != "" && strings.HasPrefix(path, rd.matchPfx):
		path = rd.PrefixRewrite + path[len(rd.matchPfx):]
	}
	loc := scheme + "://" + host + path
	if r.RawQuery != "" && !rd.StripQuery && !strings.Contains(path, "?") {
		loc += "?" + r.RawQuery
	}
	return loc
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
