// Command gen writes Weft's Grafana dashboards (mesh, service, workload)
// as JSON into manifests/grafana. The dashboards are built on Istio's
// standard metric names and labels (istio_requests_total,
// istio_request_duration_milliseconds, istio_request_bytes,
// istio_response_bytes, istio_tcp_*), so the panels and variables are the
// ones Istio users know; the mesh dashboard adds the Weft control plane's
// weft_* metrics.
//
//	go run ./manifests/grafana/gen            # rewrite manifests/grafana/*.json
//	go run ./manifests/grafana/gen -check     # fail if they are out of date
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	out := flag.String("out", "manifests/grafana", "directory to write the dashboards to")
	check := flag.Bool("check", false, "do not write; exit 1 if a file differs from what would be written")
	flag.Parse()
	if err := run(*out, *check); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	for name, d := range Dashboards() {
		b, err := Render(d)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		path := filepath.Join(dir, name)
		if check {
			old, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("check %s: %w", path, err)
			}
			if !bytes.Equal(old, b) {
				return fmt.Errorf("%s is out of date: run go run ./manifests/grafana/gen", path)
			}
			continue
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// Render is the committed file content of a dashboard.
func Render(d map[string]any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Dashboards maps file name to dashboard model.
func Dashboards() map[string]map[string]any {
	return map[string]map[string]any{
		"weft-mesh-dashboard.json":     meshDashboard(),
		"weft-service-dashboard.json":  serviceDashboard(),
		"weft-workload-dashboard.json": workloadDashboard(),
	}
}

// ---- building blocks ----

const ri = "$__rate_interval"

var datasource = map[string]any{"type": "prometheus", "uid": "${datasource}"}

type target struct{ expr, legend string }

func t(expr, legend string) target { return target{expr, legend} }

// layout places panels left to right on Grafana's 24-column grid.
type layout struct {
	id, x, y, rowH int
	panels         []map[string]any
}

func (l *layout) row(title string) {
	if l.x > 0 {
		l.y += l.rowH
		l.x, l.rowH = 0, 0
	}
	l.id++
	l.panels = append(l.panels, map[string]any{
		"type": "row", "id": l.id, "title": title, "collapsed": false, "panels": []any{},
		"gridPos": map[string]int{"h": 1, "w": 24, "x": 0, "y": l.y},
	})
	l.y++
}

func (l *layout) add(p map[string]any, w, h int) {
	if l.x+w > 24 {
		l.y += l.rowH
		l.x, l.rowH = 0, 0
	}
	l.id++
	p["id"] = l.id
	p["gridPos"] = map[string]int{"h": h, "w": w, "x": l.x, "y": l.y}
	p["datasource"] = datasource
	l.panels = append(l.panels, p)
	l.x += w
	if h > l.rowH {
		l.rowH = h
	}
}

func targets(ts []target, table bool) []any {
	out := make([]any, len(ts))
	for i, tg := range ts {
		m := map[string]any{"refId": string(rune('A' + i)), "expr": tg.expr, "legendFormat": tg.legend, "datasource": datasource}
		if table {
			m["instant"] = true
			m["format"] = "table"
		} else {
			m["range"] = true
		}
		out[i] = m
	}
	return out
}

func stat(title, desc, unit string, ts ...target) map[string]any {
	return map[string]any{
		"type": "stat", "title": title, "description": desc, "targets": targets(ts, false),
		"fieldConfig": map[string]any{"defaults": map[string]any{"unit": unit, "decimals": 2, "color": map[string]any{"mode": "thresholds"},
			"thresholds": map[string]any{"mode": "absolute", "steps": []any{map[string]any{"color": "green", "value": nil}}}}, "overrides": []any{}},
		"options": map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}, "fields": "", "values": false},
			"colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto", "orientation": "auto"},
	}
}

func series(title, desc, unit string, ts ...target) map[string]any {
	return map[string]any{
		"type": "timeseries", "title": title, "description": desc, "targets": targets(ts, false),
		"fieldConfig": map[string]any{"defaults": map[string]any{"unit": unit,
			"custom": map[string]any{"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": true}}, "overrides": []any{}},
		"options": map[string]any{"legend": map[string]any{"displayMode": "table", "placement": "bottom", "showLegend": true, "calcs": []string{"mean", "max", "lastNotNull"}},
			"tooltip": map[string]any{"mode": "multi", "sort": "desc"}},
	}
}

