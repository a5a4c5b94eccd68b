package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/store"
)

// Client talks to the admin API. The zero value is not usable: set BaseURL.
// It is safe for concurrent use.
type Client struct {
	// BaseURL is the API root, e.g. "http://127.0.0.1:8080"; a missing
	// scheme means http.
	BaseURL string
	// HTTP sends the requests. Nil uses http.DefaultClient. Leave its
	// Timeout zero if you use Watch (bound calls with ctx instead).
	HTTP *http.Client
}

// APIError is a non-2xx answer of the admin API.
type APIError struct {
	StatusCode int
	// Message is the server's "error" field (or the HTTP status text).
	Message string
	// Reason is one of the Reason* constants, when the server gave one.
	Reason string
	// Details lists every problem, e.g. each validation error with its
	// file:line and field path.
	Details []string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if len(e.Details) == 0 {
		return msg
	}
	return msg + ":\n  " + strings.Join(e.Details, "\n  ")
}

// Is maps the error's reason back to the store's sentinel errors, so callers
// can test errors.Is(err, store.ErrNotFound) on both sides of the API.
func (e *APIError) Is(target error) bool {
	switch target {
	case store.ErrNotFound:
		return e.Reason == ReasonNotFound || (e.Reason == "" && e.StatusCode == http.StatusNotFound)
	case store.ErrConflict:
		return e.Reason == ReasonConflict || (e.Reason == "" && e.StatusCode == http.StatusConflict)
	case store.ErrAlreadyExists:
		return e.Reason == ReasonAlreadyExists
	case store.ErrReadOnly:
		return e.Reason == ReasonReadOnly
	case store.ErrCompacted:
		return e.Reason == ReasonCompacted
	}
	return false
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) url(path string, q url.Values) string {
	base := strings.TrimRight(c.BaseURL, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// do sends a request and decodes a JSON answer into out (when non-nil).
func (c *Client) do(ctx context.Context, method, u string, body io.Reader, contentType string, out any) error {
	resp, err := c.send(ctx, method, u, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, u, err)
	}
	return nil
}

// send returns the response of a 2xx answer (the caller closes its body) or
// an *APIError.
func (c *Client) send(ctx context.Context, method, u string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("build request %s %s: %w", method, u, err)
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("contact control plane at %s: %w", c.BaseURL, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	ae := &APIError{StatusCode: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
		ae.Message, ae.Reason, ae.Details = eb.Error, eb.Reason, eb.Details
	} else {
		ae.Message = fmt.Sprintf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(data)))
	}
	return nil, ae
}

// List returns the resources of kind ("" for every kind) in namespace (""
// for all) and the revision they were read at.
func (c *Client) List(ctx context.Context, kind, namespace string) (*ListResponse, error) {
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if namespace != "" {
		q.Set("namespace", namespace)
	}
	var lr ListResponse
	if err := c.do(ctx, http.MethodGet, c.url("/api/v1/resources", q), nil, "", &lr); err != nil {
		return nil, err
	}
	return &lr, nil
}

func keyPath(k config.Key) string {
	return "/api/v1/resources/" + url.PathEscape(k.Kind) + "/" + url.PathEscape(k.Namespace) + "/" + url.PathEscape(k.Name)
}

// Get returns one resource; a missing one is an error matching
// store.ErrNotFound.
func (c *Client) Get(ctx context.Context, k config.Key) (*config.Resource, error) {
	var r config.Resource
	if err := c.do(ctx, http.MethodGet, c.url(keyPath(k), nil), nil, "", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Apply validates and stores rs in one transaction (or, with dryRun, only
// reports what would happen).
func (c *Client) Apply(ctx context.Context, rs []*config.Resource, dryRun bool) (*ApplyResponse, error) {
	body, err := json.Marshal(rs)
	if err != nil {
		return nil, fmt.Errorf("encode resources: %w", err)
	}
	return c.ApplyRaw(ctx, body, "application/json", dryRun)
}

// ApplyRaw is Apply for a body the caller has encoded: a JSON array of
// objects, a JSON List, or multi-document YAML (contentType
// "application/yaml").
func (c *Client) ApplyRaw(ctx context.Context, body []byte, contentType string, dryRun bool) (*ApplyResponse, error) {
	q := url.Values{"dryRun": {strconv.FormatBool(dryRun)}}
	var ar ApplyResponse
	if err := c.do(ctx, http.MethodPost, c.url("/api/v1/apply", q), bytes.NewReader(body), contentType, &ar); err != nil {
		return nil, err
	}
	return &ar, nil
}

// Delete removes a resource and returns its last state. A non-empty
// resourceVersion is a precondition (store.ErrConflict if it does not hold).
func (c *Client) Delete(ctx context.Context, k config.Key, resourceVersion string) (*config.Resource, error) {
	q := url.Values{}
	if resourceVersion != "" {
		q.Set("resourceVersion", resourceVersion)
	}
	var r config.Resource
	if err := c.do(ctx, http.MethodDelete, c.url(keyPath(k), q), nil, "", &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Watch streams changes with revision > from (0: from now) until ctx ends or
// the server goes away; the channel is then closed. The returned error
// function reports why the stream ended (nil after ctx ended); call it after
// the channel is closed.
func (c *Client) Watch(ctx context.Context, from int64) (<-chan WatchEvent, func() error, error) {
	q := url.Values{"from": {strconv.FormatInt(from, 10)}}
	resp, err := c.send(ctx, http.MethodGet, c.url("/api/v1/watch", q), nil, "")
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan WatchEvent)
	var streamErr error
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), MaxBodyBytes)
		for sc.Scan() {
			var ev WatchEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				streamErr = fmt.Errorf("watch: decode event: %w", err)
				return
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil && ctx.Err() == nil {
			streamErr = fmt.Errorf("watch: %w", err)
		} else if err == nil && ctx.Err() == nil {
			streamErr = errors.New("watch: server closed the stream")
		}
	}()
	return ch, func() error { return streamErr }, nil
}

// WaitForSync blocks until every connected proxy has acknowledged config
// computed from store revision rev (GET /api/v1/sync, served by the xDS
// server). A proxy's NACK or the timeout is returned as an *APIError whose
// message names the proxies.
func (c *Client) WaitForSync(ctx context.Context, rev int64, timeout time.Duration) error {
	q := url.Values{"revision": {strconv.FormatInt(rev, 10)}, "timeout": {timeout.String()}}
	return c.do(ctx, http.MethodGet, c.url("/api/v1/sync", q), nil, "", nil)
}
