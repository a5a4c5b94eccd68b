package kube

import (
	"context"
	"encoding/json"
	"reflect"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/pkg/config"
	gw "github.com/weftmesh/weft/pkg/config/gatewayapi"
)

// wireCondition is a metav1.Condition as JSON.
type wireCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	ObservedGeneration int64  `json:"observedGeneration"`
	LastTransitionTime string `json:"lastTransitionTime"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
}

type wireRouteParent struct {
	ParentRef      gw.ParentReference `json:"parentRef"`
	ControllerName string             `json:"controllerName"`
	Conditions     []wireCondition    `json:"conditions"`
}

type wireListener struct {
	Name           string              `json:"name"`
	SupportedKinds []gw.RouteGroupKind `json:"supportedKinds"`
	AttachedRoutes int32               `json:"attachedRoutes"`
	Conditions     []wireCondition     `json:"conditions"`
}

// writeGatewayAPIStatuses writes the Gateway API status of the Gateways
// weft serves (conditions, listeners with attachedRoutes) and weft's
// entries in routes' (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute) status.parents (Accepted, ResolvedRefs), keeping
// other controllers' entries. Conditions keep their lastTransitionTime
// while their status does not change.
func (s *Store) writeGatewayAPIStatuses(ctx context.Context, objects map[config.Key]*unstructured.Unstructured) {
	s.mu.RLock()
	var gws []gw.NamedGateway
	var routes []gw.NamedRoute
	var grants []gw.NamedGrant
	for k, r := range s.resources {
		switch k.Kind {
		case config.KindReferenceGrant:
			g := gw.NamedGrant{Namespace: k.Namespace}
			if gw.Spec(r.Spec, &g.Spec) == nil {
				grants = append(grants, g)
			}
		case config.KindKubernetesGateway:
			g := gw.NamedGateway{Namespace: k.Namespace, Name: k.Name}
			if gw.Spec(r.Spec, &g.Spec) == nil {
				gws = append(gws, g)
			}
		case config.KindHTTPRoute:
			rt := gw.NamedRoute{Namespace: k.Namespace, Name: k.Name}
			if gw.Spec(r.Spec, &rt.Spec) == nil {
				routes = append(routes, rt)
			}
		case config.KindGRPCRoute:
			var g gw.GRPCRouteSpec
			if gw.Spec(r.Spec, &g) == nil {
				routes = append(routes, gw.NamedRoute{Namespace: k.Namespace, Name: k.Name, Kind: config.KindGRPCRoute, Spec: g.HTTP()})
			}
		case config.KindTLSRoute:
			var t gw.TLSRouteSpec
			if gw.Spec(r.Spec, &t) == nil {
				routes = append(routes, gw.NamedRoute{Namespace: k.Namespace, Name: k.Name, Kind: config.KindTLSRoute, Spec: t.HTTP()})
			}
		case config.KindTCPRoute:
			var t gw.TCPRouteSpec
			if gw.Spec(r.Spec, &t) == nil {
				routes = append(routes, gw.NamedRoute{Namespace: k.Namespace, Name: k.Name, Kind: config.KindTCPRoute, Spec: t.HTTP()})
			}
		}
	}
	s.mu.RUnlock()
	// GatewayClasses are cluster-scoped and not watched: classes istio and
	// weft are served.
	gwStatus, rtStatus := gw.Statuses(nil, gws, routes, grants)
	now := time.Now().UTC().Format(time.RFC3339)
	for k, u := range objects {
		c := u.DeepCopy()
		status, _ := c.Object["status"].(map[string]any)
		if status == nil {
			status = map[string]any{}
		}
		gen := c.GetGeneration()
		switch k.Kind {
		case config.KindKubernetesGateway:
			st, ok := gwStatus[k.Namespace+"/"+k.Name]
			if !ok {
				continue // another controller's Gateway
			}
			cur, _ := status["conditions"].([]any)
			status["conditions"] = toAny(conditions(st.Conditions, cur, gen, now))
			curL, _ := status["listeners"].([]any)
			var ls []wireListener
			for _, l := range st.Listeners {
				var prev []any
				for _, x := range curL {
					if m, _ := x.(map[string]any); m != nil && m["name"] == l.Name {
						prev, _ = m["conditions"].([]any)
					}
				}
				g := gw.Group
				kinds := []gw.RouteGroupKind{}
				for _, kind := range l.SupportedKinds {
					kinds = append(kinds, gw.RouteGroupKind{Group: &g, Kind: kind})
				}
				ls = append(ls, wireListener{Name: l.Name, SupportedKinds: kinds,
					AttachedRoutes: l.AttachedRoutes, Conditions: conditions(l.Conditions, prev, gen, now)})
			}
			status["listeners"] = toAny(ls)
		case config.KindHTTPRoute, config.KindGRPCRoute, config.KindTLSRoute, config.KindTCPRoute:
			want := rtStatus[k.Kind+"/"+k.Namespace+"/"+k.Name]
			cur, _ := status["parents"].([]any)
			var parents []any
			for _, x := range cur {
				if m, _ := x.(map[string]any); m != nil && m["controllerName"] != gw.ControllerIstio && m["controllerName"] != gw.ControllerWeft {
					parents = append(parents, x) // another controller's entry
				}
			}
			for _, p := range want {
				var prev []any
				for _, x := range cur {
					if m, _ := x.(map[string]any); m != nil && m["controllerName"] == p.ControllerName && sameParentRef(m["parentRef"], p.ParentRef) {
						prev, _ = m["conditions"].([]any)
					}
				}
				parents = append(parents, toAny(wireRouteParent{ParentRef: p.ParentRef, ControllerName: p.ControllerName, Conditions: conditions(p.Conditions, prev, gen, now)}))
			}
			if parents == nil {
				parents = []any{}
			}
			if len(cur) == 0 && len(parents) == 0 {
				continue
			}
			status["parents"] = parents
		default:
			continue
		}
		// Compare as JSON values: the informer's integers are int64,
		// toAny's float64.
		if reflect.DeepEqual(toAny(u.Object["status"]), toAny(status)) {
			continue
		}
		c.Object["status"] = status
		gvr, ok := s.gvrs[k.Kind]
		if !ok {
			continue
		}
		if _, err := s.dyn.Resource(gvr).Namespace(k.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{FieldManager: "weft"}); err != nil && ctx.Err() == nil {
			s.log.Debug("gateway API status update", "resource", k.String(), "err", err)
		}
	}
}

// conditions renders want, keeping each condition's lastTransitionTime
// from prev while its status is unchanged.
func conditions(want []gw.Condition, prev []any, gen int64, now string) []wireCondition {
	out := make([]wireCondition, 0, len(want))
	for _, c := range want {
		t := now
		for _, x := range prev {
			if m, _ := x.(map[string]any); m != nil && m["type"] == c.Type && m["status"] == c.Status {
				if lt, ok := m["lastTransitionTime"].(string); ok {
					t = lt
				}
			}
		}
		out = append(out, wireCondition{Type: c.Type, Status: c.Status, ObservedGeneration: gen, LastTransitionTime: t, Reason: c.Reason, Message: c.Message})
	}
	return out
}

// sameParentRef compares a status parentRef (JSON) with one weft computed.
func sameParentRef(cur any, want gw.ParentReference) bool {
	return reflect.DeepEqual(toAny(cur), toAny(want))
}

// toAny converts v to its JSON value (maps, slices, strings, float64...)
// so it compares with what the informer holds.
func toAny(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil
	}
	return out
}
