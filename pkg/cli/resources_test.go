package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/admin"
	"github.com/weftmesh/weft/pkg/config/store/bolt"
)

const seedFixtures = "../config/testdata/seed"

// execCLI runs the weft command tree in-process.
func execCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(strings.NewReader(""), &out, &errOut)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		return out.String(), errOut.String() + "Error: " + err.Error() + "\n", ExitCode(err)
	}
	return out.String(), errOut.String(), 0
}

// adminServer serves the admin API over a fresh bolt store.
func adminServer(t *testing.T) string {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "config.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := admin.NewServer(admin.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestResourceCommands(t *testing.T) {
	url := adminServer(t)
	s := "--server=" + url
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: x\nspec:\n  hostz: [a]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Steps run in order against one server.
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		stdout  []string
		stderr  []string
		notOut  []string
		exactly string // whole stdout, when set
	}{
		{name: "apply seed", args: []string{"apply", "-f", seedFixtures, s}, stdout: []string{
			"peerauthentication.security.istio.io/default-mtls created\n",
			"virtualservice.networking.istio.io/ext-service-routes created\n"}},
		{name: "re-apply unchanged", args: []string{"apply", "-f", seedFixtures, s}, stdout: []string{
			"serviceentry.networking.istio.io/ext-service unchanged\n"}, notOut: []string{"created", "configured"}},
		{name: "dry run", args: []string{"apply", "-f", seedFixtures, "--dry-run", s}, stdout: []string{"unchanged (dry run)"}},
		{name: "invalid file", args: []string{"apply", "-f", bad, s}, code: 1, stderr: []string{bad + ":6:", "spec.hostz", `did you mean "hosts"`}},
		{name: "no -f", args: []string{"apply", s}, code: 2, stderr: []string{"-f"}},
		{name: "get table", args: []string{"get", "vs", s}, stdout: []string{"NAME                 AGE\next-service-routes   "}, notOut: []string{"NAMESPACE"}},
		{name: "get by name yaml", args: []string{"get", "se", "ext-service", "-o", "yaml", s}, stdout: []string{"kind: ServiceEntry", "- extsvc.example.com"}},
		{name: "get wide", args: []string{"get", "se", "-o", "wide", s}, stdout: []string{"HOSTS", "LOCATION", "RESOLUTION", "[extsvc.example.com]"}},
		{name: "get names all ns", args: []string{"get", "all", "-A", "-o", "name", s}, exactly: "peerauthentication.security.istio.io/default-mtls\n" +
			"requestauthentication.security.istio.io/jwt-auth\nserviceentry.networking.istio.io/ext-service\n" +
			"virtualservice.networking.istio.io/ext-service-routes\n"},
		{name: "get other namespace", args: []string{"get", "vs", "-n", "other", s}, exactly: "", stderr: []string{"No resources found in other namespace."}},
		{name: "get missing", args: []string{"get", "vs", "nope", s}, code: 1, stderr: []string{`"nope" not found`}},
		{name: "get unknown kind", args: []string{"get", "widgets", s}, code: 2, stderr: []string{"unknown resource type"}},
		{name: "get bad output", args: []string{"get", "vs", "-o", "xml", s}, code: 2, stderr: []string{"-o"}},
		{name: "get all with name", args: []string{"get", "all", "x", s}, code: 2},
		{name: "delete", args: []string{"delete", "vs", "ext-service-routes", s}, exactly: "virtualservice.networking.istio.io \"ext-service-routes\" deleted\n"},
		{name: "delete again", args: []string{"delete", "vs", "ext-service-routes", s}, code: 1, stderr: []string{"not found"}},
		{name: "delete by file", args: []string{"delete", "-f", filepath.Join(seedFixtures, "service-entry.yaml"), s}, stdout: []string{`serviceentry.networking.istio.io "ext-service" deleted`}},
		{name: "delete needs name", args: []string{"delete", "vs", s}, code: 2},
		{name: "after deletes", args: []string{"get", "all", "-o", "name", s}, exactly: "peerauthentication.security.istio.io/default-mtls\nrequestauthentication.security.istio.io/jwt-auth\n"},
		{name: "server down", args: []string{"get", "vs", "--server=http://127.0.0.1:1"}, code: 1, stderr: []string{"contact control plane"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := execCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			if tc.exactly != "" || (tc.code == 0 && len(tc.stdout) == 0) {
				if out != tc.exactly {
					t.Errorf("stdout:\n%q\nwant:\n%q", out, tc.exactly)
				}
			}
			for _, w := range tc.stdout {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notOut {
				if strings.Contains(out, w) {
					t.Errorf("stdout has %q:\n%s", w, out)
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Minute, "0s"},
		{45 * time.Second, "45s"},
		{119 * time.Second, "119s"},
		{5*time.Minute + 12*time.Second, "5m12s"},
		{7 * time.Minute, "7m"},
		{17 * time.Minute, "17m"},
		{3*time.Hour + 4*time.Minute, "3h4m"},
		{20 * time.Hour, "20h"},
		{12 * 24 * time.Hour, "12d"},
	} {
		if got := age(now.Add(-tc.ago), now); got != tc.want {
			t.Errorf("age(%s) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := age(time.Time{}, now); got != "<unknown>" {
		t.Errorf("age(zero) = %q", got)
	}
}

// lockedBuffer is written by a running command and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestGetWatch(t *testing.T) {
	url := adminServer(t)
	c := &admin.Client{BaseURL: url}
	seed, err := os.ReadFile(filepath.Join(seedFixtures, "service-entry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyRaw(context.Background(), seed, "application/yaml", false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut lockedBuffer
	root := NewRoot(strings.NewReader(""), &out, &errOut)
	root.SetArgs([]string{"get", "all", "-w", "-o", "wide", "--server", url})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("output lacks %q after 5s:\n%s\nstderr:\n%s", want, out.String(), errOut.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("serviceentry.networking.istio.io/ext-service")
	pa, err := os.ReadFile(filepath.Join(seedFixtures, "peer-authentication.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyRaw(context.Background(), pa, "application/yaml", false); err != nil {
		t.Fatal(err)
	}
	waitFor("peerauthentication.security.istio.io/default-mtls")
	waitFor("STRICT")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("get -w after interrupt: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("get -w did not stop on interrupt")
	}
	// --watch needs a table of a kind.
	if _, _, code := execCLI(t, "get", "vs", "x", "-w", "--server", url); code != 2 {
		t.Fatalf("get NAME -w: exit %d, want 2", code)
	}
}

// TestGetWatchEmptyStore: with an empty store the list is at revision 0, and
// an apply landing between the list and the watch must still be shown (a
// watch opened "from now" after the list used to lose it). A proxy in front
// of the admin server holds every watch request back for 300 ms and the
// apply is sent as soon as the list has been answered.
func TestGetWatchEmptyStore(t *testing.T) {
	seed, err := os.ReadFile(filepath.Join(seedFixtures, "service-entry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	backend, err := neturl.Parse(adminServer(t))
	if err != nil {
		t.Fatal(err)
	}
	listed := make(chan struct{}, 1)
	rp := httputil.NewSingleHostReverseProxy(backend)
	rp.FlushInterval = -1
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/watch") {
			time.Sleep(300 * time.Millisecond)
			rp.ServeHTTP(w, r)
			return
		}
		rp.ServeHTTP(w, r)
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/resources") {
			select {
			case listed <- struct{}{}:
			default:
			}
		}
	}))
	defer front.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut lockedBuffer
	root := NewRoot(strings.NewReader(""), &out, &errOut)
	root.SetArgs([]string{"get", "serviceentries", "-A", "-w", "--server", front.URL})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	select {
	case <-listed:
	case err := <-done:
		t.Fatalf("get -w ended before listing: %v\n%s", err, errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("get -w did not list; requests seen by the proxy so far: stderr:\n%s", errOut.String())
	}
	c := &admin.Client{BaseURL: backend.String()}
	if _, err := c.ApplyRaw(context.Background(), seed, "application/yaml", false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), "ext-service") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("want the applied ServiceEntry exactly once, got:\n%s\nstderr:\n%s", out.String(), errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("get -w: %v", err)
	}
}
