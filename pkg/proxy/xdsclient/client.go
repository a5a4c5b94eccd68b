package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// UpdateFunc receives a candidate resource set after a response was decoded
// and validated. It returns an error when the proxy cannot execute the set;
// the client then NACKs the response and keeps the previous set. It is
// called serially, never concurrently.
type UpdateFunc func(*Resources) error

// Config configures a Client.
type Config struct {
	// Address is the control plane's HOST:PORT (plaintext gRPC).
	Address string
	// Node identifies the proxy (ID and metadata).
	Node *corev3.Node
	// Update applies a candidate set; required.
	Update UpdateFunc
	// Logger; default slog.Default()-free discard logger is not used: nil means a no-op logger.
	Logger *slog.Logger
	// BackoffMin is the first reconnect delay; default 100ms.
	BackoffMin time.Duration
	// BackoffMax caps the reconnect delay; default 5s.
	BackoffMax time.Duration
	// Rand supplies jitter; default a rand seeded from the runtime.
	Rand *rand.Rand
	// Delta speaks delta xDS and takes route configurations in VHDS form
	// from a weft control plane (see delta.go); default false:
	// state-of-the-world. A control plane that does not implement delta
	// xDS is spoken to with state-of-the-world instead.
	Delta bool
}

// Stats counts protocol events; read with Client.Stats.
type Stats struct {
	Connects, Responses, ACKs, NACKs int
	LastNACK                         string
}

// Client is an ADS client. Create with New, run with Run.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	current *Resources
	stats   Stats
	// delta is the delta protocol's state (nil until a delta stream ran);
	// noDelta is set once the control plane refused delta xDS.
	delta   *deltaState
	noDelta bool
}

// New returns a client; it does not connect until Run.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("xdsclient: empty control plane address")
	}
	if cfg.Update == nil {
		return nil, errors.New("xdsclient: nil Update")
	}
	if cfg.Node == nil {
		return nil, errors.New("xdsclient: nil Node")
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, log: log.With("component", "xdsclient", "control_plane", cfg.Address), current: NewResources()}, nil
}

// Current returns the last applied resource set (never nil).
func (c *Client) Current() *Resources {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Stats returns a copy of the protocol counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Run connects and keeps the stream alive until ctx is done. It returns
// ctx.Err() at the end.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.BackoffMin
	for {
		start := time.Now()
		var err error
		if c.cfg.Delta && !c.noDelta {
			if err = c.deltaStream(ctx); errors.Is(err, errDeltaUnimplemented) {
				c.log.Info("control plane does not implement delta xDS; using state of the world")
				c.noDelta = true
				err = c.stream(ctx)
			}
		} else {
			err = c.stream(ctx)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > 10*time.Second {
			backoff = c.cfg.BackoffMin // the stream was healthy for a while
		}
		// Full jitter between backoff/2 and backoff.
		delay := backoff/2 + time.Duration(c.cfg.Rand.Int64N(int64(backoff/2)+1))
		c.log.Warn("xds stream ended; reconnecting", "err", err, "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, c.cfg.BackoffMax)
	}
}

type typeState struct {
	names []string // nil for wildcard
	nonce string
	// nackedVersion / nackRepeats slow down re-NACKs of a version the
	// server sends again (go-control-plane resends after every NACK).
	nackedVersion string
	nackRepeats   int
}

// MaxResponseBytes bounds one discovery response. gRPC's default (4 MiB)
// is too small for a mesh-wide route table or wasm modules inline in a
// listener; the proxy would reconnect forever. Envoy sets no such limit.
const MaxResponseBytes = 256 << 20

// dial makes the gRPC connection both stream kinds use. Responses are
// read into buffers allocated for them, not gRPC's shared pool: the pool
// rounds a response above 32 KiB (100 clusters are ~40 KiB) up to a 1 MiB
// buffer and keeps it until two GCs pass, which for a sidecar that receives
// a few responses per configuration change is most of its heap's headroom
// for nothing.
func (c *Client) dial() (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(c.cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseBytes)),
		experimental.WithBufferPool(mem.NopBufferPool{}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.cfg.Address, err)
	}
	return conn, nil
}