// table merges instant queries that share labels into one row per label
// set; columns are renamed to the targets' legends.
func table(title, desc string, link string, units map[string]string, ts ...target) map[string]any {
	rename := map[string]string{}
	for i, tg := range ts {
		rename["Value #"+string(rune('A'+i))] = tg.legend
	}
	var overrides []any
	cols := make([]string, 0, len(units))
	for col := range units {
		cols = append(cols, col)
	}
	sort.Strings(cols)
	for _, col := range cols {
		unit := units[col]
		overrides = append(overrides, map[string]any{"matcher": map[string]any{"id": "byName", "options": col},
			"properties": []any{map[string]any{"id": "unit", "value": unit}}})
	}
	if link != "" {
		overrides = append(overrides, map[string]any{"matcher": map[string]any{"id": "byName", "options": "Workload"},
			"properties": []any{map[string]any{"id": "links", "value": []any{map[string]any{"title": "Workload dashboard", "url": link}}}}})
	}
	return map[string]any{
		"type": "table", "title": title, "description": desc, "targets": targets(ts, true),
		"transformations": []any{
			map[string]any{"id": "merge", "options": map[string]any{}},
			map[string]any{"id": "organize", "options": map[string]any{"excludeByName": map[string]bool{"Time": true}, "renameByName": mergeMaps(rename, map[string]string{
				"destination_workload": "Workload", "destination_workload_namespace": "Namespace", "destination_service": "Service"})}},
		},
		"fieldConfig": map[string]any{"defaults": map[string]any{"custom": map[string]any{"align": "auto"}}, "overrides": overrides},
		"options":     map[string]any{"showHeader": true, "sortBy": []any{map[string]any{"displayName": ts[0].legend, "desc": true}}},
	}
}

func mergeMaps(a, b map[string]string) map[string]string {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// ---- templating ----

func dsVar() map[string]any {
	return map[string]any{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
		"current": map[string]any{}, "hide": 0, "refresh": 1, "regex": "", "options": []any{}}
}

// queryVar is a label_values() variable. allValue ".*" with includeAll
// makes "All" match every value (as in Istio's dashboards).
func queryVar(name, label, query string, includeAll bool) map[string]any {
	v := map[string]any{"name": name, "label": label, "type": "query", "datasource": datasource,
		"definition": query, "query": map[string]any{"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
		"refresh": 2, "sort": 1, "hide": 0, "multi": includeAll, "includeAll": includeAll, "regex": "", "options": []any{}, "current": map[string]any{}}
	if includeAll {
		v["allValue"] = ".*"
		v["current"] = map[string]any{"selected": true, "text": []string{"All"}, "value": []string{"$__all"}}
	}
	return v
}

func reporterVar() map[string]any {
	opt := func(text, value string, sel bool) map[string]any {
		return map[string]any{"text": text, "value": value, "selected": sel}
	}
	return map[string]any{"name": "qrep", "label": "Reporter", "type": "custom", "hide": 0,
		"query": "destination,source", "multi": false, "includeAll": false,
		"current": map[string]any{"text": "destination", "value": "destination", "selected": true},
		"options": []any{opt("destination", "destination", true), opt("source", "source", false)}}
}

func dashboard(uid, title, desc string, vars []any, l *layout) map[string]any {
	return map[string]any{
		"uid": uid, "title": title, "description": desc, "tags": []string{"weft", "istio"},
		"editable": true, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "10s",
		"time": map[string]string{"from": "now-15m", "to": "now"}, "timezone": "browser",
		"links":       []any{map[string]any{"type": "dashboards", "tags": []string{"weft"}, "asDropdown": true, "title": "Weft dashboards", "includeVars": false, "keepTime": true}},
		"templating":  map[string]any{"list": vars},
		"annotations": map[string]any{"list": []any{}},
		"panels":      l.panels,
	}
}

// ---- PromQL helpers ----

// sel renders a selector {a, b, ...} from matchers.
func sel(ms ...string) string { return "{" + strings.Join(ms, ", ") + "}" }

func rate(metric, selector string) string {
	return fmt.Sprintf("rate(%s%s[%s])", metric, selector, ri)
}

func sumRate(by, metric, selector string) string {
	if by == "" {
		return "sum(" + rate(metric, selector) + ")"
	}
	return fmt.Sprintf("sum by (%s) (%s)", by, rate(metric, selector))
}

// successRate is the share of non-5xx responses.
func successRate(by string, ms ...string) string {
	ok := append(append([]string(nil), ms...), `response_code!~"5.."`)
	return sumRate(by, "istio_requests_total", sel(ok...)) + " / " + sumRate(by, "istio_requests_total", sel(ms...))
}

func quantile(q, by, metric string, ms ...string) string {
	b := "le"
	if by != "" {
		b = "le, " + by
	}
	return fmt.Sprintf("histogram_quantile(%s, %s)", q, sumRate(b, metric+"_bucket", sel(ms...)))
}

// quantiles are P50, P90 and P99 targets of a histogram, legends prefixed.
func quantiles(legend, by, metric string, ms ...string) []target {
	var out []target
	for _, q := range []string{"0.50", "0.90", "0.99"} {
		name := "P" + strings.TrimPrefix(q, "0.")
		if legend != "" {
			name = legend + " " + name
		}
		out = append(out, t(quantile(q, by, metric, ms...), name))
	}
	return out
}

func with(ms []string, more ...string) []string {
	return append(append([]string(nil), ms...), more...)
}
