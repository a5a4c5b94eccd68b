package dashboard

import (
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/weftmesh/weft/pkg/config"
)

// findChromium returns the path of a Chromium-like browser or "".
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowserGraph drives the real single-page app in headless Chromium
// against a dashboard scraping three fake-but-real metric endpoints.
//
// Set WEFT_DASHBOARD_SCREENSHOT=docs/dashboard.png (relative to the
// repository root) to refresh the committed screenshot.
func TestBrowserGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	chrome := findChromium()
	if chrome == "" {
		t.Skip("chromium is not installed (hack/install-deps.sh installs the Debian chromium package); skipping the browser test")
	}

	pp, reviews, ratings := newFakeProxy(t), newFakeProxy(t), newFakeProxy(t)
	vs, err := config.Decode("reviews.yaml", []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
`))
	if err != nil {
		t.Fatal(err)
	}
	src := &staticSources{
		proxies:   []ProxyInfo{proxyInfo("productpage", pp), proxyInfo("reviews", reviews), proxyInfo("ratings", ratings)},
		resources: vs,
		warnings:  []string{"VirtualService default/reviews: subset v1 is not defined by any DestinationRule"},
	}
	traces := httptest.NewServer(sampleTraces().Handler()) // the control plane's trace read API
	defer traces.Close()
	d, err := New(Options{Sources: src, ScrapeInterval: time.Second, TracesURL: traces.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addrCh := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() { served <- d.ListenAndServe(ctx, "127.0.0.1:0", func(a net.Addr) { addrCh <- a }) }()
	var base string
	select {
	case a := <-addrCh:
		base = "http://" + a.String()
	case err := <-served:
		t.Fatalf("dashboard did not start: %v", err)
	}
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	}()

	// Bookinfo-shaped traffic, advanced four times a second.
	failing := make(chan struct{})
	go func() {
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		fail := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-failing:
				fail, failing = true, nil
			case <-tk.C:
			}
			pp.add(ppReviewsOK, 12, 18)
			pp.add(ppDetailsOK, 8, 4)
			reviews.add(ppReviewsOKDst, 12, 15)
			reviews.add(reviewsRatings, 6, 3)
			ratings.add(call{reporter: "destination", srcApp: "reviews", dstApp: "ratings", code: 200}, 6, 2)
			if fail {
				pp.add(ppReviews503, 6, 420)
			}
		}
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless,
		chromedp.WindowSize(1440, 900), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	if err := chromedp.Do(bctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatalf("navigate: %v", err)
	}
	// The graph shows the four services and their three edges.
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](
		`!!window.weft && weft.cy.nodes().length === 4 && weft.cy.edges().length === 3 &&
		 weft.cy.edges().every(e => e.data('rps') > 0)`,
		chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		state, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`JSON.stringify({weft: !!window.weft,
			nodes: window.weft ? weft.cy.nodes().map(n => n.id()) : null,
			edges: window.weft ? weft.cy.edges().map(e => [e.id(), e.data('rps')]) : null,
			text: document.body.innerText.slice(0, 500)})`))
		t.Fatalf("graph with 4 nodes and 3 busy edges did not appear: %v\n%s", err, state)
	}
	names, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`weft.cy.nodes().map(n => n.data('label').split('\n')[0]).sort()`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names, ","); got != "details,productpage,ratings,reviews" {
		t.Fatalf("graph nodes = %s", got)
	}
	summary, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById('graph-summary').innerText`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"productpage → details", "productpage → reviews", "reviews → ratings"} {
		if !strings.Contains(summary, want) {
			t.Errorf("graph summary lacks %q:\n%s", want, summary)
		}
	}
	if !strings.Contains(edgeText(t, bctx, "productpage → details"), "mTLS") || strings.Contains(edgeText(t, bctx, "reviews → ratings"), "mTLS") {
		t.Errorf("mTLS marks wrong:\n%s", summary)
	}

	// Click the reviews node: the side panel shows its request rate.
	xy, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`(() => {
		const n = weft.cy.getElementById('svc:default/reviews');
		const p = n.renderedPosition(), r = weft.cy.container().getBoundingClientRect();
		return [r.left + p.x, r.top + p.y];
	})()`))
	if err != nil || len(xy) != 2 {
		t.Fatalf("reviews node position: %v %v", xy, err)
	}
	if err := chromedp.Do(bctx, chromedp.MouseClickXY(xy[0], xy[1])); err != nil {
		t.Fatal(err)
	}
	rate, err := chromedp.Run(bctx, chromedp.Poll[string](
		`(() => { const t = document.getElementById('panel-title');
		   const v = document.querySelector('[data-stat=rps] .stat-value');
		   return t && t.textContent === 'reviews' && v && v.textContent; })()`,
		chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(200*time.Millisecond)))
	if err != nil {
		t.Fatalf("side panel for reviews did not show: %v", err)
	}
	// 12 requests every 250 ms: about 48 rps.
	if v, err := strconv.ParseFloat(strings.TrimSuffix(rate, " rps"), 64); err != nil || v < 20 || v > 80 {
		t.Errorf("reviews rate in panel = %q, want about 48 rps", rate)
	}

	// Raise the 5xx count on productpage → reviews: the error rate shows up
	// on the edge and in the panel within 15 s.
	close(failing)
	start := time.Now()
	errText, err := chromedp.Run(bctx, chromedp.Poll[string](
		`(() => { const li = document.querySelector('[data-edge="svc:default/productpage->svc:default/reviews"]');
		   const v = document.querySelector('[data-stat=errors] .stat-value');
		   return li && !li.textContent.includes(' 0% errors') && v && v.textContent !== '0%' && li.textContent; })()`,
		chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(250*time.Millisecond)))
	if err != nil {
		t.Fatalf("error rate did not become visible within 15 s: %v", err)
	}
	t.Logf("error rate visible after %v: %s", time.Since(start).Round(100*time.Millisecond), errText)

	// Let the sparklines gather a few points, then take the screenshot.
	if err := chromedp.Do(bctx, chromedp.Sleep(6*time.Second)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 10_000 {
		t.Errorf("screenshot is only %d bytes", len(png))
	}
	out := filepath.Join(t.TempDir(), "dashboard.png")
	if p := os.Getenv("WEFT_DASHBOARD_SCREENSHOT"); p != "" {
		out = filepath.Join("..", "..", p)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", out)

	// The other tabs render their tables.
	for _, tc := range []struct{ tab, want string }{
		{"config", "subset v1 is not defined"},
		{"proxies", "SYNCED"},
		{"errors", "UF"},
		{"traces", "ratings.default"},
	} {
		if err := chromedp.Do(bctx, chromedp.Navigate(base+"/#/"+tc.tab)); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](
			fmt.Sprintf(`document.querySelector('main').innerText.includes(%q)`, tc.want),
			chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
			txt, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
			t.Errorf("tab %s lacks %q: %v\n%s", tc.tab, tc.want, err, txt)
		}
		if dir := os.Getenv("WEFT_DASHBOARD_SHOTS_DIR"); dir != "" { // for eyeballing the tabs
			if shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot()); err == nil {
				_ = os.WriteFile(filepath.Join(dir, tc.tab+".png"), shot, 0o644)
			}
		}
	}
	// Clicking a trace shows its span waterfall.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`(document.querySelector('#traces-table tbody tr[data-trace]').click(), true)`)); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](`document.querySelectorAll('#trace-detail tr.span-row').length === 3 &&
		document.querySelector('#trace-detail').innerText.includes('ratings.default')`,
		chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
		txt, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		t.Errorf("trace waterfall: %v\n%s", err, txt)
	}
	if dir := os.Getenv("WEFT_DASHBOARD_SHOTS_DIR"); dir != "" {
		if shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot()); err == nil {
			_ = os.WriteFile(filepath.Join(dir, "trace-detail.png"), shot, 0o644)
		}
	}
}

func edgeText(t *testing.T, ctx context.Context, prefix string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(
		`[...document.querySelectorAll('#graph-summary li')].map(li => li.textContent).find(s => s.startsWith(%q)) || ''`, prefix)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
