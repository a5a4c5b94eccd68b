package model

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestParseNode(t *testing.T) {
	const sidecarID = "sidecar~10.0.0.1~reviews-v1.bookinfo~bookinfo.svc.cluster.local"
	tests := []struct {
		name    string
		id      string
		md      map[string]any
		agent   string
		want    *Proxy
		wantErr string
	}{
		{
			name: "full sidecar metadata",
			id:   sidecarID,
			md: map[string]any{
				"NAMESPACE": "bookinfo", "WORKLOAD_NAME": "reviews-v1-abc", "SERVICE_ACCOUNT": "reviews",
				"INSTANCE_IPS": "10.0.0.1, 10.0.0.2", "INBOUND_ADDRESS": "127.0.0.1:15006", "APP_PORTS": "9080",
				"SERVICES": "reviews:9080/HTTP,reviews-admin:9090", "LABELS": map[string]any{"app": "reviews", "version": "v1"},
				"METRICS_ADDRESS": "127.0.0.1:15090", "SOME_BOOL": true,
			},
			agent: "weft",
			want: &Proxy{
				ID: sidecarID, Type: Sidecar, IP: "10.0.0.1", Namespace: "bookinfo", Workload: "reviews-v1-abc",
				Labels: map[string]string{"app": "reviews", "version": "v1"}, ServiceAccount: "reviews",
				DNSDomain: "bookinfo.svc.cluster.local", InboundAddress: "127.0.0.1:15006",
				Services: []string{"reviews:9080/HTTP", "reviews-admin:9090"}, InstanceIPs: []string{"10.0.0.1", "10.0.0.2"},
				AppPorts: []uint32{9080},
			},
		},
		{
			name:  "grpc client with sidecar id is proxyless",
			id:    "sidecar~127.0.0.1~client.default~default.svc.cluster.local",
			agent: "gRPC Go",
			want: &Proxy{ID: "sidecar~127.0.0.1~client.default~default.svc.cluster.local", Type: Proxyless, IP: "127.0.0.1",
				Namespace: "default", Workload: "client", Labels: map[string]string{}, ServiceAccount: "default",
				DNSDomain: "default.svc.cluster.local"},
		},
		{
			name: "no metadata keeps node id facts",
			id:   "router~10.1.1.1~gw.istio-system~istio-system.svc.cluster.local",
			want: &Proxy{ID: "router~10.1.1.1~gw.istio-system~istio-system.svc.cluster.local", Type: Router, IP: "10.1.1.1",
				Namespace: "istio-system", Workload: "gw", Labels: map[string]string{}, ServiceAccount: "default",
				DNSDomain: "istio-system.svc.cluster.local"},
		},
		{name: "bad node id", id: "a~b", wantErr: "want TYPE~IP~POD.NAMESPACE~DOMAIN"},
		{name: "bad type", id: "gateway~1.1.1.1~a.b~b.svc", wantErr: `unknown proxy type "gateway"`},
		{name: "labels not a struct", id: sidecarID, md: map[string]any{"LABELS": "app=x"}, wantErr: "LABELS: want a struct"},
		{name: "label not a string", id: sidecarID, md: map[string]any{"LABELS": map[string]any{"a": 1.0}}, wantErr: "LABELS[a]: want a string"},
		{name: "bad app port", id: sidecarID, md: map[string]any{"APP_PORTS": "9080,http"}, wantErr: `"http" is not a port number`},
		{name: "bad instance ip", id: sidecarID, md: map[string]any{"INSTANCE_IPS": "10.0.0"}, wantErr: `"10.0.0" is not an IP address`},
		{name: "bad inbound address", id: sidecarID, md: map[string]any{"INBOUND_ADDRESS": "127.0.0.1"}, wantErr: "want host:port"},
		{name: "bad service", id: sidecarID, md: map[string]any{"SERVICES": "reviews"}, wantErr: `"reviews": want NAME:PORT`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var md *structpb.Struct
			if tc.md != nil {
				var err error
				if md, err = structpb.NewStruct(tc.md); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ParseNode(tc.id, md, tc.agent)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Proxy{}, "Metadata")); diff != "" {
				t.Errorf("proxy (-want +got):\n%s", diff)
			}
			if tc.md != nil && got.Metadata["NAMESPACE"] != tc.md["NAMESPACE"] {
				t.Errorf("Metadata[NAMESPACE] = %q", got.Metadata["NAMESPACE"])
			}
		})
	}
}
