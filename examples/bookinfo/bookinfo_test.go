package bookinfo

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeMeshProxy is an HTTP forward proxy that maps service names to the
// httptest servers, standing in for the sidecar in explicit mode.
func fakeMeshProxy(t *testing.T, backends map[string]string) *httptest.Server {
	t.Helper()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.URL.Host)
		target, ok := backends[host]
		if !ok {
			http.Error(w, "no route", http.StatusNotFound)
			return
		}
		req, _ := http.NewRequest(r.Method, target+r.URL.Path, nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
}

func serve(t *testing.T, o Options) *httptest.Server {
	t.Helper()
	h, err := Handler(o)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func TestProductpageVersions(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    []string
		not     []string
	}{
		{"v1", []string{"reviews-v1"}, []string{"★"}},
		{"v2", []string{"reviews-v2", `class="black"`, "★★★★★"}, []string{`class="red"`}},
		{"v3", []string{"reviews-v3", `class="red"`, "★★★★☆"}, []string{`class="black"`}},
	} {
		t.Run(tc.version, func(t *testing.T) {
			backends := map[string]string{}
			proxy := fakeMeshProxy(t, backends)
			defer proxy.Close()
			backends["details"] = serve(t, Options{Service: "details"}).URL
			backends["ratings"] = serve(t, Options{Service: "ratings"}).URL
			backends["reviews"] = serve(t, Options{Service: "reviews", Version: tc.version, Proxy: proxy.URL}).URL
			pp := serve(t, Options{Service: "productpage", Proxy: proxy.URL})
			req, _ := http.NewRequest("GET", pp.URL+"/productpage", nil)
			req.Header.Set("end-user", "jason")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s := string(body)
			for _, w := range append(tc.want, "Signed in as <b>jason</b>", "PublisherA") {
				if !strings.Contains(s, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(s, n) {
					t.Errorf("page has %q", n)
				}
			}
		})
	}
}

func TestProductpageDegrades(t *testing.T) {
	// A proxy that knows no services: the page still renders with errors.
	proxy := fakeMeshProxy(t, map[string]string{})
	defer proxy.Close()
	pp := serve(t, Options{Service: "productpage", Proxy: proxy.URL})
	resp, err := http.Get(pp.URL + "/productpage")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range []string{"product details are currently unavailable", "product reviews are currently unavailable"} {
		if !strings.Contains(string(body), w) {
			t.Errorf("page lacks %q", w)
		}
	}
}

func TestUnknownService(t *testing.T) {
	if _, err := Handler(Options{Service: "cart"}); err == nil || !strings.Contains(err.Error(), `unknown bookinfo service "cart"`) {
		t.Fatalf("got %v", err)
	}
	if _, err := Handler(Options{Service: "details", Proxy: "://bad"}); err == nil {
		t.Fatal("bad proxy URL accepted")
	}
}
