package wasm

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/xds/model"
	translatewasm "github.com/weftmesh/weft/pkg/xds/translate/wasm"
)

// headerFilters translates an EnvoyFilter with code inline into the inbound
// HCM's wasm filter.
func headerFilters(tb testing.TB, code []byte) []*hcmv3.HttpFilter {
	tb.Helper()
	rs, err := config.Decode("bench.yaml", []byte(`apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: header, namespace: default}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: envoy.filters.network.http_connection_manager}}}
    patch:
      operation: INSERT_FIRST
      value:
        name: header
        typed_config:
          "@type": type.googleapis.com/istio.wasm.v1.WASM
          wasm_binary: {inline_bytes: "`+base64.StdEncoding.EncodeToString(code)+`"}
`))
	if err != nil {
		tb.Fatal(err)
	}
	fs, err := translatewasm.Translate(nil, rs, &model.Proxy{Namespace: "default"})
	if err != nil || len(fs) != 1 {
		tb.Fatalf("translate: %d filters, %v", len(fs), err)
	}
	return append(fs, &hcmv3.HttpFilter{Name: translatewasm.RouterName})
}

// BenchmarkWasmAddedLatency (make bench-wasm) sends requests through a real
// proxy's inbound listener with keep-alive, alternating rounds without a
// plugin, with the Go header plugin and with the AssemblyScript one, and
// reports each p50 and the p50 added by the plugin over the no-plugin
// baseline of the same run. b.N is ignored: it is a fixed-size measurement.
func BenchmarkWasmAddedLatency(b *testing.B) {
	asCode, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "examples", "wasm", "assemblyscript", "build", "header.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	e := newEngine(b)
	router := []*hcmv3.HttpFilter{{Name: translatewasm.RouterName}}
	variants := []struct {
		name    string
		filters []*hcmv3.HttpFilter
		want    string
	}{
		{"none", router, "app:"},
		{"go", headerFilters(b, example(b, "go-header")), "app:Hello from WASM!"},
		{"as", headerFilters(b, asCode), "app:Hello from WASM!"},
	}
	in, set := startInbound(b, e, router)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}, Timeout: 5 * time.Second}
	get := func() (string, time.Duration, error) {
		start := time.Now()
		resp, err := hc.Get("http://" + in + "/bench")
		if err != nil {
			return "", 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body), time.Since(start), err
	}
	const rounds, perRound = 10, 300
	samples := map[string][]time.Duration{}
	for r := 0; r < rounds; r++ {
		for _, v := range variants {
			set(v.filters)
			deadline := time.Now().Add(10 * time.Second)
			for {
				body, _, err := get()
				if err == nil && body == v.want {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%s: config not applied: %q %v", v.name, body, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			for i := 0; i < perRound; i++ {
				body, d, err := get()
				if err != nil || body != v.want {
					b.Fatalf("%s: %q %v", v.name, body, err)
				}
				samples[v.name] = append(samples[v.name], d)
			}
		}
	}
	p50 := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Nanoseconds()) / 1e3
	}
	base := p50(samples["none"])
	b.ReportMetric(base, "p50-none-µs")
	for _, v := range variants[1:] {
		p := p50(samples[v.name])
		b.ReportMetric(p, "p50-"+v.name+"-µs")
		b.ReportMetric(p-base, "added-p50-"+v.name+"-µs")
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkInstanceMemory (make bench-wasm) reports the guest linear memory
// and the host heap one more instance of each header plugin costs.
func BenchmarkInstanceMemory(b *testing.B) {
	asCode, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "examples", "wasm", "assemblyscript", "build", "header.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	for _, v := range []struct {
		name string
		code []byte
	}{{"go", example(b, "go-header")}, {"as", asCode}} {
		b.Run(v.name, func(b *testing.B) {
			e := newEngine(b, WithPoolSize(1))
			p, err := e.NewPlugin(context.Background(), v.code, PluginConfig{Name: "mem"})
			if err != nil {
				b.Fatal(err)
			}
			const n = 8
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.HeapAlloc
			var guest uint32
			ins := make([]*instance, 0, n)
			for i := 0; i < n; i++ {
				in, err := p.newInstance(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				guest += in.mod.Memory().Size()
				ins = append(ins, in)
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			host := float64(int64(ms.HeapAlloc)-int64(before)) / n
			for _, in := range ins {
				_ = in.mod.Close(context.Background())
			}
			b.ReportMetric(float64(guest)/n/(1<<20), "guest-MiB/instance")
			b.ReportMetric(host/(1<<20), "host-heap-MiB/instance")
			b.ReportMetric(0, "ns/op")
		})
	}
}
