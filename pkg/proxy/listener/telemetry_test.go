package listener

import (
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestAccessLogPolicy(t *testing.T) {
	cel := func(expr string) *accesslogv3.AccessLogFilter {
		a, _ := anypb.New(&celv3.ExpressionFilter{Expression: expr})
		return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
			Name: "envoy.access_loggers.extension_filters.cel", ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: a}}}}
	}
	cases := []struct {
		name    string
		logs    []*accesslogv3.AccessLog
		logged  []int // statuses that must be logged
		skipped []int
		err     string
	}{
		{name: "no access_log: proxy default", logged: []int{200, 503}},
		{name: "no filter", logs: []*accesslogv3.AccessLog{{Name: "f"}}, logged: []int{200, 404}},
		{name: "errors only", logs: []*accesslogv3.AccessLog{{Filter: cel("response.code >= 400")}}, logged: []int{400, 503}, skipped: []int{200, 302}},
		{name: "not 200", logs: []*accesslogv3.AccessLog{{Filter: cel(" response.code!=200 ")}}, logged: []int{201, 500}, skipped: []int{200}},
		{name: "disabled", logs: []*accesslogv3.AccessLog{{Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{
			RuntimeFilter: &accesslogv3.RuntimeFilter{PercentSampled: &typev3.FractionalPercent{}}}}}}, skipped: []int{200, 500}},
		{name: "status_code_filter", logs: []*accesslogv3.AccessLog{{Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE,
				Value: &corev3.RuntimeUInt32{DefaultValue: 500}}}}}}}, logged: []int{503}, skipped: []int{404}},
		{name: "unsupported CEL", logs: []*accesslogv3.AccessLog{{Filter: cel("request.headers['x'] == 'y'")}}, err: "only `response.code OP NUMBER`"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := accessLogPolicy(&hcmv3.HttpConnectionManager{AccessLog: tc.logs})
			if tc.err != "" {
				if err == nil || !contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.logged {
				if !p.Allows(s) {
					t.Errorf("status %d not logged", s)
				}
			}
			for _, s := range tc.skipped {
				if p.Allows(s) {
					t.Errorf("status %d logged", s)
				}
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
