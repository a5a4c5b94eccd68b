package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// ZipkinSpan is a Zipkin API v2 span (JSON).
type ZipkinSpan struct {
	TraceID        string            `json:"traceId"`
	ID             string            `json:"id"`
	ParentID       string            `json:"parentId,omitempty"`
	Name           string            `json:"name,omitempty"`
	Kind           string            `json:"kind,omitempty"`
	Timestamp      int64             `json:"timestamp,omitempty"` // µs since the epoch
	Duration       int64             `json:"duration,omitempty"`  // µs
	LocalEndpoint  *ZipkinEndpoint   `json:"localEndpoint,omitempty"`
	RemoteEndpoint *ZipkinEndpoint   `json:"remoteEndpoint,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	Shared         bool              `json:"shared,omitempty"`
	Debug          bool              `json:"debug,omitempty"`
}

// ZipkinEndpoint is a Zipkin v2 endpoint.
type ZipkinEndpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
	IPv4        string `json:"ipv4,omitempty"`
	IPv6        string `json:"ipv6,omitempty"`
	Port        int    `json:"port,omitempty"`
}

func endpoint(service, addr string) *ZipkinEndpoint {
	if service == "" && addr == "" {
		return nil
	}
	e := &ZipkinEndpoint{ServiceName: service}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			if ip.To4() != nil {
				e.IPv4 = ip.String()
			} else {
				e.IPv6 = ip.String()
			}
		}
		e.Port, _ = strconv.Atoi(port)
	}
	return e
}

// ServiceName is the config's service name, else the span's.
func (s *Span) ServiceName() string {
	if s.cfg != nil && s.cfg.ServiceName != "" {
		return s.cfg.ServiceName
	}
	return s.Service
}

// ToZipkin converts s to the Zipkin v2 model.
func (s *Span) ToZipkin() ZipkinSpan {
	z := ZipkinSpan{TraceID: s.Ctx.TraceID.String(), ID: s.Ctx.SpanID.String(), Name: s.Name, Kind: s.Kind.String(),
		Timestamp: s.Start.UnixMicro(), Duration: max(s.Duration.Microseconds(), 1), Debug: s.Ctx.Debug}
	if !s.Parent.IsZero() {
		z.ParentID = s.Parent.String()
	}
	z.LocalEndpoint = endpoint(s.ServiceName(), s.Local)
	z.RemoteEndpoint = endpoint("", s.Remote)
	z.Tags = make(map[string]string, len(s.Tags)+1)
	for _, t := range s.Tags {
		z.Tags[t.Key] = t.Value
	}
	if s.Error {
		z.Tags["error"] = "true"
	}
	return z
}

type zipkinExporter struct {
	url, host string
	client    *http.Client
}

func newZipkin(cfg *Config) *zipkinExporter {
	path := cfg.Path
	if path == "" {
		path = "/api/v2/spans"
	}
	return &zipkinExporter{url: "http://" + cfg.Addr + path, host: cfg.Host,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}}}
}

func (z *zipkinExporter) Export(ctx context.Context, spans []*Span) error {
	out := make([]ZipkinSpan, len(spans))
	for i, s := range spans {
		out[i] = s.ToZipkin()
	}
	b, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("zipkin: encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, z.url, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("zipkin: %w", err)
	}
	if z.host != "" {
		req.Host = z.host
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := z.client.Do(req)
	if err != nil {
		return fmt.Errorf("zipkin: post %s: %w", z.url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("zipkin: post %s: status %d", z.url, resp.StatusCode)
	}
	return nil
}

func (z *zipkinExporter) Shutdown(context.Context) error {
	z.client.CloseIdleConnections()
	return nil
}

// NewExporter builds the exporter cfg names.
func NewExporter(ctx context.Context, cfg *Config) (Exporter, error) {
	switch cfg.Provider {
	case Zipkin:
		return newZipkin(cfg), nil
	case OTLPGRPC, OTLPHTTP:
		return newOTLP(ctx, cfg)
	}
	return nil, fmt.Errorf("tracing: unknown provider %d", cfg.Provider)
}
