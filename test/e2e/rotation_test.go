package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// leafSerial reads the serial of the workload certificate a proxy presents
// from its admin /certs.
func leafSerial(admin string) (string, error) {
	resp, err := http.Get("http://" + admin + "/certs")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var doc struct {
		Certificates []struct {
			CertChain []struct {
				SerialNumber    string `json:"serial_number"`
				SubjectAltNames []struct {
					URI string `json:"uri"`
				} `json:"subject_alt_names"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return "", fmt.Errorf("/certs: %w", err)
	}
	if len(doc.Certificates) == 0 || len(doc.Certificates[0].CertChain) == 0 {
		return "", fmt.Errorf("/certs: no certificate")
	}
	leaf := doc.Certificates[0].CertChain[0]
	if len(leaf.SubjectAltNames) == 0 || leaf.SubjectAltNames[0].URI == "" {
		return "", fmt.Errorf("/certs: leaf %s has no URI SAN", leaf.SerialNumber)
	}
	return leaf.SerialNumber, nil
}

// TestCertRotationUnderLoad runs two sidecars with STRICT mutual TLS and
// 20 s workload certificates under steady traffic for two minutes: both
// sidecars' certificates must rotate several times (their serials change)
// and not one request may fail, including long requests that are in flight
// while a rotation happens.
func TestCertRotationUnderLoad(t *testing.T) {
	harness.SkipShort(t)
	t.Parallel()
	duration := 2 * time.Minute
	if s := os.Getenv("WEFT_ROTATION_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("WEFT_ROTATION_DURATION: %v", err)
		}
		duration = d
	}
	const ttl = 20 * time.Second

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from server") })
	// /slow streams one byte a second for n seconds: a request in flight
	// across a certificate rotation.
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := 0; i < n; i++ {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Second):
			}
		}
	})
	app := &http.Server{Handler: mux}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Serve(lis) }()
	t.Cleanup(func() { app.Close() })
	appPort := lis.Addr().(*net.TCPAddr).Port

	dataDir, configDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "peer-authentication.yaml"), []byte(peerAuthn("STRICT")), 0o644); err != nil {
		t.Fatal(err)
	}
	cp := harness.StartControlPlane(t, weft.Binary(t), "--config-dir", configDir, "--data-dir", dataDir,
		"--xds-address", "127.0.0.1:0", "--monitoring-address", "127.0.0.1:0", "--dashboard-address", "",
		"--ca-address", "127.0.0.1:0", "--debounce", "50ms", "--workload-cert-ttl", ttl.String())
	xds := cp.ListenAddress(t, "xDS server")
	caAddr := cp.ListenAddress(t, "CA")
	server, serverProc := startMeshedProxy(t, dataDir, xds, caAddr, "server",
		"--app-port", strconv.Itoa(appPort), "--service", "server:8080/http", "--admin-address", "127.0.0.1:0")
	client, clientProc := startMeshedProxy(t, dataDir, xds, caAddr, "client", "--admin-address", "127.0.0.1:0")

	u, _ := url.Parse("http://" + client.Outbound)
	keepAlive := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), MaxIdleConnsPerHost: 4}, Timeout: 10 * time.Second}
	fresh := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(u), DisableKeepAlives: true}, Timeout: 10 * time.Second}
	get := func(c *http.Client, path, want string) error {
		resp, err := c.Get("http://server:8080" + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("%s: body: %w", path, err)
		}
		if resp.StatusCode != 200 || string(b) != want {
			return fmt.Errorf("%s: %d %q", path, resp.StatusCode, b)
		}
		return nil
	}
	deadline := time.Now().Add(20 * time.Second)
	for get(keepAlive, "/", "hello from server") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no meshed request succeeded in 20s; client sidecar log:\n%s", clientProc.Stderr())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Serials of both sidecars' certificates, polled every second.
	serials := map[string]map[string]bool{"server": {}, "client": {}}
	var mu sync.Mutex
	var total, failed atomic.Int64
	var firstErrs []string
	fail := func(err error) {
		failed.Add(1)
		mu.Lock()
		if len(firstErrs) < 10 {
			firstErrs = append(firstErrs, time.Now().Format("15:04:05.000")+" "+err.Error())
		}
		mu.Unlock()
	}
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	// Four steady clients at ~20 requests/s each: two reuse connections,
	// two open a new one per request.
	for i := 0; i < 4; i++ {
		c := keepAlive
		if i%2 == 1 {
			c = fresh
		}
		wg.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for time.Now().Before(stop) {
				<-tick.C
				total.Add(1)
				if err := get(c, "/", "hello from server"); err != nil {
					fail(err)
				}
			}
		})
	}
	// Long requests (8 s each) back to back: some are in flight during
	// every rotation.
	wg.Go(func() {
		for time.Now().Add(8 * time.Second).Before(stop) {
			total.Add(1)
			if err := get(fresh, "/slow?n=8", "xxxxxxxx"); err != nil {
				fail(err)
			}
		}
	})
	wg.Go(func() {
		for time.Now().Before(stop) {
			for name, a := range map[string]string{"server": server.Admin, "client": client.Admin} {
				s, err := leafSerial(a)
				if err != nil {
					t.Errorf("%s sidecar: %v", name, err)
					continue
				}
				mu.Lock()
				serials[name][s] = true
				mu.Unlock()
			}
			time.Sleep(time.Second)
		}
	})
	wg.Wait()

	t.Logf("%d requests in %s, %d failed; distinct certificates: server %d, client %d",
		total.Load(), duration, failed.Load(), len(serials["server"]), len(serials["client"]))
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during rotation, first: %v", failed.Load(), total.Load(), firstErrs)
	}
	// A 20 s certificate is renewed every ~10 s.
	want := int(duration/(ttl/2)) / 2
	want = max(want, 2)
	for name, s := range serials {
		if len(s) < want {
			t.Errorf("%s sidecar presented %d distinct certificates over %s, want at least %d (TTL %s)", name, len(s), duration, want, ttl)
		}
	}
	if total.Load() < int64(duration/time.Second)*20 {
		t.Errorf("only %d requests in %s: load generator too slow to mean anything", total.Load(), duration)
	}
	if t.Failed() {
		t.Logf("server sidecar log:\n%s", serverProc.Stderr())
	}
}
