package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// tick is what one scrape round learned: per-edge deltas since the round before.
type tick struct {
	At    time.Time
	Dur   time.Duration // time since the previous round
	Edges map[edgeKey]*edgeStats
}

// proxyState is the scraper's memory of one proxy.
type proxyState struct {
	info       ProxyInfo
	last       map[string]rawSample
	lastScrape time.Time
	lastErr    string
	series     int
}

// ScrapeStatus is the outcome of the latest scrape of one proxy.
type ScrapeStatus struct {
	LastScrape time.Time `json:"lastScrape,omitzero"`
	Error      string    `json:"error,omitempty"`
	Series     int       `json:"series"`
}

// ErrorEvent is a group of non-2xx responses on one edge seen in one scrape round.
type ErrorEvent struct {
	Time           time.Time `json:"time"`
	Source         string    `json:"source"` // graph node ID
	Destination    string    `json:"destination"`
	SourceWorkload string    `json:"sourceWorkload"`
	SourceNS       string    `json:"sourceNamespace"`
	DestService    string    `json:"destinationService"`
	DestWorkload   string    `json:"destinationWorkload"`
	DestNS         string    `json:"destinationNamespace"`
	Code           string    `json:"code"`
	Flags          string    `json:"flags"`
	Count          float64   `json:"count"`
}

// history is the ring buffer of scrape rounds plus per-proxy scrape state.
type history struct {
	mu      sync.RWMutex
	ticks   []tick // ring, oldest at start once full
	next    int
	full    bool
	proxies map[string]*proxyState
	lastAt  time.Time
	errors  []ErrorEvent // newest last, capped
	maxErrs int
}

func newHistory(capacity, maxErrs int) *history {
	return &history{ticks: make([]tick, capacity), proxies: map[string]*proxyState{}, maxErrs: maxErrs}
}

// ordered returns the stored ticks oldest first. Callers hold h.mu.
func (h *history) ordered() []tick {
	if !h.full {
		return h.ticks[:h.next]
	}
	out := make([]tick, 0, len(h.ticks))
	out = append(out, h.ticks[h.next:]...)
	return append(out, h.ticks[:h.next]...)
}

func (h *history) push(t tick) {
	h.ticks[h.next] = t
	h.next++
	if h.next == len(h.ticks) {
		h.next = 0
		h.full = true
	}
}

// scrapeResult is one proxy's parsed metrics or the reason there are none.
type scrapeResult struct {
	id      string
	info    ProxyInfo
	samples map[string]rawSample
	err     error
}

// scrapeOnce fetches every proxy's metrics, turns them into per-edge deltas
// and records one tick.
func (d *Dashboard) scrapeOnce(ctx context.Context) error {
	proxies, err := d.opts.Sources.Proxies(ctx)
	if err != nil {
		return fmt.Errorf("list proxies: %w", err)
	}
	results := make([]scrapeResult, len(proxies))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, p := range proxies {
		results[i].id, results[i].info = p.ID, p
		if p.Disconnected {
			results[i].err = errDisconnected
			continue
		}
		if p.MetricsAddress == "" {
			results[i].err = errNoMetricsAddress
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				results[i].err = ctx.Err()
				return
			}
			results[i].samples, results[i].err = d.fetch(ctx, p.MetricsAddress)
		}()
	}
	wg.Wait()
	d.record(d.opts.Clock(), results)
	return nil
}

var (
	errNoMetricsAddress = errors.New("proxy announced no METRICS_ADDRESS")
	errDisconnected     = errors.New("proxy is not connected to the control plane")
)

func (d *Dashboard) fetch(ctx context.Context, addr string) (map[string]rawSample, error) {
	u := addr
	if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	if !strings.Contains(strings.SplitN(u, "://", 2)[1], "/") {
		u += "/stats/prometheus"
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.ScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", u, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scrape %s: %s", u, resp.Status)
	}
	samples, err := parseIstioMetrics(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", u, err)
	}
	return samples, nil
}

// record turns scrape results into one tick: the delta of every series since
// that proxy's previous scrape. The first scrape of a proxy is its baseline
// and contributes nothing; a series that appears later started at zero; a
// counter that went down was reset and counts from zero.
func (d *Dashboard) record(now time.Time, results []scrapeResult) {
	h := d.hist
	h.mu.Lock()
	defer h.mu.Unlock()

	// Per edge, prefer what the client side reported (it sees failures the
	// server never does, like UH/UF); use the server side's numbers for
	// edges whose client has no proxy.
	type sides struct {
		src, dst   edgeStats
		srcPresent bool
	}
	edges := map[edgeKey]*sides{}
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.id] = true
		st := h.proxies[r.id]
		if st == nil {
			st = &proxyState{}
			h.proxies[r.id] = st
		}
		st.lastScrape = now
		st.info = r.info
		if r.err != nil {
			st.lastErr = r.err.Error()
			continue
		}
		st.lastErr = ""
		st.series = len(r.samples)
		baseline := st.last == nil
		for id, s := range r.samples {
			e := edges[s.edge]
			if e == nil {
				e = &sides{}
				edges[s.edge] = e
			}
			if s.source {
				e.srcPresent = true
			}
			if baseline {
				continue
			}
			delta := s.value
			if prev, ok := st.last[id]; ok && s.value >= prev.value {
				delta = s.value - prev.value
			}
			if delta == 0 && s.kind != kindBucket {
				continue // empty buckets still matter: they are interpolation bounds
			}
			if s.source {
				e.src.addSample(s, delta)
			} else {
				e.dst.addSample(s, delta)
			}
		}
		st.last = r.samples
	}
	for id := range h.proxies {
		if !seen[id] {
			delete(h.proxies, id) // disconnected: forget its baseline
		}
	}
	// The first round only sets baselines, so it covers no time.
	var dur time.Duration
	if !h.lastAt.IsZero() && now.After(h.lastAt) {
		dur = now.Sub(h.lastAt)
	}
	h.lastAt = now
	t := tick{At: now, Dur: dur, Edges: make(map[edgeKey]*edgeStats, len(edges))}
	for k, e := range edges {
		st := e.dst
		if e.srcPresent {
			st = e.src
			if st.SecKnown == 0 {
				// Source reporters label the policy "unknown": the
				// destination side says whether it was mutual TLS.
				st.MTLS, st.SecKnown = e.dst.MTLS, e.dst.SecKnown
			}
		}
		s := st
		t.Edges[k] = &s
	}
	h.push(t)

	idx := newNodeIndex(h.ordered())
	var events []ErrorEvent
	for k, st := range t.Edges {
		for cf, n := range st.NonOK {
			if n <= 0 {
				continue
			}
			events = append(events, ErrorEvent{
				Time: now, Source: idx.sourceNode(k).ID, Destination: serviceNodeID(k),
				SourceWorkload: k.SrcWorkload, SourceNS: k.SrcNS,
				DestService: k.DstService, DestWorkload: k.DstWorkload, DestNS: k.DstNS,
				Code: cf.Code, Flags: cf.Flags, Count: n,
			})
		}
	}
	sort.Slice(events, func(i, j int) bool {
		a, b := events[i], events[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Code+a.Flags < b.Code+b.Flags
	})
	h.errors = append(h.errors, events...)
	if over := len(h.errors) - h.maxErrs; over > 0 {
		h.errors = append([]ErrorEvent(nil), h.errors[over:]...)
	}
}
