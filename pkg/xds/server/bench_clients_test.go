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

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	encodingproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The benchmark's simulated clients run in child processes (this test
// binary re-executed with benchClientsEnv set), so the benchmark process
// is the control plane alone: its RSS and CPU are the control plane's, and
// the clients' decoding is spread over several processes that the kernel
// schedules like any other. Child k of n runs the clients i with i%n == k.
// Each child speaks one line per event on stdout, prefixed with
// benchLinePrefix:
//
//	READY <clients> <stream errors>     each of its clients got CDS, EDS,
//	                                    LDS and RDS at least once
//	CHANGED <i>=<unix nanos> ...        after the parent wrote GO on stdin:
//	                                    each client received and decoded an
//	                                    RDS response with a version other
//	                                    than the one it had at GO
const (
	benchClientsEnv = "WEFT_BENCH_CLIENT_ADDR"
	benchLinePrefix = "WEFTBENCH "
)

// benchNode is the node of simulated client i: a sidecar of deployment
// app-(i%apps) in namespace bench with Kubernetes-like labels and one app
// port, as weft proxy (or an Istio agent) sends it.
func benchNode(i, apps int) *corev3.Node {
	app := fmt.Sprintf("svc-%d", i%apps)
	ip := fmt.Sprintf("10.9.%d.%d", i/250, i%250)
	md, _ := structpb.NewStruct(map[string]any{
		"NAMESPACE":     "bench",
		"WORKLOAD_NAME": app,
		"INSTANCE_IPS":  ip,
		"APP_PORTS":     "8080",
		"LABELS":        map[string]any{"app": app, "version": "v1"},
	})
	return &corev3.Node{Id: fmt.Sprintf("sidecar~%s~%s-%d.bench~bench.svc.cluster.local", ip, app, i), Metadata: md}
}

// benchClient is one simulated sidecar on an ADS stream: it subscribes to
// every cluster, endpoint and listener and to route config "80" (as Envoy
// does after its first LDS), ACKs every response after decoding it, and
// records when an RDS response with a new version was decoded.
type benchClient struct {
	ready      chan struct{} // closed when all four types first arrived
	readyOnce  sync.Once
	rdsVersion atomic.Value // string
	rdsAt      atomic.Int64 // unix nanos when the last RDS response was decoded
	// decode is how much of a response the client decodes (see
	// benchDecode).
	decode benchDecode
	// sotw: the client speaks state-of-the-world ADS and gets whole route
	// tables, as Envoy and gRPC-Go do (WEFT_BENCH_XDS=sotw); otherwise
	// delta xDS with VHDS, as weft proxy does.
	sotw bool
}

// benchDecode is how much of each response a simulated client decodes
// (WEFT_BENCH_DECODE). Every mode reads every byte of the response.
type benchDecode int

const (
	// decodeWalk (default, "walk"): the DiscoveryResponse is walked field
	// by field; version_info, type_url and nonce are decoded, each
	// resource's Any is checked for a type URL and a value and counted,
	// not copied (benchCodec). A real client decodes the resources too;
	// on this 2-core machine 5000 clients doing that would measure the
	// clients, not the control plane.
	decodeWalk benchDecode = iota
	// decodeEnvelope ("envelope"): gRPC's proto codec decodes the whole
	// DiscoveryResponse, every resource an Any with its bytes copied.
	decodeEnvelope
	// decodeFull ("full"): decodeEnvelope, then every RouteConfiguration is
	// unmarshalled as a sidecar would.
	decodeFull
)

func benchDecodeMode() benchDecode {
	switch os.Getenv("WEFT_BENCH_DECODE") {
	case "envelope":
		return decodeEnvelope
	case "full":
		return decodeFull
	}
	return decodeWalk
}

// benchCodec is the simulated clients' codec in decodeWalk mode: see
// there. Everything but a DiscoveryResponse goes to the proto codec.
type benchCodec struct{ base encoding.CodecV2 }

func (c benchCodec) Name() string { return c.base.Name() }

func (c benchCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c benchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if d, ok := v.(*discoveryv3.DeltaDiscoveryResponse); ok {
		return walkDelta(data, d)
	}
	r, ok := v.(*discoveryv3.DiscoveryResponse)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	resources := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("response tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			return fmt.Errorf("response field %d: unexpected wire type %d", num, typ)
		}
		val, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("response field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case 1:
			r.VersionInfo = string(val)
		case 2: // an Any: type_url (1) and value (2), checked, not copied
			if err := walkAny(val); err != nil {
				return fmt.Errorf("resource %d: %w", resources, err)
			}
			resources++
		case 4:
			r.TypeUrl = string(val)
		case 5:
			r.Nonce = string(val)
		}
	}
	if resources == 0 {
		return fmt.Errorf("%s response %s carries no resources", r.TypeUrl, r.VersionInfo)
	}
	return nil
}

