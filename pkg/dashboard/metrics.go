package dashboard

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Istio standard metric names the dashboard reads.
const (
	metricRequests = "istio_requests_total"
	metricDuration = "istio_request_duration_milliseconds"
)

// edgeKey is the finest grain the dashboard keeps: one source workload
// talking to one destination workload behind one service.
type edgeKey struct {
	SrcNS, SrcWorkload, SrcApp string
	// destination_app is not part of the key: a source reporter may not
	// know it ("unknown") while the destination reporter does, and both
	// must land on one edge so requests are not counted twice.
	DstNS, DstWorkload               string
	DstService, DstSvcName, DstSvcNS string
	Protocol                         string
}

// sampleKind tells which part of the Istio metrics a raw sample is.
type sampleKind uint8

const (
	kindRequests sampleKind = iota // istio_requests_total
	kindBucket                     // istio_request_duration_milliseconds_bucket
)

// rawSample is one parsed time series value from one proxy's scrape.
type rawSample struct {
	kind     sampleKind
	source   bool // reporter="source"
	edge     edgeKey
	code     string  // response_code (requests only)
	flags    string  // response_flags (requests only)
	mtls     bool    // connection_security_policy="mutual_tls"
	secKnown bool    // connection_security_policy says (not "unknown", as source reporters label it)
	le       float64 // bucket upper bound (buckets only)
	value    float64
	seriesID string
}

// parseIstioMetrics reads the Prometheus text exposition format and returns
// the Istio request counters and duration histogram buckets in it, keyed by a
// stable series identity.
func parseIstioMetrics(r io.Reader) (map[string]rawSample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse Prometheus text: %w", err)
	}
	out := make(map[string]rawSample)
	if mf := fams[metricRequests]; mf != nil {
		for _, m := range mf.GetMetric() {
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetUntyped() != nil:
				v = m.GetUntyped().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			default:
				continue
			}
			s := sampleFromLabels(m.GetLabel())
			s.kind = kindRequests
			s.value = v
			s.seriesID = seriesID(metricRequests, m.GetLabel(), "")
			out[s.seriesID] = s
		}
	}
	if mf := fams[metricDuration]; mf != nil {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			base := sampleFromLabels(m.GetLabel())
			base.kind = kindBucket
			sawInf := false
			for _, b := range h.GetBucket() {
				s := base
				s.le = b.GetUpperBound()
				if math.IsInf(s.le, +1) {
					sawInf = true
				}
				s.value = float64(b.GetCumulativeCount())
				if b.CumulativeCountFloat != nil {
					s.value = b.GetCumulativeCountFloat()
				}
				s.seriesID = seriesID(metricDuration+"_bucket", m.GetLabel(), strconv.FormatFloat(s.le, 'g', -1, 64))
				out[s.seriesID] = s
			}
			if !sawInf {
				s := base
				s.le = math.Inf(+1)
				s.value = float64(h.GetSampleCount())
				if h.SampleCountFloat != nil {
					s.value = h.GetSampleCountFloat()
				}
				s.seriesID = seriesID(metricDuration+"_bucket", m.GetLabel(), "+Inf")
				out[s.seriesID] = s
			}
		}
	}
	return out, nil
}

func sampleFromLabels(lps []*dto.LabelPair) rawSample {
	var s rawSample
	for _, lp := range lps {
		v := lp.GetValue()
		switch lp.GetName() {
		case "reporter":
			s.source = v == "source"
		case "source_workload":
			s.edge.SrcWorkload = v
		case "source_workload_namespace":
			s.edge.SrcNS = v
		case "source_app":
			s.edge.SrcApp = v
		case "destination_workload":
			s.edge.DstWorkload = v
		case "destination_workload_namespace":
			s.edge.DstNS = v
		case "destination_service":
			s.edge.DstService = v
		case "destination_service_name":
			s.edge.DstSvcName = v
		case "destination_service_namespace":
			s.edge.DstSvcNS = v
		case "request_protocol":
			s.edge.Protocol = v
		case "response_code":
			s.code = v
		case "response_flags":
			s.flags = v
		case "connection_security_policy":
			s.mtls = v == "mutual_tls"
			s.secKnown = v != "" && v != "unknown"
		}
	}
	for _, p := range []*string{&s.edge.SrcWorkload, &s.edge.SrcNS, &s.edge.DstWorkload, &s.edge.DstNS, &s.edge.DstSvcName, &s.edge.DstSvcNS} {
		if *p == "" {
			*p = "unknown"
		}
	}
	if s.edge.DstSvcName == "unknown" && s.edge.DstService != "" && s.edge.DstService != "unknown" {
		// Passthrough or ServiceEntry hosts carry only the FQDN.
		s.edge.DstSvcName = s.edge.DstService
	}
	if s.flags == "" {
		s.flags = "-"
	}
	return s
}

