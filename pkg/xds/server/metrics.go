package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftmesh/weft/pkg/config"
)

type metrics struct {
	reg          *prometheus.Registry
	connected    *prometheus.GaugeVec
	pushes       *prometheus.CounterVec
	pushDuration prometheus.Histogram
	nacks        *prometheus.CounterVec
	configSize   *prometheus.HistogramVec
	resources    *prometheus.GaugeVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		reg: reg,
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_xds_connected_proxies",
			Help: "Proxies with an open xDS stream (or within the reconnect grace period), by proxy type."}, []string{"type"}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_pushes_total",
			Help: "xDS responses sent, by resource type (CDS, LDS, RDS, EDS)."}, []string{"type"}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "weft_xds_push_duration_seconds",
			Help: "Time to recompute and set snapshots for all connected proxies after a change.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "weft_xds_nacks_total",
			Help: "xDS responses rejected by proxies, by resource type."}, []string{"type"}),
		configSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "weft_xds_config_size_bytes",
			Help: "Encoded size of one proxy's resources of one type, per push.", Buckets: prometheus.ExponentialBuckets(256, 4, 10)}, []string{"type"}),
		resources: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "weft_config_resources",
			Help: "Configuration resources in the store, by kind."}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.pushes, m.pushDuration, m.nacks, m.configSize, m.resources} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register xDS metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) setConfigCounts(list []*config.Resource) {
	counts := map[string]int{}
	for _, s := range config.Schemas() {
		counts[s.Kind] = 0
	}
	for _, r := range list {
		counts[r.Kind]++
	}
	for k, n := range counts {
		m.resources.WithLabelValues(k).Set(float64(n))
	}
}

// MetricsHandler serves the server's Prometheus registry.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg})
}

// ServeMonitoring serves /metrics on lis until ctx ends.
func (s *Server) ServeMonitoring(ctx context.Context, lis net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.MetricsHandler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve monitoring on %s: %w", lis.Addr(), err)
	}
	return nil
}
