package extauthz

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"

	"github.com/weftmesh/weft/pkg/proxy/cluster"
)

// maxBody bounds the denied body read from the service.
const maxBody = 1 << 20

type httpChecker struct {
	base          *url.URL
	prefix        string
	client        *http.Client
	allowed       headerList
	add           http.Header
	upstream      headerList
	upstreamAdd   headerList
	client403Hdrs headerList
	clientOKHdrs  headerList
	timeout       time.Duration
	// cluster, with clusters set, sends checks through the proxy's cluster.
	cluster  string
	clusters func() *cluster.Set
}

func newHTTPChecker(s *extauthzv3.HttpService, allowed headerList, o *options) (*httpChecker, error) {
	u, err := url.Parse(s.GetServerUri().GetUri())
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("server_uri.uri %q: not an absolute URL", s.GetServerUri().GetUri())
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("server_uri.uri %q: only http is supported", u)
	}
	c := &httpChecker{base: u, prefix: s.GetPathPrefix(), add: headerValues(s.GetAuthorizationRequest().GetHeadersToAdd())}
	reqAllowed, err := compileList(s.GetAuthorizationRequest().GetAllowedHeaders())
	if err != nil {
		return nil, fmt.Errorf("authorization_request.allowed_headers: %w", err)
	}
	c.allowed = append(append(headerList{}, allowed...), reqAllowed...)
	resp := s.GetAuthorizationResponse()
	if c.upstream, err = compileList(resp.GetAllowedUpstreamHeaders()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_upstream_headers: %w", err)
	}
	if c.upstreamAdd, err = compileList(resp.GetAllowedUpstreamHeadersToAppend()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_upstream_headers_to_append: %w", err)
	}
	if c.client403Hdrs, err = compileList(resp.GetAllowedClientHeaders()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_client_headers: %w", err)
	}
	if c.clientOKHdrs, err = compileList(resp.GetAllowedClientHeadersOnSuccess()); err != nil {
		return nil, fmt.Errorf("authorization_response.allowed_client_headers_on_success: %w", err)
	}
	c.timeout = timeoutOf(s.GetServerUri().GetTimeout(), s.GetServerUri().GetTimeout() != nil)
	if cl := s.GetServerUri().GetCluster(); cl != "" && o.clusters != nil {
		c.cluster, c.clusters = cl, o.clusters
		return c, nil
	}
	c.client = &http.Client{
		Transport:     &http.Transport{DialContext: o.dial, MaxIdleConnsPerHost: 16},
		Timeout:       c.timeout,
		CheckRedirect: noRedirect,
	}
	return c, nil
}

// noRedirect: the service's redirect is its answer, not something to follow.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// do sends the check request, through the cluster when configured: a host
// from its load balancer, its connection pool and transport socket, the
// outcome reported to its outlier detection.
func (c *httpChecker) do(req *http.Request) (*http.Response, error) {
	if c.cluster == "" {
		return c.client.Do(req)
	}
	cl, h, err := pickHost(c.clusters, c.cluster)
	if err != nil {
		return nil, err
	}
	done := h.Begin()
	defer done()
	req.URL.Host = h.Addr
	resp, err := (&http.Client{Transport: cl.Transport, Timeout: c.timeout, CheckRedirect: noRedirect}).Do(req)
	if err != nil {
		cl.Report(h, 0)
		return nil, err
	}
	cl.Report(h, resp.StatusCode)
	return resp, nil
}

// alwaysSent are the request headers Envoy's HTTP ext_authz always sends.
var alwaysSent = map[string]bool{"authorization": true}

func (c *httpChecker) check(ctx context.Context, r *http.Request, body checkBody) (*decision, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + c.prefix + r.URL.Path
	u.RawPath = ""
	u.RawQuery = r.URL.RawQuery
	var rb io.Reader = http.NoBody
	if len(body.data) > 0 {
		rb = bytes.NewReader(body.data)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), rb)
	if err != nil {
		return nil, err
	}
	req.Host = r.Host
	for k, vs := range r.Header {
		if lk := strings.ToLower(k); alwaysSent[lk] || c.allowed.match(lk) {
			req.Header[k] = vs
		}
	}
	for k, vs := range c.add {
		req.Header[k] = vs
	}
	if body.on {
		req.Header.Set(partialBodyHeader, strconv.FormatBool(body.partial))
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, fmt.Errorf("ext_authz http %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		d := &decision{allowed: true, set: http.Header{}, add: http.Header{}, header: http.Header{}}
		for k, vs := range resp.Header {
			lk := strings.ToLower(k)
			switch {
			case c.upstream.match(lk):
				d.set[k] = vs
			case c.upstreamAdd.match(lk):
				d.add[k] = vs
			}
			if c.clientOKHdrs.match(lk) && !skipClient[lk] {
				d.header[k] = vs
			}
		}
		return d, nil
	}
	if resp.StatusCode >= 500 {
		// As Envoy: a 5xx from the service is an error (status_on_error or
		// failure_mode_allow), not a denial to pass on.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
		return nil, fmt.Errorf("ext_authz http %s: service answered %d", c.base.Host, resp.StatusCode)
	}
	denied, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("ext_authz http %s: reading the denial: %w", c.base.Host, err)
	}
	d := &decision{status: resp.StatusCode, header: http.Header{}, body: denied}
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		if skipClient[lk] {
			continue
		}
		if len(c.client403Hdrs) == 0 || c.client403Hdrs.match(lk) {
			d.header[k] = vs
		}
	}
	return d, nil
}

// skipClient are the service's response headers never copied to the client.
var skipClient = map[string]bool{"content-length": true, "connection": true, "transfer-encoding": true, "date": true, "keep-alive": true}
