package analyze

import (
	"strings"
	"testing"
)

func TestTunnelNotApplied(t *testing.T) {
	rs := decode(t, `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: proxy, namespace: egress}
spec:
  hosts: [forward-proxy.example.com]
  ports: [{number: 3128, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tunnel, namespace: egress}
spec:
  host: forward-proxy.example.com
  trafficPolicy:
    tunnel: {targetHost: top.example.com, targetPort: 443}
  subsets:
  - name: a
    trafficPolicy:
      tunnel: {targetHost: a.example.com, targetPort: 9000}
  - name: plain
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: egress}
spec:
  hosts: [external.example.com]
  http:
  - route:
    - destination: {host: forward-proxy.example.com, subset: a}
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: forward-proxy.example.com, subset: a}
  - route:
    - destination: {host: forward-proxy.example.com, subset: plain}
      weight: 50
    - destination: {host: forward-proxy.example.com, subset: a}
      weight: 50
`)
	var got []string
	for _, m := range Analyze(rs) {
		if m.Code == CodeTunnelNotApplied {
			got = append(got, m.String())
		}
	}
	want := []string{
		`in.yaml:28: Warning [WEFT0119] VirtualService egress/routes: spec.http[0].route[0].destination: DestinationRule egress/tunnel subset a has a tunnel to a.example.com:9000, but tunnels apply to tcp and tls routes only: this HTTP traffic goes to forward-proxy.example.com untunneled`,
		`in.yaml:36: Warning [WEFT0119] VirtualService egress/routes: spec.tcp[1].route[1].destination.subset: DestinationRule egress/tunnel subset a has a tunnel to a.example.com:9000, but with several weighted destinations only the first host's top-level tunnel applies (as in Istio)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
