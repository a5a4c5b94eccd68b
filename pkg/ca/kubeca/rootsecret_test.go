package kubeca_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/ca"
	"github.com/weftmesh/weft/pkg/ca/kubeca"
	"github.com/weftmesh/weft/pkg/kube/kubetest"
)

// TestRootSecret: the first control plane stores its generated root in
// the Secret; a second one (another replica, or a restart with an empty
// data directory) loads it and signs with the same root; one that
// generated its own root concurrently loses the race and is told so.
func TestRootSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	cs := cl.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	newCA := func(dataDir string) (*ca.CA, kubeca.RootSecret) {
		t.Helper()
		rs := kubeca.RootSecret{Client: cs, Namespace: "default", Dir: filepath.Join(dataDir, "ca")}
		if _, err := rs.Load(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := ca.New(ca.Options{DataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		return c, rs
	}
	// A racer generated its root before anyone stored one.
	racer, racerSecret := newCA(t.TempDir())

	first, rs := newCA(t.TempDir())
	if err := rs.Store(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rs.Store(ctx); err != nil { // idempotent for the same root
		t.Fatalf("second Store of the same root: %v", err)
	}
	second, _ := newCA(t.TempDir())
	if !bytes.Equal(first.RootsPEM(), second.RootsPEM()) {
		t.Fatal("a second control plane did not load the stored root")
	}
	if err := racerSecret.Store(ctx); !errors.Is(err, kubeca.ErrLostRace) {
		t.Fatalf("racer Store: %v, want ErrLostRace", err)
	}
	if bytes.Equal(racer.RootsPEM(), first.RootsPEM()) {
		t.Fatal("test broken: racer has the same root")
	}
	loaded, err := racerSecret.Load(ctx)
	if err != nil || !loaded {
		t.Fatalf("racer Load: %v %v", loaded, err)
	}
	again, err := ca.New(ca.Options{DataDir: filepath.Dir(racerSecret.Dir)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(again.RootsPEM(), first.RootsPEM()) {
		t.Fatal("racer did not switch to the stored root")
	}
}