func seriesID(name string, lps []*dto.LabelPair, le string) string {
	pairs := make([]string, 0, len(lps)+1)
	for _, lp := range lps {
		pairs = append(pairs, lp.GetName()+"="+strconv.Quote(lp.GetValue()))
	}
	sort.Strings(pairs)
	if le != "" {
		pairs = append(pairs, "le="+le)
	}
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// edgeStats accumulates request deltas over one scrape interval (or, when
// summed, over a window) for one edge.
type edgeStats struct {
	Requests float64
	Errors   float64 // 5xx responses
	MTLS     float64 // requests over mutual TLS
	SecKnown float64 // requests whose reporter knew the connection security policy
	// Buckets maps a histogram upper bound (ms) to the cumulative count delta.
	Buckets map[float64]float64
	// NonOK maps "CODE FLAGS" of non-2xx responses to their count delta.
	NonOK map[codeFlags]float64
}

type codeFlags struct {
	Code  string
	Flags string
}

func (e *edgeStats) add(o *edgeStats) {
	e.Requests += o.Requests
	e.Errors += o.Errors
	e.MTLS += o.MTLS
	e.SecKnown += o.SecKnown
	for le, v := range o.Buckets {
		if e.Buckets == nil {
			e.Buckets = map[float64]float64{}
		}
		e.Buckets[le] += v
	}
	for k, v := range o.NonOK {
		if e.NonOK == nil {
			e.NonOK = map[codeFlags]float64{}
		}
		e.NonOK[k] += v
	}
}

// addSample adds the delta of one raw sample.
func (e *edgeStats) addSample(s rawSample, delta float64) {
	switch s.kind {
	case kindRequests:
		e.Requests += delta
		if s.mtls {
			e.MTLS += delta
		}
		if s.secKnown {
			e.SecKnown += delta
		}
		code, _ := strconv.Atoi(s.code)
		if code >= 500 {
			e.Errors += delta
		}
		if code < 200 || code >= 300 {
			if e.NonOK == nil {
				e.NonOK = map[codeFlags]float64{}
			}
			e.NonOK[codeFlags{Code: s.code, Flags: s.flags}] += delta
		}
	case kindBucket:
		if e.Buckets == nil {
			e.Buckets = map[float64]float64{}
		}
		e.Buckets[s.le] += delta
	}
}

// quantile estimates the q-quantile (0..1) of the durations from cumulative
// histogram buckets the way Prometheus' histogram_quantile does: find the
// bucket holding the rank and interpolate linearly inside it. It returns 0
// when there are no observations. A rank in the +Inf bucket returns the
// largest finite upper bound.
func quantile(q float64, buckets map[float64]float64) float64 {
	if len(buckets) == 0 {
		return 0
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	// Cumulative counts must be monotonic; summing deltas of independently
	// reset series can break that slightly, so enforce it.
	cum := make([]float64, len(les))
	for i, le := range les {
		cum[i] = buckets[le]
		if i > 0 && cum[i] < cum[i-1] {
			cum[i] = cum[i-1]
		}
	}
	total := cum[len(cum)-1]
	if total <= 0 {
		return 0
	}
	rank := q * total
	for i, le := range les {
		if cum[i] < rank {
			continue
		}
		if math.IsInf(le, +1) {
			if i == 0 {
				return 0
			}
			return les[i-1]
		}
		lower, below := 0.0, 0.0
		if i > 0 {
			lower, below = les[i-1], cum[i-1]
		}
		inBucket := cum[i] - below
		if inBucket <= 0 {
			return le
		}
		return lower + (le-lower)*(rank-below)/inBucket
	}
	return les[len(les)-1]
}
