package kube

import (
	"context"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/analyze"
)

// RunStatusWriter keeps every Istio resource's status.validationMessages
// equal to what weft finds about it, like Istio's status: validation
// errors for resources the store ignores, and analyzer warnings (dangling
// hosts, missing subsets, ...) for the others. It recomputes after every
// change (debounced) until ctx ends. Run it on one replica (see
// pkg/kube/leader).
func (s *Store) RunStatusWriter(ctx context.Context, debounce time.Duration) {
	for {
		s.mu.RLock()
		ch := s.changed
		s.mu.RUnlock()
		s.writeStatuses(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		select { // let a burst of changes settle
		case <-ctx.Done():
			return
		case <-time.After(debounce):
		}
	}
}

// message is one entry of status.validationMessages (Istio's
// AnalysisMessageBase, plus the text).
type message struct {
	Type struct {
		Code string `json:"code"`
	} `json:"type"`
	Level       string `json:"level"`
	Description string `json:"description"`
}

// desiredMessages computes the messages per resource.
func (s *Store) desiredMessages() (map[config.Key][]message, map[config.Key]*unstructured.Unstructured) {
	s.mu.RLock()
	rs := make([]*config.Resource, 0, len(s.resources))
	for _, r := range s.resources {
		rs = append(rs, r)
	}
	objects := make(map[config.Key]*unstructured.Unstructured, len(s.objects))
	for k, u := range s.objects {
		objects[k] = u
	}
	want := map[config.Key][]message{}
	for k, errs := range s.invalid {
		for _, e := range errs {
			level := "ERROR"
			if e.Warning {
				level = "WARNING"
			}
			m := message{Level: level, Description: fieldMessage(e)}
			m.Type.Code = "WEFT0001"
			want[k] = append(want[k], m)
		}
	}
	s.mu.RUnlock()
	var aopts []analyze.Option
	if s.opts.Mesh != nil {
		aopts = append(aopts, analyze.WithMeshConfig(s.opts.Mesh))
	}
	for _, am := range analyze.Analyze(rs, aopts...) {
		if am.Severity < analyze.Warning {
			continue
		}
		m := message{Level: strings.ToUpper(am.Severity.String()), Description: am.Text}
		if am.Path != "" {
			m.Description = am.Path + ": " + am.Text
		}
		m.Type.Code = am.Code
		want[am.Resource] = append(want[am.Resource], m)
	}
	for _, msgs := range want {
		sort.SliceStable(msgs, func(i, j int) bool {
			if msgs[i].Type.Code != msgs[j].Type.Code {
				return msgs[i].Type.Code < msgs[j].Type.Code
			}
			return msgs[i].Description < msgs[j].Description
		})
	}
	return want, objects
}

// fieldMessage is a validation error without its source prefix (the
// object itself carries the status).
func fieldMessage(e *config.FieldError) string {
	if e.Path != "" {
		return e.Path + ": " + e.Msg
	}
	return e.Msg
}

func (s *Store) writeStatuses(ctx context.Context) {
	want, objects := s.desiredMessages()
	gwapi := map[config.Key]*unstructured.Unstructured{}
	for k, u := range objects {
		msgs := want[k]
		if u.GroupVersionKind().Group == config.GroupGatewayAPI {
			// The Gateway API's status has its own schema (conditions per
			// parent and listener): writeGatewayAPIStatuses.
			gwapi[k] = u
			continue
		}
		if sameMessages(u, msgs) {
			continue
		}
		gvr, ok := s.gvrs[k.Kind]
		if !ok {
			continue
		}
		c := u.DeepCopy()
		status, _ := c.Object["status"].(map[string]any)
		if status == nil {
			status = map[string]any{}
		}
		if len(msgs) == 0 {
			delete(status, "validationMessages")
		} else {
			var list []any
			b, _ := json.Marshal(msgs)
			_ = json.Unmarshal(b, &list)
			status["validationMessages"] = list
		}
		status["observedGeneration"] = c.GetGeneration()
		c.Object["status"] = status
		if _, err := s.dyn.Resource(gvr).Namespace(k.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{FieldManager: "weft"}); err != nil && ctx.Err() == nil {
			// A conflict means a newer version is on its way through the
			// informer, which triggers another round.
			s.log.Debug("status update", "resource", k.String(), "err", err)
		}
	}
	s.writeGatewayAPIStatuses(ctx, gwapi)
}

// sameMessages reports whether u's status already holds msgs.
func sameMessages(u *unstructured.Unstructured, msgs []message) bool {
	cur, _, _ := unstructured.NestedSlice(u.Object, "status", "validationMessages")
	if len(cur) == 0 && len(msgs) == 0 {
		return true
	}
	var want []any
	b, _ := json.Marshal(msgs)
	_ = json.Unmarshal(b, &want)
	return reflect.DeepEqual(cur, want)
}