// walkAny checks an encoded Any for a type URL and a value without
// copying it.
func walkAny(val []byte) error {
	var typeURL, value bool
	for len(val) > 0 {
		anum, atyp, an := protowire.ConsumeTag(val)
		if an < 0 || atyp != protowire.BytesType {
			return errors.New("bad Any field")
		}
		f, fn := protowire.ConsumeBytes(val[an:])
		if fn < 0 {
			return protowire.ParseError(fn)
		}
		val = val[an+fn:]
		typeURL = typeURL || (anum == 1 && len(f) > 0)
		value = value || anum == 2
	}
	if !typeURL || !value {
		return errors.New("no type URL or value")
	}
	return nil
}

// walkDelta is decodeWalk for a DeltaDiscoveryResponse: every field is
// walked; system_version_info, type_url, nonce and each removed name are
// decoded, each resource is checked for a name, a version and an Any with
// a type URL and a value, not copied (as the SotW walk does not copy).
func walkDelta(data mem.BufferSlice, r *discoveryv3.DeltaDiscoveryResponse) error {
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return fmt.Errorf("delta response field %d: bad tag", num)
		}
		val, vn := protowire.ConsumeBytes(b[n:])
		if vn < 0 {
			return fmt.Errorf("delta response field %d: %w", num, protowire.ParseError(vn))
		}
		b = b[n+vn:]
		switch num {
		case 1:
			r.SystemVersionInfo = string(val)
		case 2: // Resource: version (1), resource (2, an Any), name (3)
			var name, version bool
			hasAny := false
			for len(val) > 0 {
				rnum, rtyp, rn := protowire.ConsumeTag(val)
				if rn < 0 || rtyp != protowire.BytesType {
					return errors.New("delta resource: bad field")
				}
				f, fn := protowire.ConsumeBytes(val[rn:])
				if fn < 0 {
					return protowire.ParseError(fn)
				}
				val = val[rn+fn:]
				switch rnum {
				case 1:
					version = len(f) > 0
				case 2:
					if err := walkAny(f); err != nil {
						return fmt.Errorf("delta resource: %w", err)
					}
					hasAny = true
				case 3:
					name = len(f) > 0
				}
			}
			if !name || !version || !hasAny {
				return errors.New("delta resource without name, version or resource")
			}
		case 4:
			r.TypeUrl = string(val)
		case 5:
			r.Nonce = string(val)
		case 6:
			r.RemovedResources = append(r.RemovedResources, string(val))
		}
	}
	return nil
}

// runDelta is run for a client that speaks delta xDS with VHDS as weft
// proxy does (xdsclient.Config.Delta, FeatureVHDS): listeners, clusters
// and load assignments by wildcard, route configuration "80" and its
// virtual hosts; it records when a VirtualHost response with a new
// version was decoded.
func (c *benchClient) runDelta(ctx context.Context, cc *grpc.ClientConn, node *corev3.Node) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := []grpc.CallOption{grpc.WaitForReady(true)}
	if c.decode == decodeWalk {
		opts = append(opts, grpc.ForceCodecV2(benchCodec{encoding.GetCodecV2(encodingproto.Name)}))
	}
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx, opts...)
	if err != nil {
		return err
	}
	node = proto.Clone(node).(*corev3.Node)
	node.ClientFeatures = append(node.ClientFeatures, featureVHDS)
	subs := []*discoveryv3.DeltaDiscoveryRequest{
		{Node: node, TypeUrl: resourcev3.ClusterType},
		{TypeUrl: resourcev3.EndpointType},
		{TypeUrl: resourcev3.ListenerType},
		{TypeUrl: resourcev3.RouteType, ResourceNamesSubscribe: []string{"80"}},
		{TypeUrl: resourcev3.VirtualHostType, ResourceNamesSubscribe: []string{"80"}},
	}
	for _, r := range subs {
		if err := st.Send(r); err != nil {
			return err
		}
	}
	got := map[string]bool{}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		if c.decode == decodeFull {
			for _, x := range r.GetResources() {
				var m proto.Message
				switch r.GetTypeUrl() {
				case resourcev3.VirtualHostType:
					m = &routev3.VirtualHost{}
				case resourcev3.RouteType:
					m = &routev3.RouteConfiguration{}
				default:
					continue
				}
				if err := x.GetResource().UnmarshalTo(m); err != nil {
					return fmt.Errorf("decode %s: %w", r.GetTypeUrl(), err)
				}
			}
		}
		if r.GetTypeUrl() == resourcev3.VirtualHostType {
			c.rdsAt.Store(time.Now().UnixNano())
			c.rdsVersion.Store(r.GetSystemVersionInfo())
		}
		got[r.GetTypeUrl()] = true
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()}); err != nil {
			return err
		}
		if len(got) == 5 {
			c.readyOnce.Do(func() { close(c.ready) })
		}
	}
}