func (c *Client) stream(ctx context.Context) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		return fmt.Errorf("open ADS stream: %w", err)
	}
	c.mu.Lock()
	c.stats.Connects++
	cur := c.current
	c.mu.Unlock()

	states := map[string]*typeState{
		ListenerType: {},
		ClusterType:  {},
		RouteType:    {names: cur.RouteNames()},
		EndpointType: {names: cur.EndpointNames()},
	}
	first := true
	send := func(typeURL string, errDetail error) error {
		s := states[typeURL]
		req := &discoveryv3.DiscoveryRequest{
			Node:          c.cfg.Node,
			TypeUrl:       typeURL,
			VersionInfo:   c.Current().Versions[typeURL],
			ResourceNames: s.names,
			ResponseNonce: s.nonce,
		}
		if !first {
			req.Node = nil // the node is only required on the first request
		}
		first = false
		if errDetail != nil {
			req.ErrorDetail = &status.Status{Code: int32(codes.InvalidArgument), Message: errDetail.Error()}
		}
		return st.Send(req)
	}
	for _, t := range []string{ListenerType, ClusterType} {
		if err := send(t, nil); err != nil {
			return fmt.Errorf("send %s: %w", t, err)
		}
	}
	for _, t := range []string{RouteType, EndpointType} {
		if len(states[t].names) > 0 {
			if err := send(t, nil); err != nil {
				return fmt.Errorf("send %s: %w", t, err)
			}
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		s, ok := states[resp.GetTypeUrl()]
		if !ok {
			c.log.Warn("ignoring response of unsubscribed type", "type", resp.GetTypeUrl())
			continue
		}
		s.nonce = resp.GetNonce()
		c.mu.Lock()
		c.stats.Responses++
		cur := c.current
		c.mu.Unlock()
		next, err := cur.apply(resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetResources())
		if err == nil {
			err = c.cfg.Update(next)
		}
		if err != nil {
			c.log.Warn("rejecting xDS update (NACK)", "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "err", err)
			c.mu.Lock()
			c.stats.NACKs++
			c.stats.LastNACK = err.Error()
			c.mu.Unlock()
			if s.nackedVersion == resp.GetVersionInfo() {
				s.nackRepeats++
				delay := min(50*time.Millisecond<<min(s.nackRepeats, 6), 2*time.Second)
				t := time.NewTimer(delay)
				select {
				case <-sctx.Done():
					t.Stop()
					return sctx.Err()
				case <-t.C:
				}
			} else {
				s.nackedVersion, s.nackRepeats = resp.GetVersionInfo(), 0
			}
			if err := send(resp.GetTypeUrl(), err); err != nil {
				return fmt.Errorf("send NACK: %w", err)
			}
			continue
		}
		s.nackedVersion, s.nackRepeats = "", 0
		c.mu.Lock()
		c.current = next
		c.stats.ACKs++
		c.mu.Unlock()
		c.log.Debug("applied xDS update", "type", resp.GetTypeUrl(), "version", resp.GetVersionInfo(), "resources", len(resp.GetResources()))
		if err := send(resp.GetTypeUrl(), nil); err != nil {
			return fmt.Errorf("send ACK: %w", err)
		}
		// Follow references: new RDS / EDS names.
		for t, names := range map[string][]string{RouteType: next.RouteNames(), EndpointType: next.EndpointNames()} {
			if !slices.Equal(states[t].names, names) {
				states[t].names = names
				if len(names) == 0 && states[t].nonce == "" {
					continue
				}
				if err := send(t, nil); err != nil {
					return fmt.Errorf("send %s: %w", t, err)
				}
			}
		}
	}
}
