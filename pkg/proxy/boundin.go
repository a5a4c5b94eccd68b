package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/pkg/proxy/cluster/lb"
	"github.com/weftmesh/weft/pkg/proxy/listener"
)

// boundInbound manages a sidecar's bound inbound listeners (Sidecar
// ingress captureMode NONE): inbound LDS listeners other than
// virtualInbound whose bind_to_port is explicitly true, each bound on its
// own address and served as the inbound listener is (mutual TLS per
// PeerAuthentication, HTTP or opaque TCP by the first bytes) for the
// listener's port: the virtualInbound chain of that port decides where
// requests go (its inbound|PORT|| cluster, the ingress defaultEndpoint).
// sync is called serially (xDS updates); shutdown once.
type boundInbound struct {
	p   *Proxy
	ctx context.Context
	log *slog.Logger

	mu      sync.Mutex
	lns     map[string]*inListener // by listener name
	stopped bool
}

// inListener is one bound inbound listener.
type inListener struct {
	addr string
	ln   net.Listener
	srv  httpServer
	h    *listener.Handler
}

// boundInboundAddrs returns the inbound listeners to bind: name → host:port.
func boundInboundAddrs(ls map[string]*listenerv3.Listener) map[string]string {
	out := map[string]string{}
	for name, l := range ls {
		if name == "virtualInbound" || l.GetTrafficDirection() != corev3.TrafficDirection_INBOUND || !l.GetBindToPort().GetValue() {
			continue
		}
		sa := l.GetAddress().GetSocketAddress()
		if sa.GetPortValue() == 0 {
			continue
		}
		out[name] = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	}
	return out
}

// sync binds new listeners and drains removed (or moved) ones.
func (b *boundInbound) sync(ls map[string]*listenerv3.Listener) {
	want := boundInboundAddrs(ls)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped || b.ctx.Err() != nil {
		return
	}
	for name, il := range b.lns {
		if want[name] != il.addr {
			delete(b.lns, name)
			b.log.Info("inbound listener removed, draining", "listener", name, "addr", il.addr)
			go b.drain(il)
		}
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if b.lns[name] != nil {
			continue
		}
		il, err := b.serve(want[name])
		if err != nil {
			b.log.Error("inbound listener: bind failed", "listener", name, "addr", want[name], "err", err)
			continue
		}
		b.lns[name] = il
		b.log.Info("inbound listener bound", "listener", name, "addr", il.ln.Addr().String())
	}
}

// serve binds addr and serves it as the inbound listener for its port.
func (b *boundInbound) serve(addr string) (*inListener, error) {
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p, o := b.p, b.p.opts
	h := &listener.Handler{Direction: listener.Inbound, Runtime: p.rt.Load, Ident: p.inH.Ident, AppPort: port, Service: p.inH.Service,
		Log: p.log, Stats: p.stats, Access: p.access, Rnd: lb.NewLockedRand(o.Rand), Ctx: b.ctx, Tracer: p.tracer}
	l := p.inboundMTLS(b.ctx, ln, false, func(net.Conn) int { return port })
	sn := &listener.SniffListener{Listener: l, Log: p.log, OnTCP: func(c net.Conn) { h.ServeTCP(b.ctx, c) }}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug)}
	pr := new(http.Protocols)
	pr.SetHTTP1(true)
	pr.SetUnencryptedHTTP2(true)
	srv.Protocols = pr
	if o.MTLS != nil {
		srv.ConnContext = peerTLSContext(nil)
		srv.Handler = peerTLSHandler(h)
	}
	var hs httpServer = srv
	if !o.StdHTTPServer {
		hs = &listener.Server{Handler: srv.Handler, ConnContext: srv.ConnContext, ReadHeaderTimeout: srv.ReadHeaderTimeout, Log: p.log}
	}
	go func() {
		if err := hs.Serve(sn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Debug("inbound listener stopped", "addr", addr, "err", err)
		}
	}()
	return &inListener{addr: addr, ln: sn, srv: hs, h: h}, nil
}

func (b *boundInbound) drain(il *inListener) {
	ctx, cancel := context.WithTimeout(context.Background(), b.p.opts.DrainTimeout)
	defer cancel()
	_ = il.srv.Shutdown(ctx)
	_ = il.ln.Close()
	il.h.Wait()
}

// shutdown drains every bound inbound listener.
func (b *boundInbound) shutdown() {
	b.mu.Lock()
	lns := b.lns
	b.lns = map[string]*inListener{}
	b.stopped = true
	b.mu.Unlock()
	var wg sync.WaitGroup
	for _, il := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.drain(il)
		}()
	}
	wg.Wait()
}

// InboundListeners returns the bound inbound listener addresses by
// listener name (Sidecar ingress captureMode NONE).
func (p *Proxy) InboundListeners() map[string]string {
	out := map[string]string{}
	if p.boundIn == nil {
		return out
	}
	p.boundIn.mu.Lock()
	defer p.boundIn.mu.Unlock()
	for n, l := range p.boundIn.lns {
		out[n] = l.ln.Addr().String()
	}
	return out
}
