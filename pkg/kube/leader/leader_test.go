package leader

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/pkg/kube/kubetest"
)

// TestOneLeaderAndFailover runs two candidates against a real API server:
// the work runs on exactly one at a time, and when the leader stops, the
// other takes over.
func TestOneLeaderAndFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	cl := kubetest.Start(t)
	cs := cl.Clientset(t)
	var (
		mu                  sync.Mutex
		running, maxRunning int
	)
	track := func(d int) {
		mu.Lock()
		defer mu.Unlock()
		running += d
		maxRunning = max(maxRunning, running)
	}
	leaders := make(chan string, 4)
	start := func(id string) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = Run(ctx, Options{Client: cs, Namespace: "default", Name: "weft-test", Identity: id,
				LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 200 * time.Millisecond},
				func(ctx context.Context) {
					track(1)
					leaders <- id
					<-ctx.Done()
					track(-1)
				})
		}()
		return func() { cancel(); wg.Wait() }
	}
	stopA := start("a")
	first := waitLeader(t, leaders)
	stopB := start("b")
	defer stopB()
	time.Sleep(time.Second) // b campaigns while a leads
	if first != "a" {
		t.Fatalf("first leader %s", first)
	}
	select {
	case id := <-leaders:
		t.Fatalf("%s became leader while a led", id)
	default:
	}
	stopA() // releases the lease on cancel
	if got := waitLeader(t, leaders); got != "b" {
		t.Fatalf("failover leader %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if maxRunning != 1 {
		t.Fatalf("work ran on %d replicas at once", maxRunning)
	}
}

func waitLeader(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(20 * time.Second):
		t.Fatal("no leader elected")
		return ""
	}
}
