// Package webhook is Weft's Kubernetes admission webhook server: /inject
// mutates pods on CREATE (sidecar injection, pkg/kube/inject) and /validate
// checks Istio resources with pkg/config/validation, rejecting them with the
// same messages `weft validate` prints.
package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/pkg/config"
	"github.com/weftmesh/weft/pkg/config/validation"
	"github.com/weftmesh/weft/pkg/kube/inject"
)

// Paths served by the webhook.
const (
	PathInject   = "/inject"
	PathValidate = "/validate"
	PathHealth   = "/healthz"
)

// maxBody bounds an AdmissionReview request body.
const maxBody = 8 << 20

// Options configure a Server.
type Options struct {
	Inject inject.Config
	Logger *slog.Logger
}

// Server answers AdmissionReview requests.
type Server struct {
	cfg inject.Config
	log *slog.Logger
}

// New returns a Server; the injection config must be valid.
func New(o Options) (*Server, error) {
	if err := o.Inject.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: o.Inject, log: log}, nil
}

// Handler serves /inject, /validate and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+PathInject, s.review(s.inject))
	mux.Handle("POST "+PathValidate, s.review(s.validate))
	mux.HandleFunc("GET "+PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// Serve serves HTTPS on ln with cert until ctx is cancelled, then shuts
// down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener, cert tls.Certificate) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("webhook: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook: serve: %w", err)
	}
	return nil
}

type handlerFunc func(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// review decodes an AdmissionReview, calls h and encodes the answer.
func (s *Server) review(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			http.Error(w, "content type must be application/json", http.StatusUnsupportedMediaType)
			return
		}
		var rev admissionv1.AdmissionReview
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&rev); err != nil {
			http.Error(w, "decode AdmissionReview: "+err.Error(), http.StatusBadRequest)
			return
		}
		if rev.Request == nil {
			http.Error(w, "AdmissionReview has no request", http.StatusBadRequest)
			return
		}
		resp := h(r.Context(), rev.Request)
		resp.UID = rev.Request.UID
		out := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Response: resp,
		}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(out); err != nil {
			s.log.Warn("write admission response", "err", err)
		}
	})
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg, Reason: metav1.StatusReasonInvalid,
	}}
}

// patchOp is one RFC 6902 operation.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

func (s *Server) inject(_ context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, "weft injector: decode pod: "+err.Error())
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	// The webhook configuration's namespace and object selectors have
	// already applied the namespace policy.
	out, injected, err := inject.Inject(&pod, nil, s.cfg)
	if err != nil {
		return deny(http.StatusBadRequest, "weft injector: "+err.Error())
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	if !injected {
		_, why := inject.Decide(&pod, nil, s.cfg)
		s.log.Debug("pod not injected", "pod", req.Namespace+"/"+name, "reason", why)
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	// "add" replaces an existing member, so each op works whether or not
	// the field was set before.
	ops := []patchOp{
		{Op: "add", Path: "/spec/initContainers", Value: out.Spec.InitContainers},
		{Op: "add", Path: "/spec/volumes", Value: out.Spec.Volumes},
		{Op: "add", Path: "/metadata/labels", Value: out.Labels},
		{Op: "add", Path: "/metadata/annotations", Value: out.Annotations},
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(http.StatusInternalServerError, "weft injector: encode patch: "+err.Error())
	}
	s.log.Info("injected sidecar", "pod", req.Namespace+"/"+name)
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: patch, PatchType: &pt}
}

func (s *Server) validate(_ context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	if sc, ok := config.SchemaFor(req.Kind.Group, req.Kind.Kind); !ok || sc.Group != req.Kind.Group || sc.Group == config.GroupGatewayAPI {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	var r config.Resource
	if err := json.Unmarshal(req.Object.Raw, &r); err != nil {
		return deny(http.StatusBadRequest, decodeMessage(err))
	}
	if r.Meta.Namespace == "" {
		r.Meta.Namespace = req.Namespace
	}
	problems := validation.Validate(&r)
	resp := &admissionv1.AdmissionResponse{Allowed: true}
	for _, w := range problems.Warnings() {
		resp.Warnings = append(resp.Warnings, w.Error())
	}
	if errs := problems.Errors(); len(errs) > 0 {
		s.log.Info("rejected resource", "kind", r.Kind, "name", r.Meta.Namespace+"/"+r.Meta.Name, "errors", len(errs))
		d := deny(http.StatusBadRequest, errs.Error())
		d.Warnings = resp.Warnings
		return d
	}
	return resp
}

// decodeMessage renders a decode failure; field errors keep their paths.
func decodeMessage(err error) string {
	if l, ok := config.AsErrorList(err); ok {
		return l.Error()
	}
	return err.Error()
}