func (c *benchClient) run(ctx context.Context, cc *grpc.ClientConn, node *corev3.Node) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Wait for the connection like a sidecar's xDS client, rather than
	// failing fast while 5000 connections are being set up.
	opts := []grpc.CallOption{grpc.WaitForReady(true)}
	if c.decode == decodeWalk {
		opts = append(opts, grpc.ForceCodecV2(benchCodec{encoding.GetCodecV2(encodingproto.Name)}))
	}
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx, opts...)
	if err != nil {
		return err
	}
	subs := []*discoveryv3.DiscoveryRequest{
		{Node: node, TypeUrl: resourcev3.ClusterType},
		{TypeUrl: resourcev3.EndpointType},
		{TypeUrl: resourcev3.ListenerType},
		{TypeUrl: resourcev3.RouteType, ResourceNames: []string{"80"}},
	}
	for _, r := range subs {
		if err := st.Send(r); err != nil {
			return err
		}
	}
	got := map[string]bool{}
	for {
		// The codec has decoded the response (see benchDecode) when Recv
		// returns.
		r, err := st.Recv()
		if err != nil {
			return err
		}
		if c.decode != decodeWalk && len(r.GetResources()) == 0 {
			return fmt.Errorf("%s response %s carries no resources", r.GetTypeUrl(), r.GetVersionInfo())
		}
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}
		if r.GetTypeUrl() == resourcev3.RouteType {
			if c.decode == decodeFull {
				for _, a := range r.GetResources() {
					if err := a.UnmarshalTo(&routev3.RouteConfiguration{}); err != nil {
						return fmt.Errorf("decode route configuration: %w", err)
					}
				}
			}
			ack.ResourceNames = []string{"80"}
			c.rdsAt.Store(time.Now().UnixNano())
			c.rdsVersion.Store(r.GetVersionInfo())
		}
		got[r.GetTypeUrl()] = true
		if err := st.Send(ack); err != nil {
			return err
		}
		if len(got) == 4 {
			c.readyOnce.Do(func() { close(c.ready) })
		}
	}
}

// benchChildren are the client processes of one benchmark run.
type benchChildren []*benchChild

type benchChild struct {
	cmd      *exec.Cmd
	stdin    interface{ Write([]byte) (int, error) }
	lines    chan []string
	done     chan error
	stopOnce sync.Once
}

func startBenchClients(ctx context.Context, addr string, clients, apps, procs int) (benchChildren, error) {
	var cs benchChildren
	for k := range procs {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBenchClientProcess$", "-test.timeout=20m")
		cmd.Env = append(os.Environ(), benchClientsEnv+"="+addr, "WEFT_BENCH_CLIENTS="+strconv.Itoa(clients),
			"WEFT_BENCH_APPS="+strconv.Itoa(apps), fmt.Sprintf("WEFT_BENCH_CHILD=%d/%d", k, procs))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			cs.stop()
			return nil, fmt.Errorf("client process stdout: %w", err)
		}
		in, err := cmd.StdinPipe()
		if err != nil {
			cs.stop()
			return nil, fmt.Errorf("client process stdin: %w", err)
		}
		if err := cmd.Start(); err != nil {
			cs.stop()
			return nil, fmt.Errorf("start client process: %w", err)
		}
		c := &benchChild{cmd: cmd, stdin: in, lines: make(chan []string, 4), done: make(chan error, 1)}
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
		cs = append(cs, c)
	}
	return cs, nil
}

// await returns every child's next line, each of which must start with
// word, concatenated (the word once, then every child's fields).
func (cs benchChildren) await(word string, timeout time.Duration) ([]string, error) {
	deadline := time.After(timeout)
	out := []string{word}
	for _, c := range cs {
		select {
		case l := <-c.lines:
			if len(l) == 0 || l[0] != word {
				return nil, fmt.Errorf("client process said %q, want %s", strings.Join(l, " "), word)
			}
			out = append(out, l[1:]...)
		case err := <-c.done:
			return nil, fmt.Errorf("client process exited: %v", err)
		case <-deadline:
			return nil, fmt.Errorf("no %s from every client process within %v", word, timeout)
		}
	}
	return out, nil
}

// send writes a line to every child's stdin.
func (cs benchChildren) send(line string) error {
	for _, c := range cs {
		if _, err := c.stdin.Write([]byte(line + "\n")); err != nil {
			return fmt.Errorf("write to client process: %w", err)
		}
	}
	return nil
}

// cpu is the client processes' CPU time so far (user+system, from
// /proc/PID/stat in clock ticks of 1/100 s).
func (cs benchChildren) cpu() time.Duration {
	var total time.Duration
	for _, c := range cs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesized command name; utime and stime
		// are fields 14 and 15 of the whole line.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * 10 * time.Millisecond
	}
	return total
}

