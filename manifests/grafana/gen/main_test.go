package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCommittedDashboardsUpToDate fails when manifests/grafana/*.json differ
// from what the generator writes (run: go run ./manifests/grafana/gen).
func TestCommittedDashboardsUpToDate(t *testing.T) {
	if err := run("..", true); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardShape checks the structure Grafana needs: unique panel ids,
// a Prometheus datasource variable, every panel's targets with refIds and
// PromQL using only declared variables.
func TestDashboardShape(t *testing.T) {
	for name, d := range Dashboards() {
		b, err := Render(d)
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			UID        string
			Templating struct{ List []struct{ Name, Type string } }
			Panels     []struct {
				ID      int
				Type    string
				Title   string
				Targets []struct{ RefID, Expr string }
			}
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		vars := map[string]bool{"__rate_interval": true}
		for _, v := range dash.Templating.List {
			vars[v.Name] = true
		}
		if !vars["datasource"] {
			t.Errorf("%s: no datasource variable", name)
		}
		ids := map[int]bool{}
		for _, p := range dash.Panels {
			if ids[p.ID] {
				t.Errorf("%s: duplicate panel id %d", name, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", name, p.Title)
			}
			for _, tg := range p.Targets {
				if tg.RefID == "" || tg.Expr == "" {
					t.Errorf("%s: panel %q has a target without refId or expr", name, p.Title)
				}
				for _, part := range strings.Split(tg.Expr, "$")[1:] {
					v := part
					if i := strings.IndexFunc(v, func(r rune) bool { return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }); i >= 0 {
						v = v[:i]
					}
					if !vars[v] {
						t.Errorf("%s: panel %q uses undeclared variable $%s", name, p.Title, v)
					}
				}
			}
		}
	}
}
