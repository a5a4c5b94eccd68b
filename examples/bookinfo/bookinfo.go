// Package bookinfo is Weft's sample application, modelled on Istio's
// Bookinfo: productpage calls details and reviews; reviews v2 and v3 call
// ratings (v2 shows black stars, v3 red ones). Every Istio task can be tried
// on it. Each service is a plain HTTP server; outbound calls go through the
// sidecar given as an HTTP proxy (explicit mode) and forward the headers
// that routing and tracing need.
package bookinfo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Options configure one service instance.
type Options struct {
	// Service is productpage, details, reviews or ratings.
	Service string
	// Version is the workload version label (v1, v2, v3); it changes what
	// reviews returns.
	Version string
	// Listen is the app's address (host:port).
	Listen string
	// Proxy is the sidecar's outbound address used as HTTP proxy for calls
	// to other services (e.g. http://127.0.0.1:15001); empty means direct.
	Proxy string
	// Port is the service port other services are called on (default 9080).
	Port   int
	Logger *slog.Logger
}

// forwarded are the headers productpage and reviews copy onto outbound
// calls: user identity for routing rules, and trace context.
var forwarded = []string{
	"end-user", "x-request-id", "traceparent", "tracestate",
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
	"cookie",
}

// Handler returns the HTTP handler of one service.
func Handler(o Options) (http.Handler, error) {
	if o.Port == 0 {
		o.Port = 9080
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if o.Proxy != "" {
		u, err := url.Parse(o.Proxy)
		if err != nil {
			return nil, fmt.Errorf("proxy %q: %w", o.Proxy, err)
		}
		client.Transport = &http.Transport{Proxy: http.ProxyURL(u), MaxIdleConnsPerHost: 64}
	}
	a := &app{o: o, client: client}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	switch o.Service {
	case "productpage":
		mux.HandleFunc("GET /productpage", a.productpage)
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/productpage", http.StatusFound)
		})
	case "details":
		mux.HandleFunc("GET /details/{id}", a.details)
	case "reviews":
		mux.HandleFunc("GET /reviews/{id}", a.reviews)
	case "ratings":
		mux.HandleFunc("GET /ratings/{id}", a.ratings)
	default:
		return nil, fmt.Errorf("unknown bookinfo service %q (want productpage, details, reviews or ratings)", o.Service)
	}
	return mux, nil
}

// Run serves one service until ctx ends.
func Run(ctx context.Context, o Options) error {
	h, err := Handler(o)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", o.Listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type app struct {
	o      Options
	client *http.Client
}

// call GETs http://SERVICE:PORT/path, forwarding routing and trace headers.
func (a *app) call(in *http.Request, service, path string, out any) (int, error) {
	req, err := http.NewRequestWithContext(in.Context(), http.MethodGet,
		fmt.Sprintf("http://%s:%d%s", service, a.o.Port, path), nil)
	if err != nil {
		return 0, err
	}
	for _, h := range forwarded {
		if v := in.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s answered %s", service, resp.Status)
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
}

type Details struct {
	ID        string `json:"id"`
	Author    string `json:"author"`
	Year      int    `json:"year"`
	Type      string `json:"type"`
	Pages     int    `json:"pages"`
	Publisher string `json:"publisher"`
	Language  string `json:"language"`
	ISBN10    string `json:"ISBN-10"`
}

type Review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *Rating `json:"rating,omitempty"`
}

type Rating struct {
	Stars int    `json:"stars"`
	Color string `json:"color"`
}

type Reviews struct {
	ID      string   `json:"id"`
	Podname string   `json:"podname"`
	Version string   `json:"version"`
	Reviews []Review `json:"reviews"`
	Error   string   `json:"error,omitempty"`
}

type Ratings struct {
	ID      string         `json:"id"`
	Ratings map[string]int `json:"ratings"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *app) details(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Details{ID: r.PathValue("id"), Author: "William Shakespeare", Year: 1595,
		Type: "paperback", Pages: 200, Publisher: "PublisherA", Language: "English", ISBN10: "1234567890"})
}

func (a *app) ratings(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Ratings{ID: r.PathValue("id"), Ratings: map[string]int{"Reviewer1": 5, "Reviewer2": 4}})
}

func (a *app) reviews(w http.ResponseWriter, r *http.Request) {
	out := Reviews{ID: r.PathValue("id"), Podname: "reviews-" + a.o.Version, Version: a.o.Version, Reviews: []Review{
		{Reviewer: "Reviewer1", Text: "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},
		{Reviewer: "Reviewer2", Text: "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."},
	}}
	if a.o.Version == "v2" || a.o.Version == "v3" {
		color := "black"
		if a.o.Version == "v3" {
			color = "red"
		}
		var rt Ratings
		if _, err := a.call(r, "ratings", "/ratings/"+out.ID, &rt); err != nil {
			a.o.Logger.Warn("ratings call failed", "err", err)
			out.Error = "Ratings service is currently unavailable"
		} else {
			for i := range out.Reviews {
				out.Reviews[i].Rating = &Rating{Stars: rt.Ratings[out.Reviews[i].Reviewer], Color: color}
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"stars": func(n int) string { return strings.Repeat("★", n) + strings.Repeat("☆", 5-n) },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Simple Bookstore App</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}.err{color:#b00}.red{color:#c00}.black{color:#000}</style></head>
<body><h1>The Comedy of Errors</h1>
{{if .User}}<p>Signed in as <b>{{.User}}</b></p>{{end}}
<h2>Book Details</h2>
{{if .DetailsErr}}<p class="err">{{.DetailsErr}}</p>{{else}}<dl>
<dt>Type</dt><dd>{{.Details.Type}}</dd><dt>Pages</dt><dd>{{.Details.Pages}}</dd>
<dt>Publisher</dt><dd>{{.Details.Publisher}}</dd><dt>Language</dt><dd>{{.Details.Language}}</dd>
<dt>ISBN-10</dt><dd>{{.Details.ISBN10}}</dd></dl>{{end}}
<h2>Book Reviews</h2>
{{if .ReviewsErr}}<p class="err">{{.ReviewsErr}}</p>{{else}}
{{range .Reviews.Reviews}}<blockquote><p>{{.Text}}</p><small>{{.Reviewer}}</small>
{{if .Rating}}<div class="{{.Rating.Color}}">{{stars .Rating.Stars}}</div>{{end}}</blockquote>{{end}}
{{if .Reviews.Error}}<p class="err">{{.Reviews.Error}}</p>{{end}}
<p><small>Reviews served by: <span id="reviews-version">{{.Reviews.Podname}}</span></small></p>{{end}}
</body></html>
`))

func (a *app) productpage(w http.ResponseWriter, r *http.Request) {
	data := struct {
		User       string
		Details    Details
		DetailsErr string
		Reviews    Reviews
		ReviewsErr string
	}{User: r.Header.Get("end-user")}
	if _, err := a.call(r, "details", "/details/0", &data.Details); err != nil {
		a.o.Logger.Warn("details call failed", "err", err)
		data.DetailsErr = "Sorry, product details are currently unavailable for this book."
	}
	if _, err := a.call(r, "reviews", "/reviews/0", &data.Reviews); err != nil {
		a.o.Logger.Warn("reviews call failed", "err", err)
		data.ReviewsErr = "Sorry, product reviews are currently unavailable for this book."
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = page.Execute(w, data)
}
