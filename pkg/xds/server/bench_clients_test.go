package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The benchmark's simulated clients run in a child process (this test
// binary re-executed with benchClientsEnv set), so the benchmark process's
// RSS is the control plane's own. The child speaks one line per event on
// stdout, prefixed with benchLinePrefix:
//
//	READY <clients> <stream errors>     every client got CDS and RDS
//	CHANGED <unix nanos> ...            every client saw a new RDS version
//	                                    after READY; one time per client
const (
	benchClientsEnv = "WEFT_BENCH_CLIENT_ADDR"
	benchLinePrefix = "WEFTBENCH "
)

type benchChild struct {
	cmd   *exec.Cmd
	lines chan []string
	done  chan error
}

func startBenchClients(ctx context.Context, addr string, clients int) (*benchChild, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBenchClientProcess$", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), benchClientsEnv+"="+addr, "WEFT_BENCH_CLIENTS="+strconv.Itoa(clients))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("client process stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client process: %w", err)
	}
	c := &benchChild{cmd: cmd, lines: make(chan []string, 4), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), benchLinePrefix); ok {
				c.lines <- strings.Fields(l)
			}
		}
		c.done <- cmd.Wait()
	}()
	return c, nil
}

// await returns the child's next line, which must start with word.
func (c *benchChild) await(word string, timeout time.Duration) ([]string, error) {
	select {
	case l := <-c.lines:
		if len(l) == 0 || l[0] != word {
			return nil, fmt.Errorf("client process said %q, want %s", strings.Join(l, " "), word)
		}
		return l, nil
	case err := <-c.done:
		return nil, fmt.Errorf("client process exited: %v", err)
	case <-time.After(timeout):
		return nil, fmt.Errorf("no %s from the client process within %v", word, timeout)
	}
}

// cpu is the client process's CPU time so far (user+system, from
// /proc/PID/stat in clock ticks of 1/100 s).
func (c *benchChild) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesized command name; utime and stime are
	// fields 14 and 15 of the whole line.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

func (c *benchChild) rss() string { return procStatus(strconv.Itoa(c.cmd.Process.Pid), "VmRSS:") }

func (c *benchChild) stop() {
	_ = c.cmd.Process.Kill()
	<-c.done
}

// TestBenchClientProcess is the benchmark's client process; it skips
// unless started by BenchmarkControlPlaneScale.
func TestBenchClientProcess(t *testing.T) {
	addr := os.Getenv(benchClientsEnv)
	if addr == "" {
		t.Skip("only run as BenchmarkControlPlaneScale's client process")
	}
	clients, err := strconv.Atoi(os.Getenv("WEFT_BENCH_CLIENTS"))
	if err != nil || clients <= 0 {
		t.Fatalf("WEFT_BENCH_CLIENTS: %v", err)
	}
	if err := runBenchClients(t.Context(), addr, clients); err != nil {
		t.Fatal(err)
	}
}

func runBenchClients(ctx context.Context, addr string, clients int) error {
	streamsPerCon := 100
	if n, err := strconv.Atoi(os.Getenv("WEFT_BENCH_STREAMS_PER_CONN")); err == nil && n > 0 {
		streamsPerCon = n
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	cs := make([]*benchClient, clients)
	var failed atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range clients {
		if i%streamsPerCon == 0 {
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return fmt.Errorf("dial %s: %w", addr, err)
			}
			conns = append(conns, cc)
		}
		c := &benchClient{ready: make(chan struct{})}
		cs[i] = c
		cc := conns[len(conns)-1]
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("sidecar~10.9.%d.%d~app-%d.bench~bench.svc.cluster.local", i/250, i%250, i)
			for ctx.Err() == nil { // reconnect like a real client
				if err := c.run(ctx, cc, id); err != nil && ctx.Err() == nil {
					if failed.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "first stream error (the client retries): %v\n", err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	for _, c := range cs {
		select {
		case <-c.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	old := make([]any, clients)
	for i, c := range cs {
		old[i] = c.rdsVersion.Load()
	}
	fmt.Printf("%sREADY %d %d\n", benchLinePrefix, clients, failed.Load())
	if f := os.Getenv("WEFT_BENCH_CLIENT_CPU"); f != "" { // profile the clients during the change
		if out, err := os.Create(f); err == nil && pprof.StartCPUProfile(out) == nil {
			defer func() { pprof.StopCPUProfile(); out.Close() }()
		}
	}
	var b strings.Builder
	b.WriteString(benchLinePrefix + "CHANGED")
	for i, c := range cs {
		for c.rdsVersion.Load() == old[i] {
			if ctx.Err() != nil {
				return errors.New("cancelled before every client saw the change")
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Fprintf(&b, " %d", c.rdsAt.Load())
	}
	pprof.StopCPUProfile()
	fmt.Println(b.String())
	<-ctx.Done() // the benchmark kills this process
	return nil
}
