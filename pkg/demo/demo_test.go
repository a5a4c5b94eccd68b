package demo

import "testing"

func TestMakePlanDistinctPorts(t *testing.T) {
	p, err := MakePlan(Options{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]string{}
	check := func(what string, port int) {
		if port < 20000 || port >= 32000 {
			t.Errorf("%s port %d outside 20000-31999", what, port)
		}
		if prev, dup := seen[port]; dup {
			t.Errorf("%s and %s share port %d", prev, what, port)
		}
		seen[port] = what
	}
	for _, w := range append(p.Workloads, p.Ingress) {
		for name, port := range map[string]int{"inbound": w.Inbound, "outbound": w.Outbound, "admin": w.Admin,
			"metrics": w.Metrics, "health": w.Health, "status": w.Status} {
			check(w.Name()+" "+name, port)
		}
		if w.AppPort != 0 {
			check(w.Name()+" app", w.AppPort)
		}
	}
	if len(seen) != 7*6+6 {
		t.Errorf("planned %d ports, want %d", len(seen), 7*6+6)
	}
}

func TestMakePlanBasePort(t *testing.T) {
	p, err := MakePlan(Options{BasePort: 21000})
	if err != nil {
		t.Fatal(err)
	}
	if p.Admin != "127.0.0.1:8080" || p.IngressHP != "127.0.0.1:8000" || p.Dashboard != "127.0.0.1:20001" || p.CA != "127.0.0.1:15012" {
		t.Errorf("defaults not kept: %+v", p)
	}
	if w := p.Workloads[0]; w.Inbound != 21000 || p.Workloads[1].Inbound != 21010 {
		t.Errorf("blocks not aligned to 10: %d, %d", w.Inbound, p.Workloads[1].Inbound)
	}
}

func TestIdentity(t *testing.T) {
	p, err := MakePlan(Options{BasePort: 21000})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		w      Workload
		ns, sa string
	}{
		{p.Workloads[0], "default", "bookinfo-productpage"},
		{p.Workloads[3], "default", "bookinfo-reviews"},
		{p.Ingress, "weft-system", "istio-ingressgateway-service-account"},
	} {
		if ns, sa := identity(tc.w); ns != tc.ns || sa != tc.sa {
			t.Errorf("%s: identity %s/%s, want %s/%s", tc.w.Name(), ns, sa, tc.ns, tc.sa)
		}
	}
}
