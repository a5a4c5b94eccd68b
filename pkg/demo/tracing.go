package demo

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
)

// TracingOptions configure the demo's tracing: the control plane runs its
// built-in Zipkin-compatible collector and the mesh config makes it the
// default tracing provider at Sampling percent.
type TracingOptions struct {
	// Address of the collector (default 127.0.0.1:9411).
	Address string
	// Sampling is the random sampling percentage; 0 means 100 (the demo
	// traces everything; Istio's default is 1).
	Sampling float64
}

// tracingControlPlaneArgs writes the demo's mesh config (the built-in
// collector as the default tracing provider) and returns the control plane
// flags that use it.
func (m *mesh) tracingControlPlaneArgs() []string {
	host, port, err := net.SplitHostPort(m.plan.Zipkin)
	if err != nil {
		return nil
	}
	sampling := m.o.Tracing.Sampling
	if sampling <= 0 {
		sampling = 100
	}
	mesh := fmt.Sprintf(`# written by weft demo
defaultConfig:
  tracing:
    sampling: %g
extensionProviders:
- name: weft-zipkin
  zipkin:
    service: %q
    port: %s
defaultProviders:
  tracing: [weft-zipkin]
`, sampling, host, port)
	file := filepath.Join(m.o.DataDir, "mesh-config.yaml")
	if err := os.WriteFile(file, []byte(mesh), 0o644); err != nil {
		return nil
	}
	return []string{"--zipkin-address", m.plan.Zipkin, "--mesh-config", file}
}

func (m *mesh) tracingBanner(out io.Writer) {
	fmt.Fprintf(out, "  traces              http://%s/api/v1/traces?service=productpage   (Zipkin API on %s)\n", m.plan.Admin, m.plan.Zipkin)
}