// rss is the client processes' resident sets, in kB each.
func (cs benchChildren) rss() string {
	var out []string
	for _, c := range cs {
		out = append(out, procStatus(strconv.Itoa(c.cmd.Process.Pid), "VmRSS:"))
	}
	return strings.Join(out, ", ")
}

// stop kills the client processes and waits for them; it may be called
// more than once.
func (cs benchChildren) stop() {
	for _, c := range cs {
		c.stopOnce.Do(func() {
			_ = c.cmd.Process.Kill()
			<-c.done
		})
	}
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
	apps, err := strconv.Atoi(os.Getenv("WEFT_BENCH_APPS"))
	if err != nil || apps <= 0 {
		t.Fatalf("WEFT_BENCH_APPS: %v", err)
	}
	var k, n int
	if _, err := fmt.Sscanf(os.Getenv("WEFT_BENCH_CHILD"), "%d/%d", &k, &n); err != nil || n <= 0 || k < 0 || k >= n {
		t.Fatalf("WEFT_BENCH_CHILD %q: want K/N", os.Getenv("WEFT_BENCH_CHILD"))
	}
	if err := runBenchClients(t.Context(), addr, clients, apps, k, n); err != nil {
		t.Fatal(err)
	}
}

func runBenchClients(ctx context.Context, addr string, clients, apps, child, children int) error {
	streamsPerCon := 1
	if n, err := strconv.Atoi(os.Getenv("WEFT_BENCH_STREAMS_PER_CONN")); err == nil && n > 0 {
		streamsPerCon = n
	}
	decode := benchDecodeMode()
	sotw := os.Getenv("WEFT_BENCH_XDS") == "sotw"
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var conns []*grpc.ClientConn
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	var ids []int
	for i := child; i < clients; i += children {
		ids = append(ids, i)
	}
	cs := make([]*benchClient, len(ids))
	var failed atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for j, i := range ids {
		if j%streamsPerCon == 0 {
			// Flow-control windows as Envoy's (whose HTTP/2 defaults are
			// 256 MiB): large, fixed, so gRPC-Go's BDP estimation and its
			// pings (which a server's keepalive policy may count against
			// the client) are off, as with a real sidecar.
			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(16<<20))
			if err != nil {
				return fmt.Errorf("dial %s: %w", addr, err)
			}
			conns = append(conns, cc)
		}
		c := &benchClient{ready: make(chan struct{}), decode: decode, sotw: sotw}
		cs[j] = c
		cc := conns[len(conns)-1]
		node := benchNode(i, apps)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil { // reconnect like a real client
				run := c.runDelta
				if c.sotw {
					run = c.run
				}
				if err := run(ctx, cc, node); err != nil && ctx.Err() == nil {
					if failed.Add(1) == 1 {
						fmt.Fprintf(os.Stderr, "first stream error (the client retries): %v\n", err)
					}
					select {
					case <-ctx.Done():
					case <-time.After(100 * time.Millisecond):
					}
				}
			}
		}()
	}
	stopFull := func() {}
	if f := os.Getenv("WEFT_BENCH_CLIENT_FULL_CPU"); f != "" && child == 0 { // profile one client process during the full push
		if out, err := os.Create(f); err == nil && pprof.StartCPUProfile(out) == nil {
			stopFull = func() { pprof.StopCPUProfile(); out.Close() }
		}
	}
	for _, c := range cs {
		select {
		case <-c.ready:
		case <-ctx.Done():
			stopFull()
			return ctx.Err()
		}
	}
	stopFull()
	fmt.Printf("%sREADY %d %d\n", benchLinePrefix, len(cs), failed.Load())
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() || in.Text() != "GO" {
		return errors.New("client process: no GO from the benchmark")
	}
	old := make([]any, len(cs))
	for j, c := range cs {
		old[j] = c.rdsVersion.Load()
	}
	if f := os.Getenv("WEFT_BENCH_CLIENT_CPU"); f != "" && child == 0 { // profile one client process during the change
		if out, err := os.Create(f); err == nil && pprof.StartCPUProfile(out) == nil {
			defer func() { pprof.StopCPUProfile(); out.Close() }()
		}
	}
	var b strings.Builder
	b.WriteString(benchLinePrefix + "CHANGED")
	for j, c := range cs {
		for c.rdsVersion.Load() == old[j] {
			if ctx.Err() != nil {
				return errors.New("cancelled before every client saw the change")
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Fprintf(&b, " %d=%d", ids[j], c.rdsAt.Load())
	}
	pprof.StopCPUProfile()
	fmt.Println(b.String())
	<-ctx.Done() // the benchmark kills this process
	return nil
}
